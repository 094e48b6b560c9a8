"""docs/cluster.md's `ray job submit` command, verbatim but for its paths and addresses,
against a two-node Ray cluster on this machine (`ray start --head` + `ray start --address`)
writing to a local S3 (moto): the job must find the weights at models_dir, the bank on
the driver, and the S3 settings it was given in --runtime-env-json.

Slow (starts a cluster and a job): one test. The cluster lives in its own Ray temp
folder, so it never becomes this machine's /tmp/ray/ray_current_cluster."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

import test_pipeline_support as support
from synthface.shards.verify import verify_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_node_cluster():
    if not Path(RAY).exists():
        pytest.skip("the ray CLI is not installed next to this python")
    tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths are length-limited
    # `python` in the job's entrypoint is the one on PATH, as for a user with the env activated
    env = {"RAY_agent_register_timeout_ms": "180000", **os.environ, "RAY_TMPDIR": tmp,
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    # token authentication on, as Ray 2.60 turns it on wherever ~/.ray/auth_token exists
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex)
    gcs, dash = _free_port(), _free_port()
    try:
        head = _run([RAY, "start", "--head", f"--port={gcs}", "--num-cpus=1", "--num-gpus=0",
                     "--include-dashboard=true", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
                     f"--temp-dir={tmp}"], env)
        assert head.returncode == 0, head.stdout[-2000:] + head.stderr[-2000:]
        node = _run([RAY, "start", f"--address=127.0.0.1:{gcs}", "--num-cpus=1", "--num-gpus=0"], env)
        assert node.returncode == 0, node.stdout[-2000:] + node.stderr[-2000:]
        yield env, f"http://127.0.0.1:{dash}", f"127.0.0.1:{gcs}"
    finally:
        _run([RAY, "stop", "--force"], env, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


def test_readme_job_submit_runs_verbatim_on_a_two_node_cluster(two_node_cluster, tiny_models, tmp_path, s3_endpoint):
    env, dashboard, _ = two_node_cluster
    shared = tmp_path / "shared"  # what every node sees at the same path
    shutil.copytree(tiny_models, shared / "models")
    support.random_bank(shared / "bank.parquet", 4)
    config = support.tiny_config(Path("models"), Path("bank.parquet"), workers=2, cpus_per_worker=1)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    fsspec_s3 = os.environ["FSSPEC_S3"]  # set by s3_endpoint for this process only: the job must get it
    job_env = {k: v for k, v in env.items() if k != "FSSPEC_S3"}
    runtime_env = json.dumps({"env_vars": {"FSSPEC_S3": fsspec_s3}})
    cmd = [RAY, "job", "submit", "--address", dashboard, "--working-dir", ".", "--runtime-env-json", runtime_env,
           "--", "python", "-m", "synthface", "generate", "--config", str(tmp_path / "tiny.yaml"),
           "--set", f"models_dir={shared / 'models'}", "--bank", str(shared / "bank.parquet"),
           "--out", "s3://synthface-test/run1"]
    for _ in range(30):  # a fresh head's job agent takes a while to come up ("try again later")
        job = _run(cmd, job_env, timeout=900)
        if "No available agent to submit job" not in job.stderr:
            break
        time.sleep(10)
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
    assert "succeeded" in job.stdout
    report = verify_dataset("s3://synthface-test/run1")
    assert report.ok and report.shards == 2, report.problems


def test_joining_a_cluster_without_its_token_says_auth(two_node_cluster, tiny_models, tmp_path):
    env, _, address = two_node_cluster
    support.random_bank(tmp_path / "bank.parquet", 2)
    config = support.tiny_config(tiny_models, tmp_path / "bank.parquet")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    wrong = {**env, "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    run = _run([sys.executable, "-m", "synthface", "generate", "--config", str(tmp_path / "tiny.yaml"),
                "--out", str(tmp_path / "ds"), "--ray-address", address], wrong, timeout=300)
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert "token authentication" in run.stderr.splitlines()[-1] and "RAY_AUTH_TOKEN" in run.stderr
