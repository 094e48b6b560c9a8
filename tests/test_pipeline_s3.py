"""`generate` writing to an fsspec URL: a local S3 endpoint (moto's server, the
`s3_endpoint` fixture of conftest.py)."""

from __future__ import annotations

import json

import pytest

import test_pipeline_support as support
from pipelines.generate import generate
from synthface.factory_config import FactoryConfig
from synthface.shards.storage import Output
from synthface.shards.verify import verify_dataset

pytest.importorskip("moto")
pytest.importorskip("s3fs")


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
