"""`generate` writing to an fsspec URL: a local S3 endpoint (moto's server, the
`s3_endpoint` fixture of conftest.py)."""

from __future__ import annotations

import json

import pytest

import test_pipeline_support as support
from pipelines.generate import generate
from pipelines.config import FactoryConfig
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


def test_reading_recipes_of_docs_cluster_md(tmp_path, s3_endpoint):
    """docs/cluster.md's S3 read recipes, as written, on a dataset in a (local) bucket."""
    import fsspec
    import fsspec.config

    from test_shards_writer import make_dataset

    make_dataset(tmp_path / "ds", shards=2)
    fs = s3fs_client(s3_endpoint)
    fs.put(str(tmp_path / "ds") + "/", "synthface-test/run1/", recursive=True)
    # as in a fresh process started with FSSPEC_S3 set: fsspec reads it at import
    fsspec.config.set_conf_env(fsspec.config.conf)
    try:
        import webdataset as wds
        from webdataset.gopen import gopen_schemes

        gopen_schemes["s3"] = lambda url, mode="rb", bufsize=8192, **kw: fsspec.open(url, mode).open()
        fs = fsspec.filesystem("s3")
        urls = [f"s3://{p}" for p in sorted(fs.glob("synthface-test/run1/shard-*.tar"))]
        ds = wds.WebDataset(urls, shardshuffle=False).decode("rgb8").to_tuple("jpg", "cls")
        got = list(ds)
        assert len(got) == 12 and got[0][0].shape == (112, 112, 3)

        from datasets import load_dataset

        hf = load_dataset("webdataset", data_files={"train": "s3://synthface-test/run1/shard-*.tar"}, split="train",
                          storage_options={"endpoint_url": s3_endpoint})
        assert hf.num_rows == 12

        import pandas as pd
        import pyarrow.dataset as pads

        parquet = sorted(fs.glob("synthface-test/run1/shard-??????.parquet"))  # not shard-N.centres.parquet
        table = pads.dataset(parquet, filesystem=fs, format="parquet").to_table()
        df = table.to_pandas()
        assert len(df) == 12 and df["accepted"].all()
        assert len(pd.read_parquet(parquet, filesystem=fs)) == 12
    finally:
        fsspec.config.conf.pop("s3", None)
        gopen_schemes.pop("s3", None)


def s3fs_client(url):
    import s3fs

    return s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=url)
