"""Shared test fixtures.

`assets` points at ../shared/assets (real models, faces, .bin files). Tests
that need it skip with a clear reason when it is absent, as on a user's clone.
"""

from __future__ import annotations

import contextlib
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
    # On a loaded shared box the raylet gives up waiting for its agents (their port files)
    # and aborts; give them longer, and retry the start.
    os.environ.setdefault("RAY_agent_register_timeout_ms", "180000")
    for attempt in range(3):
        if ray.is_initialized():
            break
        try:
            ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, configure_logging=False, log_to_driver=False)
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_s3(bucket: str):
    """A local S3 (moto's server on 127.0.0.1, its own process) holding an empty ``bucket``,
    until the block ends. Yields its URL; any key and secret are accepted."""
    import time
    import urllib.request

    pytest.importorskip("moto")
    s3fs = pytest.importorskip("s3fs")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("moto server did not start")
        s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=url).mkdir(bucket)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_endpoint(monkeypatch):
    """A local S3 (moto) with the bucket ``synthface-test``, for this test only; FSSPEC_S3 is
    set so fsspec (and the pipeline's workers) reach it. Yields its URL."""
    import json

    with moto_s3("synthface-test") as url:
        # fsspec reads FSSPEC_S3 (JSON kwargs of s3fs); the pipeline forwards it to its workers
        monkeypatch.setenv(
            "FSSPEC_S3",
            json.dumps({"key": "testing", "secret": "testing", "endpoint_url": url,
                        "client_kwargs": {"region_name": "us-east-1"}}),
        )
        yield url
