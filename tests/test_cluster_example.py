"""The README's cluster example, run verbatim against a two-node Ray cluster on this machine
(`ray start` head + one more node, Ray token authentication on) writing to a local S3 (moto),
and the one-line error a client without the cluster's token gets.

The cluster is scripts/cluster/local_cluster.py's: its own ports, temp dir and HOME (the real
~/.ray/auth_token is never read or written), stopped process by process, never `ray stop`.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import test_pipeline_support as support
from conftest import REPO_ROOT, moto_s3

ray = pytest.importorskip("ray")  # no Ray, no cluster: skip the module
pytest.importorskip("moto")
s3fs = pytest.importorskip("s3fs")

_spec = importlib.util.spec_from_file_location("local_cluster", REPO_ROOT / "scripts" / "cluster" / "local_cluster.py")
local_cluster = sys.modules["local_cluster"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(local_cluster)

NUM_IDS = 4  # 4 shards of 1 identity: enough for both workers to write some
# what the README's placeholders become here; each must occur once in the command
PLACEHOLDERS = {
    "http://HEAD:8265": "{dashboard}",
    "https://s3.example.com": "{s3}",
    "configs/arc2face.yaml": "configs/demo.yaml",  # GPU-sized; the tiny models need the CPU demo sizes
    "/shared/models": "{models}",
    "/shared/bank.parquet": "{bank}",
}
# appended to the command: one identity per shard, so the 4 jobs spread over the 2 workers, and a
# short run (2 accepted images per identity)
CPU_OVERRIDES = "--set run.ids_per_shard=1 --set run.images_per_id=2 --set run.max_candidates_per_id=4"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def submit_example(doc: Path) -> str:
    """The `ray job submit ...` command of a doc's code block, its continuation lines joined."""
    lines = doc.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ray job submit "))
    parts = []
    for line in lines[start:]:
        parts.append(line.strip().removesuffix("\\").strip())
        if not line.rstrip().endswith("\\"):
            break
    return " ".join(parts)


def example_for(values: dict[str, str]) -> str:
    command = submit_example(REPO_ROOT / "README.md")
    for placeholder, value in PLACEHOLDERS.items():
        assert command.count(placeholder) == 1, f"README's example lost {placeholder!r}: update this test"
        command = command.replace(placeholder, value.format(**values))
    return f"{command} {CPU_OVERRIDES}"


def test_readme_and_cluster_doc_show_the_same_example():
    assert submit_example(REPO_ROOT / "README.md") == submit_example(REPO_ROOT / "docs" / "cluster.md")


@pytest.fixture(scope="module")
def cluster():
    """A head and one more node of 1 CPU each (so 2 workers of 1 CPU land on different nodes),
    token authentication on, and S3 credentials on the nodes ("instance roles")."""
    # short: Ray's unix sockets live under it
    root = Path(tempfile.mkdtemp(prefix="sfc", dir="/tmp"))
    try:
        for attempt in (1, 2):  # once more if a free port was taken before Ray bound it
            try:
                running = local_cluster.start_cluster(root / str(attempt), env=S3_KEYS, timeout_s=240)
                break
            except (RuntimeError, TimeoutError):
                if attempt == 2:
                    raise
        with running:  # stops its processes, however the tests end
            yield running
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture(scope="module")
def inputs(tiny_models, tmp_path_factory):
    bank = support.random_bank(tmp_path_factory.mktemp("cluster-bank") / "bank.parquet", NUM_IDS)
    return {"models": str(tiny_models), "bank": str(bank)}


def generate_cmd(inputs, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "synthface", "generate", "--config", "configs/demo.yaml",
            "--set", f"models_dir={inputs['models']}", "--bank", inputs["bank"], "--out", str(out), *extra]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_a_client_without_the_clusters_token_gets_one_line_saying_how_to_pass_it(cluster, inputs, tmp_path):
    """Three ways to get it wrong, run side by side: no token at all; the token but not
    RAY_AUTH_MODE=token (Ray then sends none); a wrong token, with the address in RAY_ADDRESS."""
    (tmp_path / "wrong").write_text("not-the-token")
    no_token = cluster.client_env(with_token=False)
    cases = {
        "no token": (no_token, ["--ray-address", cluster.gcs_address]),
        "no RAY_AUTH_MODE": ({**no_token, "RAY_AUTH_TOKEN_PATH": str(cluster.token_file)},
                             ["--ray-address", cluster.gcs_address]),
        "wrong token": ({**no_token, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "wrong"),
                         "RAY_ADDRESS": cluster.gcs_address}, []),
    }
    procs = {
        name: subprocess.Popen(generate_cmd(inputs, tmp_path / name, *extra), env=env, cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, (env, extra) in cases.items()
    }
    for name, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 2, (name, stderr[-3000:])
        assert "Traceback" not in stderr, (name, stderr[-3000:])
        [line] = error_lines(stderr)
        assert "token authentication" in line, (name, line)
        assert "RAY_AUTH_MODE=token" in line and "RAY_AUTH_TOKEN" in line and "docs/cluster.md" in line, (name, line)
        if name == "wrong token":
            assert line.startswith("error: RAY_ADDRESS=") and "not the cluster's token" in line, line
        else:
            assert line.startswith("error: --ray-address ") and "sent no token" in line, (name, line)


def test_the_readme_cluster_example_runs_verbatim_with_the_token(cluster, inputs):
    with moto_s3("bucket") as s3:
        command = example_for({"dashboard": cluster.dashboard_url, "s3": s3,
                               "models": shlex.quote(inputs["models"]), "bank": shlex.quote(inputs["bank"])})
        # the user's shell: the token as docs/cluster.md says; no S3 settings (they go in the job's env)
        submit = subprocess.run(["bash", "-c", command], env=cluster.client_env(), cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=480)
        assert submit.returncode == 0, (submit.stdout + submit.stderr)[-5000:]
        assert re.search(r"Job '\S+' succeeded", submit.stdout + submit.stderr), submit.stdout[-3000:]

        s3_env = {**cluster.client_env(), **S3_KEYS, "FSSPEC_S3": json.dumps({"endpoint_url": s3})}
        verify = subprocess.run([sys.executable, "-m", "synthface", "verify", "s3://bucket/run1"], env=s3_env,
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert verify.returncode == 0 and verify.stdout.startswith(f"ok: {NUM_IDS} shards"), verify.stderr[-3000:]

        fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=s3)
        writers = {json.loads(fs.cat(p))["pid"] for p in fs.glob("bucket/run1/shard-??????.json")}
    # The run's workers (Ray keeps dead actors and worker processes in its tables): one per node,
    # as 1 CPU per node and per worker forces; every shard was written by one of them. Which of
    # them write shards is a race by design (jobs start on the first worker ready; on this box the
    # second may still be loading when the first has done all 4 tiny jobs), so it is not asserted.
    workers = {a["pid"] for a in cluster.state("actors") if a.get("class_name") == "ShardWorker"}
    node_of = {w["pid"]: w["node_id"] for w in cluster.state("workers") if w["pid"] in workers}
    assert len(workers) == 2 and len(set(node_of.values())) == 2, (workers, node_of)
    assert writers and writers <= workers, (writers, workers)
