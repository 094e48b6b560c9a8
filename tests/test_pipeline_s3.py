"""`generate` writing to an fsspec URL: a local S3 endpoint (moto's server) on
127.0.0.1, started and stopped by the test."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import test_pipeline_support as support
from pipelines.generate import generate
from synthface.factory_config import FactoryConfig
from synthface.shards.storage import Output
from synthface.shards.verify import verify_dataset

pytest.importorskip("moto")
s3fs = pytest.importorskip("s3fs")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_endpoint(monkeypatch):
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
        # fsspec reads FSSPEC_S3 (JSON kwargs of s3fs); the pipeline forwards it to its workers
        monkeypatch.setenv(
            "FSSPEC_S3",
            json.dumps({"key": "testing", "secret": "testing", "endpoint_url": url,
                        "client_kwargs": {"region_name": "us-east-1"}}),
        )
        s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=url).mkdir("synthface-test")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_generate_to_s3_and_verify(ray_cluster, tiny_models, tmp_path, s3_endpoint):
    support.ship_by_value()
    bank = support.random_bank(tmp_path / "bank.parquet", 2)
    cfg = FactoryConfig.model_validate(support.tiny_config(tiny_models, bank, workers=1))
    url = "s3://synthface-test/runs/demo"
    result = generate(cfg, url, stages_factory=support.build_real_stages)
    assert result.ok and result.done == 1

    out = Output(url)
    names = set(out.list_names())
    assert {"shard-000000.tar", "shard-000000.parquet", "shard-000000.json", "dataset.json", "sizes.json",
            "wids-index.json", "README.md", "synthface-run.json"} <= names
    assert not any(".tmp-" in n for n in names)
    report = verify_dataset(url)
    assert report.ok, report.problems
    assert report.samples == json.loads(out.read_bytes("dataset.json"))["num_images"]
    # and a rerun against the bucket resumes instead of redoing
    assert generate(cfg, url, stages_factory=support.build_real_stages).skipped == 1
