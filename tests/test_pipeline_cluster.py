"""Which Ray a `generate` uses: local means a private local instance, whatever else runs on
the machine; an address the user gives is checked and its errors are one line."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

BAD_ADDRESS = """
from pipelines.generate import init_ray
from synthface.errors import ConfigError

try:
    init_ray("not an address")
except ConfigError as exc:
    print("bad address:", exc)
"""

SCRIPT = """
import ray
from pipelines.generate import init_ray

assert init_ray(None, num_cpus=1) is True
print("cpus:", ray.cluster_resources().get("CPU"))
print("gcs:", ray.get_runtime_context().gcs_address)
ray.shutdown()
"""


def test_a_plain_run_starts_its_own_ray_despite_a_stale_cluster_file():
    """A `ray start` cluster on this machine, or the /tmp/ray/ray_current_cluster file a dead
    one left, must neither be joined nor crash a run without --ray-address."""
    # a short folder: Ray's unix sockets live under it and their paths are length-limited
    tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    os.makedirs(f"{tmp}/ray")
    Path(f"{tmp}/ray/ray_current_cluster").write_text("127.0.0.1:6553\n")  # nobody listens there
    # (and a loaded box may need longer than Ray's default for its agents to start)
    env = {"RAY_agent_register_timeout_ms": "180000", **os.environ, "RAY_TMPDIR": tmp,
           "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cpus: 1.0" in proc.stdout
    assert "6553" not in proc.stdout.split("gcs:")[1]


def test_an_address_ray_cannot_parse_is_one_line():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", BAD_ADDRESS], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bad address: --ray-address not an address: Invalid address format" in proc.stdout
    assert "expected 'auto', HOST:PORT or ray://HOST:PORT" in proc.stdout
