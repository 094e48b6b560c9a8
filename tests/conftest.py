"""Shared test fixtures.

`assets` points at ../shared/assets (real models, faces, .bin files). Tests
that need it skip with a clear reason when it is absent, as on a user's clone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSETS_DIR = Path(os.environ.get("SYNTHFACE_ASSETS", REPO_ROOT.parent / "shared" / "assets"))


@pytest.fixture(scope="session")
def assets() -> Path:
    if not (ASSETS_DIR / "README.md").is_file():
        pytest.skip(f"shared test assets not found at {ASSETS_DIR} (set SYNTHFACE_ASSETS)")
    return ASSETS_DIR


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m synthface ARGS` as a user would; returns the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "synthface", *map(str, args)],
        cwd=cwd or REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole test session (2 CPUs, no dashboard); yields its address.

    Pipeline tests run workers on it; a test that launches a driver in a
    subprocess passes it ``--ray-address`` so no second cluster starts.
    """
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """A tiny random-weight model folder (all Arc2Face parts + face models), written once."""
    from synthface.models.tiny import init_tiny

    # with the optional control weights, so that the controls run through the same folder
    return init_tiny(tmp_path_factory.mktemp("tiny-models") / "models", with_controlnet=True, with_exp_adapter=True)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: thread start-up and contention cost more than the maths
    (much more on a loaded 2-core CI box). Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
