"""What makes a shard committed and an output owned, without models or Ray:
the run lock (local and S3), shard files checked against their stats, the
config hash in every shard, and resume not deciding by paths."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import sys
import time

import pytest

from test_shards_writer import make_dataset, write_shard
from synthface.errors import RunStateError
from synthface.shards.lock import LOCK_FILE, OutputLock
from pipelines.resume import check_or_start_run, run_config_hash, run_record
from synthface.shards.storage import Output
from synthface.shards.verify import verify_dataset
from synthface.shards.writer import committed_shards


# --------------------------------------------------------------------------- the run lock
def test_a_second_driver_on_the_same_output_is_refused_and_told_how_to_clear(tmp_path):
    out = Output(str(tmp_path / "ds"))
    with OutputLock(out):
        with pytest.raises(RunStateError) as err:
            OutputLock(out).acquire()
        message = str(err.value)
        assert "in use by another `synthface generate`" in message and f"pid {__import__('os').getpid()}" in message
        assert f"delete {tmp_path / 'ds' / LOCK_FILE}" in message
    # released at the end of the run
    assert not (tmp_path / "ds" / LOCK_FILE).exists()
    with OutputLock(out):
        pass


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(path, **fields) -> None:
    record = {"token": "x", "host": socket.gethostname(), "pid": 1, "pid_started": 0.0,
              "started": time.time(), "heartbeat": time.time(), "lease_s": 300.0, **fields}
    path.write_text(json.dumps(record))


def test_a_lock_left_by_a_killed_driver_is_taken_over(tmp_path, caplog):
    (tmp_path / "ds").mkdir()
    lock_file = tmp_path / "ds" / LOCK_FILE
    # same host, its process is gone
    _write_lock(lock_file, pid=_dead_pid())
    with caplog.at_level(logging.WARNING, "synthface.generate"), OutputLock(Output(str(tmp_path / "ds"))) as lock:
        assert json.loads(lock_file.read_text())["token"] == lock.token
    assert "taking over a stale lock" in caplog.text and "is gone" in caplog.text
    # another host whose heartbeat stopped longer than its lease ago
    _write_lock(lock_file, host="node-that-died", heartbeat=time.time() - 400)
    with OutputLock(Output(str(tmp_path / "ds"))):
        pass
    # another host, heartbeat fresh: it may be running, so refuse
    _write_lock(lock_file, host="busy-node", heartbeat=time.time() - 5)
    with pytest.raises(RunStateError, match="host busy-node"):
        OutputLock(Output(str(tmp_path / "ds"))).acquire()


def test_the_heartbeat_keeps_the_lock_fresh(tmp_path):
    lock_file = tmp_path / LOCK_FILE
    with OutputLock(Output(str(tmp_path)), heartbeat_s=0.05):
        first = json.loads(lock_file.read_text())["heartbeat"]
        for _ in range(100):
            time.sleep(0.05)
            if json.loads(lock_file.read_text())["heartbeat"] > first:
                break
        else:
            pytest.fail("the heartbeat never refreshed the lock")


def test_the_lock_is_exclusive_on_s3(s3_endpoint):
    url = "s3://synthface-test/locked"
    with OutputLock(Output(url)):
        with pytest.raises(RunStateError, match="in use by another"):
            OutputLock(Output(url)).acquire()
    assert not Output(url).exists(LOCK_FILE)
    # a stale lock from a driver on another machine (no heartbeat for longer than its lease)
    Output(url).write_json(LOCK_FILE, {"token": "old", "host": "gone-node", "pid": 1, "heartbeat": time.time() - 999,
                                       "lease_s": 300})
    with OutputLock(Output(url)) as lock:
        assert Output(url).read_json(LOCK_FILE)["token"] == lock.token


def test_generate_refuses_an_output_another_driver_holds(tmp_path):
    """Before any Ray or model work: the second `generate` on one OUT stops at the lock."""
    import test_pipeline_support as support
    from pipelines.generate import generate
    from pipelines.config import FactoryConfig

    bank = support.random_bank(tmp_path / "bank.parquet", 2)
    cfg = FactoryConfig.model_validate(support.tiny_config(tmp_path / "models", bank))
    out = tmp_path / "ds"
    with OutputLock(Output(str(out))):
        for restart in (False, True):
            with pytest.raises(RunStateError, match="in use by another"):
                generate(cfg, str(out), restart=restart)
    assert sorted(p.name for p in out.iterdir()) == []


# --------------------------------------------------------------------------- committed shards
def test_a_shard_whose_files_do_not_match_its_stats_is_not_committed(tmp_path):
    out = make_dataset(tmp_path, shards=4)
    stats = json.loads((tmp_path / "shard-000000.json").read_text())
    assert set(stats["files"]) == {"tar", "parquet"} and stats["files"]["tar"]["size"] > 0
    tar = (tmp_path / "shard-000001.tar").read_bytes()
    (tmp_path / "shard-000001.tar").write_bytes(tar[: len(tar) // 2])  # truncated
    (tmp_path / "shard-000002.parquet").unlink()  # missing
    damaged = bytearray((tmp_path / "shard-000003.tar").read_bytes())
    damaged[600] ^= 0xFF  # same size, other bytes
    (tmp_path / "shard-000003.tar").write_bytes(bytes(damaged))
    rejected: dict[int, str] = {}
    assert list(committed_shards(out, rejected=rejected)) == [0]
    assert "shard-000001.tar is" in rejected[1] and "but its stats say" in rejected[1]
    assert rejected[2] == "shard-000002.parquet is missing"
    assert "sha256" in rejected[3]
    problems = "\n".join(verify_dataset(str(tmp_path)).problems)
    for k in (1, 3):
        assert f"shard-00000{k}.tar: not committed" in problems
    assert "rerun the generate command to redo it" in problems


def test_resume_redoes_damaged_shards_and_says_so(tmp_path, caplog):
    from pipelines.generate import resumable_shards

    out = make_dataset(tmp_path, shards=3)
    (tmp_path / "shard-000001.tar").write_bytes(b"")
    with caplog.at_level(logging.WARNING, "synthface.generate"):
        kept = resumable_shards(out, "abc", 3)
    assert sorted(kept) == [0, 2]
    assert "shard-000001 is not committed (shard-000001.tar is 0 bytes but its stats say" in caplog.text
    assert "redoing it" in caplog.text
    assert not (tmp_path / "shard-000001.json").exists()  # no marker left to trust


def test_every_shard_records_the_config_hash_and_a_foreign_one_is_redone_and_flagged(tmp_path):
    out = make_dataset(tmp_path, shards=2)
    stats = json.loads((tmp_path / "shard-000001.json").read_text())
    stats["config_hash"] = "another-config"
    (tmp_path / "shard-000001.json").write_text(json.dumps(stats))
    rejected: dict[int, str] = {}
    assert list(committed_shards(out, config_hash="abc", rejected=rejected)) == [0]
    assert "made with another config" in rejected[1]
    dataset = json.loads((tmp_path / "dataset.json").read_text())
    assert dataset["config_hash"] == "abc"
    problems = verify_dataset(str(tmp_path)).problems
    assert any("shard-000001.tar: not committed: it was made with another config" in p for p in problems)


def test_the_worker_records_the_run_config_hash_in_the_shard_stats():
    from pipelines.worker import job_settings
    from pipelines.config import FactoryConfig

    cfg = FactoryConfig()
    assert job_settings(cfg).config_hash == run_config_hash(cfg.model_dump(mode="json"))


# --------------------------------------------------------------------------- paths do not decide
def test_moving_the_bank_and_the_model_folder_still_resumes(tmp_path):
    import test_pipeline_support as support

    (tmp_path / "a").mkdir()
    bank = support.random_bank(tmp_path / "a" / "bank.parquet", 4)
    models = tmp_path / "a" / "models"
    models.mkdir()
    (models / "synthface-models.json").write_text(json.dumps({"origin": "download", "parts": {"unet": "rev1"}}))
    cfg = {"seed": 1, "models_dir": str(models), "run": {"bank": str(bank), "images_per_id": 2}}
    out = Output(str(tmp_path / "ds"))
    assert check_or_start_run(out, run_record(cfg, str(bank), 4), restart=False) is False
    write_shard(out, 0, range(0, 2))
    # the same files, elsewhere (another mount, or a `ray job submit` working dir)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    moved = {"seed": 1, "models_dir": str(tmp_path / "b" / "models"),
             "run": {"bank": str(tmp_path / "b" / "bank.parquet"), "images_per_id": 2}}
    record = run_record(moved, moved["run"]["bank"], 4)
    assert record["config_hash"] == run_config_hash(cfg)
    assert check_or_start_run(out, record, restart=False) is True
    # other content at the new place is still refused, and the message says --restart deletes
    support.random_bank(tmp_path / "b" / "bank.parquet", 4, seed=9)
    with pytest.raises(RunStateError) as err:
        check_or_start_run(out, run_record(moved, moved["run"]["bank"], 4), restart=False)
    message = str(err.value)
    assert "different identity bank" in message and "1 committed shard" in message
    assert "--restart to DELETE those shards" in message
    assert (tmp_path / "ds" / "shard-000000.tar").exists()


def test_a_control_pool_changed_in_place_is_refused_and_old_records_still_resume(tmp_path):
    import test_pipeline_support as support

    bank = support.random_bank(tmp_path / "bank.parquet", 4)
    cfg = {"seed": 1, "run": {"bank": str(bank), "images_per_id": 2}}
    out = Output(str(tmp_path / "ds"))
    pools = {"pose_pool_sha256": "a" * 64}
    assert check_or_start_run(out, run_record(cfg, str(bank), 4, inputs=pools), restart=False) is False
    write_shard(out, 0, range(0, 2))
    assert check_or_start_run(out, run_record(cfg, str(bank), 4, inputs=pools), restart=False) is True
    with pytest.raises(RunStateError, match=r"different pose pool \(generation.pose.pool\) content and 1 committed shard"):
        check_or_start_run(out, run_record(cfg, str(bank), 4, inputs={"pose_pool_sha256": "b" * 64}), restart=False)
    # a later version hashing another input still resumes this run (the old record lacks it)
    more = {**pools, "identity_images_sha256": "c" * 64}
    assert check_or_start_run(out, run_record(cfg, str(bank), 4, inputs=more), restart=False) is True
    # a run record written before the pools were hashed has no "inputs": it resumes as before
    record = json.loads((tmp_path / "ds" / "synthface-run.json").read_text())
    del record["inputs"]
    (tmp_path / "ds" / "synthface-run.json").write_text(json.dumps(record))
    assert check_or_start_run(out, run_record(cfg, str(bank), 4, inputs=pools), restart=False) is True


def test_resume_by_size_only_skips_reading_the_shards_but_still_catches_truncation(tmp_path, monkeypatch):
    """run.resume_check: size lists the shards instead of downloading them (a 1M-identity
    dataset on S3 is hundreds of GB); a same-size change then goes unseen, a truncation not."""
    from pipelines.config import EXECUTION_ONLY_KEYS, FactoryConfig
    from pipelines.generate import resumable_shards

    out = make_dataset(tmp_path, shards=3)
    (tmp_path / "shard-000001.tar").write_bytes(b"")
    damaged = bytearray((tmp_path / "shard-000002.tar").read_bytes())
    damaged[600] ^= 0xFF
    (tmp_path / "shard-000002.tar").write_bytes(bytes(damaged))
    reads = []
    real = Output.read_bytes
    monkeypatch.setattr(Output, "read_bytes", lambda self, name: reads.append(name) or real(self, name))
    assert sorted(resumable_shards(out, "abc", 3, checksums=False)) == [0, 2]
    assert not [name for name in reads if name.endswith((".tar", ".parquet"))]
    assert sorted(resumable_shards(out, "abc", 3)) == [0]  # the default reads and hashes them
    assert FactoryConfig().run.resume_check == "sha256" and "resume_check" in EXECUTION_ONLY_KEYS
    with pytest.raises(ValueError, match="resume_check"):
        FactoryConfig.model_validate({"run": {"resume_check": "md5"}})
