"""`synthface generate` end to end on the tiny random models and a local Ray:
the output, resume, a worker killed mid-job, a job that keeps failing, and the
readers ML code uses (webdataset, Hugging Face datasets, wids)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import test_pipeline_support as support
from pipelines.generate import ensure_complete, generate
from synthface.errors import RunStateError
from synthface.factory_config import FactoryConfig
from synthface.shards.verify import verify_dataset

NUM_IDS = 6  # 3 shards of 2 identities, 2 candidates each


def config(tiny_models: Path, bank: Path, **run) -> FactoryConfig:
    return FactoryConfig.model_validate(support.tiny_config(tiny_models, bank, **run))


def keys_of(out: Path) -> list[str]:
    keys = []
    for tar in sorted(out.glob("shard-*.tar")):
        with tarfile.open(tar) as t:
            keys += [m.name.split(".")[0] for m in t.getmembers() if m.name.endswith(".jpg")]
    return keys


def labels_of(out: Path) -> dict[str, int]:
    labels = {}
    for tar in sorted(out.glob("shard-*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                if m.name.endswith(".cls"):
                    labels[m.name.split(".")[0]] = int(t.extractfile(m).read())
    return labels


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> Path:
    return support.random_bank(tmp_path_factory.mktemp("bank") / "bank.parquet", NUM_IDS)


@pytest.fixture(scope="module")
def baseline(ray_cluster, tiny_models, bank, tmp_path_factory):
    """An uninterrupted run: the reference for every fault test."""
    support.ship_by_value()
    out = tmp_path_factory.mktemp("baseline") / "ds"
    result = generate(config(tiny_models, bank), str(out), stages_factory=support.build_real_stages)
    return out, result


def test_generate_writes_a_verified_dataset(baseline):
    out, result = baseline
    assert result.ok and (result.num_shards, result.done, result.skipped) == (3, 3, 0)
    report = verify_dataset(str(out))
    assert report.ok, report.problems
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["num_classes"] == NUM_IDS and dataset["complete"]
    assert dataset["num_candidates"] == NUM_IDS * 2
    assert dataset["num_images"] == report.samples == len(keys_of(out)) > 0
    assert dataset["models"]["origin"] == "tiny-random" and dataset["models"]["files"]
    assert sorted(json.loads((out / "sizes.json").read_text())) == [f"shard-00000{k}.tar" for k in range(3)]
    # every candidate is in a parquet, accepted or with a reason
    table = pq.read_table(out / "shard-000001.parquet").to_pylist()
    assert [(r["id"], r["index"]) for r in table] == [(2, 0), (2, 1), (3, 0), (3, 1)]
    assert all(r["accepted"] == (r["reason"] is None) for r in table)
    # labels are the identity ids of the keys; metadata says how each image was made
    assert all(label == int(key[:7]) for key, label in labels_of(out).items())
    with tarfile.open(out / "shard-000000.tar") as t:
        meta = json.loads(t.extractfile(next(m for m in t.getmembers() if m.name.endswith(".json"))).read())
    assert meta["generator"]["steps"] == 2 and len(meta["landmarks"]) == 5 and "seed" in meta
    card = (out / "README.md").read_text()
    assert "random weights" in card and (out / "card" / "identities.png").is_file()


def test_rerun_resumes_and_refuses_a_different_config(baseline, tiny_models, bank):
    out, first = baseline
    tars = {p.name: p.read_bytes() for p in out.glob("shard-*.tar")}
    # execution-only settings may change between a run and its resume
    again = generate(config(tiny_models, bank, workers=1), str(out), stages_factory=support.build_real_stages)
    assert (again.skipped, again.done) == (3, 0)
    assert {p.name: p.read_bytes() for p in out.glob("shard-*.tar")} == tars
    with pytest.raises(RunStateError, match="different config.*--restart"):
        generate(config(tiny_models, bank, images_per_id=3), str(out), stages_factory=support.build_real_stages)
    assert {p.name: p.read_bytes() for p in out.glob("shard-*.tar")} == tars


def test_worker_killed_mid_job_is_retried_without_loss_or_duplicates(baseline, tiny_models, bank, tmp_path):
    base_out, _ = baseline
    flag = tmp_path / "kill-next-worker"
    flag.touch()
    out = tmp_path / "ds"
    result = generate(config(tiny_models, bank), str(out), stages_factory=support.KillOnce(str(flag)))
    assert not flag.exists(), "no worker ran the job that should have died"
    # the dead worker's running job, and the one queued behind it, went to other workers
    assert result.ok and result.workers_replaced == 1 and 1 <= result.retries <= 2
    stats = [json.loads(p.read_text()) for p in sorted(out.glob("shard-*.json"))]
    assert sorted(s["attempt"] for s in stats)[-1] == 1
    assert verify_dataset(str(out)).ok
    assert keys_of(out) == keys_of(base_out)
    assert labels_of(out) == labels_of(base_out)


def test_failing_job_is_reported_while_the_rest_completes_then_resumes(baseline, tiny_models, bank, tmp_path):
    base_out, _ = baseline
    out = tmp_path / "ds"
    cfg = config(tiny_models, bank, max_retries=1)
    result = generate(cfg, str(out), stages_factory=support.FailShards(bad_ids=(2,)))
    assert set(result.failed) == {1} and "injected failure for identity 2" in result.failed[1]
    assert result.done == 2 and result.retries == 1
    with pytest.raises(RunStateError, match="1 of 3 shards failed"):
        ensure_complete(result)
    dataset = json.loads((out / "dataset.json").read_text())
    assert not dataset["complete"] and dataset["missing_shards"] == ["shard-000001"]
    assert not verify_dataset(str(out)).ok
    # the same command again redoes only the failed shard
    again = generate(cfg, str(out), stages_factory=support.build_real_stages)
    assert again.ok and (again.skipped, again.done) == (2, 1)
    assert verify_dataset(str(out)).ok
    assert keys_of(out) == keys_of(base_out)


def test_readers_load_the_output(baseline):
    out, _ = baseline
    expected = sorted(keys_of(out))
    shards = [str(p) for p in sorted(out.glob("shard-*.tar"))]

    import webdataset as wds

    ds = wds.WebDataset(shards, shardshuffle=False).decode("rgb8").to_tuple("__key__", "jpg", "cls")
    got = [(key, img.shape, label) for key, img, label in ds]
    assert sorted(k for k, _, _ in got) == expected
    assert {shape for _, shape, _ in got} == {(112, 112, 3)}
    assert all(label == int(key[:7]) for key, _, label in got)

    import wids

    ds = wids.ShardListDataset(str(out / "wids-index.json"))
    assert len(ds) == len(expected)
    sample = ds[len(ds) - 1]
    assert sample[".jpg"].size == (112, 112) and int(sample[".cls"]) == int(sample["__key__"][:7])

    datasets = pytest.importorskip("datasets")
    hf = datasets.load_dataset("webdataset", data_files={"train": shards}, split="train")
    assert hf.num_rows == len(expected)
    row = hf[0]
    assert row["jpg"].size == (112, 112) and row["cls"] == int(row["__key__"][:7])
