"""The one-way layers contract (pyproject.toml [tool.importlinter]) holds, and it catches an upward import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("synthface", "pipelines", "eval", "bench")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.fail(f"{exe} is missing: install the dev extra (pip install -e '.[dev]'), which brings import-linter")
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(exe), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _copy_tree(dest: Path) -> None:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")


def test_layers_contract_is_kept():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "edge"),
    [
        ("synthface/faces/images.py", "import pipelines.generate", "synthface.faces.images -> pipelines.generate"),
        ("pipelines/planning.py", "import bench", "pipelines.planning -> bench"),
        ("synthface/errors.py", "import synthface.shards.storage", "synthface.errors -> synthface.shards.storage"),
    ],
)
def test_planted_upward_import_breaks_the_contract(tmp_path, module, planted, edge):
    _copy_tree(tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{planted}  # planted by the test\n", encoding="utf-8")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert edge in result.stdout, result.stdout
