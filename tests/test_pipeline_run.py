"""`synthface generate` end to end on the tiny random models and a local Ray:
the output, resume, a worker killed mid-job, a job that keeps failing, and the
readers ML code uses (webdataset, Hugging Face datasets, wids)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import test_pipeline_support as support
from pipelines.generate import ensure_complete, generate
from synthface.errors import ConfigError, RunStateError
from pipelines.config import FactoryConfig
from synthface.shards.verify import verify_dataset

NUM_IDS = 16  # 8 shards of 2 identities, 2 candidates each
NUM_SHARDS = 8


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
    assert result.ok and (result.num_shards, result.done, result.skipped) == (NUM_SHARDS, NUM_SHARDS, 0)
    report = verify_dataset(str(out))
    assert report.ok, report.problems
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["num_classes"] == NUM_IDS and dataset["complete"]
    assert dataset["num_candidates"] == NUM_IDS * 2
    assert dataset["num_images"] == report.samples == len(keys_of(out)) > 0
    assert dataset["models"]["origin"] == "tiny-random" and dataset["models"]["files"]
    # the hashes the run checked at start (size + mtime), as recorded by init-tiny
    recorded = json.loads((Path(dataset["models"]["dir"]) / "synthface-models.json").read_text())["files"]
    assert dataset["models"]["verified"] == "size+mtime"
    assert dataset["models"]["files"] == {rel: e["sha256"] for rel, e in recorded.items()}
    assert f"{len(recorded)} model files, checked against synthface-models.json (size+mtime)" in (out / "README.md").read_text()
    assert sorted(json.loads((out / "sizes.json").read_text())) == [f"shard-{k:06d}.tar" for k in range(NUM_SHARDS)]
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
    assert (again.skipped, again.done) == (NUM_SHARDS, 0)
    assert {p.name: p.read_bytes() for p in out.glob("shard-*.tar")} == tars
    with pytest.raises(RunStateError, match="different config.*--restart"):
        generate(config(tiny_models, bank, images_per_id=3), str(out), stages_factory=support.build_real_stages)
    assert {p.name: p.read_bytes() for p in out.glob("shard-*.tar")} == tars


def test_mixed_protocol_in_one_run(ray_cluster, tiny_models, bank, tmp_path):
    """run.groups: 3 identities x 3 images then 2 x 1, topped up in rounds; jobs stay inside a group."""
    support.ship_by_value()
    groups = [{"num_ids": 3, "images_per_id": 3}, {"num_ids": 2, "images_per_id": 1}]
    cfg = config(tiny_models, bank, groups=groups, max_candidates_per_id=None, oversample=1.0, short_classes="drop")
    out = tmp_path / "ds"
    result = generate(cfg, str(out), stages_factory=support.build_real_stages)
    assert result.ok and result.num_shards == 3  # ids 0-1, 2 (end of the first group), 3-4
    report = verify_dataset(str(out))  # also checks every class has exactly its group's size
    assert report.ok, report.problems
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["num_classes"] == 5
    assert [(s["ids"], s["images_per_id"]) for s in dataset["shards"]] == [([0, 2], 3), ([2, 3], 3), ([3, 5], 1)]
    counts: dict[int, int] = {}
    for key in keys_of(out):
        counts[int(key[:7])] = counts.get(int(key[:7]), 0) + 1
    assert counts and all(n == (3 if i < 3 else 1) for i, n in counts.items())
    assert dataset["candidates_per_image"] == dataset["num_candidates"] / dataset["num_images"]
    assert "| images per identity (class size: accepted images) | 3 x 3 + 2 x 1 |" in (out / "README.md").read_text()


def test_asking_for_gpus_the_cluster_lacks_is_a_config_error(ray_cluster, tiny_models, bank, tmp_path):
    with pytest.raises(ConfigError, match="'run.gpus_per_worker' is 1.0 but the Ray cluster has 0 GPUs"):
        generate(config(tiny_models, bank, gpus_per_worker=1), str(tmp_path / "ds"))
    assert not list((tmp_path / "ds").glob("shard-*"))


def test_worker_dying_while_loading_is_one_clear_error(ray_cluster, tiny_models, bank, tmp_path):
    from pipelines.dispatch import WorkerStartError

    support.ship_by_value()
    with pytest.raises(WorkerStartError, match="worker process died while loading the models"):
        generate(config(tiny_models, bank), str(tmp_path / "ds"), stages_factory=support.DieOnLoad())
    assert not list((tmp_path / "ds").glob("shard-*"))


def test_worker_killed_mid_job_is_retried_without_loss_or_duplicates(baseline, tiny_models, bank, tmp_path):
    base_out, _ = baseline
    flag = tmp_path / "kill-next-worker"
    flag.touch()
    out = tmp_path / "ds"
    result = generate(config(tiny_models, bank), str(out), stages_factory=support.KillOnce(str(flag), str(out)))
    assert not flag.exists(), "no worker ran the job that should have died"
    # the dead worker's running job, and the one queued behind it, went to other workers
    assert result.ok and result.workers_replaced == 1 and 1 <= result.retries <= 2
    stats = [json.loads(p.read_text()) for p in sorted(out.glob("shard-*.json"))]
    assert sorted(s["attempt"] for s in stats)[-1] == 1
    report = verify_dataset(str(out))  # also: the dead worker's half-written temp file is gone
    assert report.ok, report.problems
    assert keys_of(out) == keys_of(base_out)
    assert labels_of(out) == labels_of(base_out)


def test_failing_job_is_reported_while_the_rest_completes_then_resumes(baseline, tiny_models, bank, tmp_path):
    base_out, _ = baseline
    out = tmp_path / "ds"
    cfg = config(tiny_models, bank, max_retries=1)
    result = generate(cfg, str(out), stages_factory=support.FailShards(bad_ids=(2,)))
    assert set(result.failed) == {1} and "injected failure for identity 2" in result.failed[1]
    assert result.done == NUM_SHARDS - 1 and result.retries == 1
    with pytest.raises(RunStateError, match=f"1 of {NUM_SHARDS} shards failed"):
        ensure_complete(result)
    dataset = json.loads((out / "dataset.json").read_text())
    assert not dataset["complete"] and dataset["missing_shards"] == ["shard-000001"]
    assert not verify_dataset(str(out)).ok
    # the same command again redoes only the failed shard
    again = generate(cfg, str(out), stages_factory=support.build_real_stages)
    assert again.ok and (again.skipped, again.done) == (NUM_SHARDS - 1, 1)
    assert verify_dataset(str(out)).ok
    assert keys_of(out) == keys_of(base_out)


def test_resume_redoes_a_shard_whose_files_do_not_match_its_stats(baseline, tiny_models, bank, tmp_path):
    """A truncated tar or a lost parquet behind a commit marker is redone, not kept."""
    import shutil

    base_out, _ = baseline
    out = tmp_path / "ds"
    shutil.copytree(base_out, out)
    tar = (out / "shard-000003.tar").read_bytes()
    (out / "shard-000003.tar").write_bytes(tar[:1000])
    (out / "shard-000005.parquet").unlink()
    again = generate(config(tiny_models, bank), str(out), stages_factory=support.build_real_stages)
    assert again.ok and (again.skipped, again.done) == (NUM_SHARDS - 2, 2)
    assert (out / "shard-000003.tar").read_bytes() == tar
    report = verify_dataset(str(out))
    assert report.ok, report.problems
    assert keys_of(out) == keys_of(base_out)


@pytest.mark.timeout(300)
def test_more_workers_than_the_cluster_places_do_not_block_the_run(baseline, tiny_models, bank, tmp_path, caplog):
    """3 workers of 1 CPU on a 2-CPU cluster: a warning, and jobs run on the two that fit
    (the old driver waited for all three before any job: forever)."""
    import logging

    base_out, _ = baseline
    out = tmp_path / "ds"
    with caplog.at_level(logging.WARNING, "synthface.generate"):
        result = generate(config(tiny_models, bank, workers=3, cpus_per_worker=1), str(out),
                          stages_factory=support.build_real_stages)
    assert result.ok and result.done == NUM_SHARDS
    assert "only 2 of 3 workers fit" in caplog.text
    assert keys_of(out) == keys_of(base_out)


def test_a_hung_job_times_out_and_is_retried_on_another_worker(baseline, tiny_models, bank, tmp_path):
    base_out, _ = baseline
    flag = tmp_path / "hang-next-job"
    flag.touch()
    out = tmp_path / "ds"
    # generous: on a loaded CI box a healthy tiny job must not count as hung
    result = generate(config(tiny_models, bank, job_timeout_s=45), str(out), stages_factory=support.HangOnce(str(flag)))
    assert not flag.exists(), "no job hung: nothing was tested"
    assert result.ok and result.timeouts >= 1 and result.workers_replaced == result.retries == result.timeouts
    assert verify_dataset(str(out)).ok
    assert keys_of(out) == keys_of(base_out)


def test_a_full_output_disk_fails_the_run_once_with_one_message(ray_cluster, tiny_models, bank, tmp_path, monkeypatch):
    """ENOSPC is not retried per shard, the jobs not yet started are not run, and a manifest
    that cannot be written either does not replace the summary."""
    import errno

    from synthface.shards.storage import Output

    support.ship_by_value()
    real = Output._write

    def full_for_manifest(self, target, data):
        if not Path(target).name.startswith("synthface-"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, target, data)

    monkeypatch.setattr(Output, "_write", full_for_manifest)
    result = generate(config(tiny_models, bank, workers=1), str(tmp_path / "ds"),
                      stages_factory=support.NoSpaceForShards())
    assert result.retries == 0 and len(result.failed) == NUM_SHARDS
    with pytest.raises(RunStateError) as err:
        ensure_complete(result)
    message = str(err.value)
    assert message.startswith(f"{NUM_SHARDS} of {NUM_SHARDS} shards failed: no space left on the output")
    assert message.count("no space left") == 1 and "\n" not in message


def test_readers_load_the_output(baseline):
    out, _ = baseline
    expected = sorted(keys_of(out))
    shards = [str(p) for p in sorted(out.glob("shard-*.tar"))]

    import webdataset as wds

    # the forms docs/dataset.md shows: brace-expanded shard names, a glob, the wids index
    braces = str(out / f"shard-{{000000..{len(shards) - 1:06d}}}.tar")
    ds = wds.WebDataset(braces, shardshuffle=False).decode("rgb8").to_tuple("__key__", "jpg", "cls")
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
    hf = datasets.load_dataset("webdataset", data_files={"train": str(out / "shard-*.tar")}, split="train")
    assert hf.num_rows == len(expected)
    row = hf[0]
    assert row["jpg"].size == (112, 112) and row["cls"] == int(row["__key__"][:7])


def write_config(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


def test_driver_killed_mid_run_then_rerun_loses_and_duplicates_nothing(
    baseline, ray_cluster, tiny_models, bank, tmp_path
):
    """`synthface generate` in a subprocess, SIGKILLed after its first shard commits; the same
    command again completes the run with exactly the keys of an uninterrupted run."""
    import signal
    import subprocess
    import sys
    import time

    base_out, _ = baseline
    cfg_file = write_config(tmp_path / "run.yaml", support.tiny_config(tiny_models, bank))
    out = tmp_path / "ds"
    # join the session's Ray (one worker, so shards commit one by one)
    cmd = [sys.executable, "-m", "synthface", "generate", "--config", str(cfg_file), "--out", str(out),
           "--ray-address", ray_cluster, "--set", "run.workers=1"]
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (out / "shard-000000.json").exists():
        assert driver.poll() is None, driver.stdout.read()
        assert time.monotonic() < deadline, "no shard committed in time"
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    driver.stdout.close()
    committed = len(list(out.glob("shard-*.json")))
    assert 1 <= committed < NUM_SHARDS, "the run finished before the kill: nothing was tested"
    assert not (out / "dataset.json").exists()

    time.sleep(2)  # Ray reaps the dead driver's worker
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{committed} shards resumed" in rerun.stdout
    report = verify_dataset(str(out))
    assert report.ok, report.problems
    assert keys_of(out) == keys_of(base_out)
    assert labels_of(out) == labels_of(base_out)


def test_cli_embedded_ray_generate_verify_card_and_user_errors(tiny_models, tmp_path, cli):
    """The user's path: embedded Ray (no address), then verify and card; bad input exits 2 with one line."""
    bank = support.random_bank(tmp_path / "bank.parquet", 2, seed=5)
    cfg_file = write_config(tmp_path / "run.yaml", support.tiny_config(tiny_models, bank))
    out = tmp_path / "ds"
    result = cli("generate", "--config", cfg_file, "--out", out, "--set", "run.cpus_per_worker=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 generated" in result.stdout and "progress" not in result.stdout
    assert "finished shards=1/1" in result.stderr  # the plain log line for cluster logs
    verified = cli("verify", out)
    assert verified.returncode == 0 and verified.stdout.startswith("ok: 1 shards"), verified.stderr
    (out / "README.md").unlink()
    assert cli("card", out).returncode == 0 and (out / "README.md").is_file()

    bad = cli("generate", "--config", cfg_file, "--out", out, "--set", "run.workers=0")
    assert bad.returncode == 2 and "'run.workers'" in bad.stderr and "Traceback" not in bad.stderr
    other = cli("generate", "--config", cfg_file, "--out", out, "--set", "run.images_per_id=1")
    assert other.returncode == 2 and "--restart" in other.stderr and "Traceback" not in other.stderr
    missing = cli("generate", "--config", cfg_file, "--out", tmp_path / "x", "--bank", tmp_path / "none.parquet")
    assert missing.returncode == 2 and "none.parquet" in missing.stderr and "Traceback" not in missing.stderr
    import socket

    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nobody = cli("generate", "--config", cfg_file, "--out", tmp_path / "y", "--ray-address", f"127.0.0.1:{port}")
    assert nobody.returncode == 2 and "no Ray cluster answers" in nobody.stderr and "Traceback" not in nobody.stderr


def test_generate_finalises_duplicates_across_shards(ray_cluster, tiny_models, bank, tmp_path):
    """run.inter_class 'dataset': generate ends by finalising. The tiny recognizer is random, so
    its class centres all look alike at a low tau_inter and most classes are duplicates of
    earlier ones in other shards; what is left verifies (no two kept classes within tau_inter)."""
    support.ship_by_value()
    cfg = FactoryConfig.model_validate(
        {**support.tiny_config(tiny_models, bank, inter_class="dataset"),
         "filter": {"use_target": False, "tau_intra": 0.5, "min_images": 1, "det_score_min": 0.0, "tau_inter": 0.8}}
    )
    out = tmp_path / "ds"
    result = generate(cfg, str(out), stages_factory=support.build_real_stages)
    assert result.ok and result.finalise is not None
    dropped = result.dataset["finalise"]["dropped"]
    assert result.dataset["finalise"]["applied"] and len(dropped) == len(result.finalise.new) > 0
    assert not {int(i) for i in dropped} & set(labels_of(out).values())
    report = verify_dataset(str(out))
    assert report.ok, report.problems
    # a resume decides nothing new and rewrites no shard
    tars = {p.name: p.read_bytes() for p in out.glob("shard-*")}
    again = generate(cfg, str(out), stages_factory=support.build_real_stages)
    assert again.finalise.new == {} and {p.name: p.read_bytes() for p in out.glob("shard-*")} == tars
