"""Finalising: duplicate identities planted in different shards are found and removed, only
the shards holding them are rewritten, the result verifies and loads in webdataset, wids and
Hugging Face datasets; a rerun changes nothing; a kill at any write, then a rerun, gives the
same bytes as an uninterrupted run. The decision rule is checked against the shard job's
brute-force rule (IdentityFilter.inter_class_matches)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dataset_stub import build_dataset
from pipelines.finalise import finalise
from synthface.errors import RunStateError
from synthface.filtering import FilterConfig, IdentityFilter
from synthface.filtering.duplicates import close_pairs, find_duplicates
from synthface.shards.rewrite import drop_classes
from synthface.shards.storage import Output
from synthface.shards.verify import verify_dataset

DIM = 32
NUM_IDS = 12  # 4 shards of 3 identities
# planted: 7 (shard 2) is 1 (shard 0); 10 (shard 3) is 4 (shard 1); 11 (shard 3) is 7, so also 1
SAME_AS = {7: 1, 10: 4, 11: 7}


def planted_centres() -> np.ndarray:
    centres = np.eye(DIM, dtype=np.float32)[:NUM_IDS].copy()
    for later, earlier in SAME_AS.items():
        centres[later] = centres[earlier]
    return centres


def files_of(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def labels_in_tars(out: Path) -> set[int]:
    labels = set()
    for tar in out.glob("shard-*.tar"):
        with tarfile.open(tar) as t:
            labels |= {int(t.extractfile(m).read()) for m in t.getmembers() if m.name.endswith(".cls")}
    return labels


@pytest.fixture(scope="module")
def unfinalised(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "raw"
    build_dataset(out, planted_centres())
    return out


@pytest.fixture(scope="module")
def finalised(unfinalised, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "final"
    shutil.copytree(unfinalised, out)
    result = finalise(str(out))
    return out, result


def test_planted_duplicates_in_other_shards_are_found_and_removed(unfinalised, finalised):
    out, result = finalised
    assert labels_in_tars(unfinalised) == set(range(NUM_IDS))  # the shard jobs could not see them
    assert not verify_dataset(str(unfinalised)).ok  # not finalised yet: verify says so
    assert {i: d["duplicate_of"] for i, d in result.new.items()} == {7: 1, 10: 4, 11: 1}
    assert {d["reason"] for d in result.new.values()} == {"inter_class_duplicate"}
    assert all(d["similarity"] > 0.99 for d in result.new.values())
    assert labels_in_tars(out) == set(range(NUM_IDS)) - set(SAME_AS)
    # only the shards that held a dropped class were rewritten
    assert result.shards_rewritten == ["shard-000002", "shard-000003"]
    before, after = files_of(unfinalised), files_of(out)
    for ext in ("tar", "parquet", "json", "centres.parquet"):
        for k in (0, 1):
            assert before[f"shard-{k:06d}.{ext}"] == after[f"shard-{k:06d}.{ext}"]
    # the candidates stay in the parquet, rejected with the reason
    rows = pq.read_table(out / "shard-000003.parquet").to_pylist()
    assert {(r["id"], r["accepted"], r["reason"], r["class_kept"]) for r in rows if r["id"] in (10, 11)} == {
        (10, False, "inter_class_duplicate", False), (11, False, "inter_class_duplicate", False)}
    stats = json.loads((out / "shard-000003.json").read_text())
    assert stats["labels"] == [9] and stats["num_samples"] == 3 and stats["class_reasons"] == {"inter_class_duplicate": 2}
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["finalise"]["applied"] and dataset["finalise"]["num_dropped"] == 3
    assert dataset["finalise"]["dropped_by_reason"] == {"inter_class_duplicate": 3}
    assert dataset["finalise"]["search"] == {"method": "exact"}  # a few classes: every pair compared
    assert dataset["num_images"] == 9 * 3 and dataset["class_reasons"] == {"inter_class_duplicate": 3}
    assert json.loads((out / "sizes.json").read_text())["shard-000003.tar"] == 3
    report = verify_dataset(str(out))
    assert report.ok, report.problems
    assert report.classes == 9


def test_rerun_changes_nothing(finalised):
    out, _ = finalised
    before = files_of(out)
    again = finalise(str(out))
    assert again.new == {} and again.shards_rewritten == []
    assert files_of(out) == before


def test_kill_at_any_write_then_rerun_gives_the_same_bytes(unfinalised, finalised, tmp_path, monkeypatch):
    final_files = files_of(finalised[0])
    real_write = Output.write_bytes
    writes = 0

    class Killed(Exception):
        pass

    kill_at = 1
    while True:
        out = tmp_path / f"kill{kill_at}"
        shutil.copytree(unfinalised, out)
        writes = 0

        def write_then_die(self, name, data):
            nonlocal writes
            writes += 1
            if writes == kill_at:
                raise Killed(name)
            real_write(self, name, data)

        monkeypatch.setattr(Output, "write_bytes", write_then_die)
        try:
            finalise(str(out))
            finished = True
        except Killed:
            finished = False
        monkeypatch.setattr(Output, "write_bytes", real_write)
        if finished:
            break
        finalise(str(out))
        assert files_of(out) == final_files, f"killed at write {kill_at}"
        kill_at += 1
    assert kill_at > 8  # plan, 2 x (tar, parquet, stats), plan, manifest files: every one was a kill point


def test_readers_load_the_finalised_dataset(finalised):
    out, _ = finalised
    expected = sorted(f"{i:07d}_{k:03d}" for i in set(range(NUM_IDS)) - set(SAME_AS) for k in range(3))

    import webdataset as wds

    ds = wds.WebDataset(str(out / "shard-{000000..000003}.tar"), shardshuffle=False).decode("rgb8").to_tuple(
        "__key__", "jpg", "cls")
    got = [(key, label) for key, _, label in ds]
    assert sorted(k for k, _ in got) == expected and all(label == int(k[:7]) for k, label in got)

    import wids

    ds = wids.ShardListDataset(str(out / "wids-index.json"))
    assert sorted(ds[i]["__key__"] for i in range(len(ds))) == expected

    datasets = pytest.importorskip("datasets")
    hf = datasets.load_dataset("webdataset", data_files={"train": str(out / "shard-*.tar")}, split="train",
                               cache_dir=str(out.parent / "hf-cache"))
    assert sorted(hf["__key__"]) == expected


def test_verify_catches_a_dropped_class_back_in_a_shard(unfinalised, finalised, tmp_path):
    out = tmp_path / "broken"
    shutil.copytree(finalised[0], out)
    # an old copy of shard 2 (with class 7) comes back, its counts made consistent
    for ext in ("tar", "parquet", "json"):
        shutil.copy(unfinalised / f"shard-000002.{ext}", out / f"shard-000002.{ext}")
    dataset = json.loads((out / "dataset.json").read_text())
    problems = verify_dataset(str(out)).problems
    assert any("dropped classes still have samples (first: [7])" in p for p in problems), problems
    assert any("class 7 duplicates class 1" in p for p in problems), problems
    assert any("not those finalising checked" in p for p in problems), problems
    assert dataset["finalise"]["dropped"]["7"]["duplicate_of"] == 1


def test_finalise_refuses_an_incomplete_dataset(unfinalised, tmp_path):
    out = tmp_path / "incomplete"
    shutil.copytree(unfinalised, out)
    dataset = json.loads((out / "dataset.json").read_text())
    dataset.update(complete=False, missing_shards=["shard-000004"])
    (out / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(RunStateError, match="incomplete.*shard-000004.*rerun generate"):
        finalise(str(out))


def test_shard_mode_records_nothing_and_leaves_shards_alone(tmp_path):
    out = tmp_path / "shard-mode"
    build_dataset(out, planted_centres(), inter_class="shard")
    before = files_of(out)
    result = finalise(str(out))
    assert result.new == {} and result.shards_rewritten == []
    assert {n: b for n, b in files_of(out).items() if n.startswith("shard-")} == {
        n: b for n, b in before.items() if n.startswith("shard-")}
    assert verify_dataset(str(out)).ok


@pytest.mark.parametrize("n,dim,tau", [(300, 16, 0.6), (400, 6, 0.7), (500, 64, 0.25)])
def test_rule_matches_the_brute_force_shard_rule(n, dim, tau):
    """Same drops and partners as the shard job's all-pairs rule, also when a class has more
    close neighbours than the first search returns (low dimension: many close pairs)."""
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = rng.permutation(10 * n)[:n]
    got = {i: d.of for i, d in find_duplicates(ids, x, tau).items()}
    want = {i: of for i, (of, _) in IdentityFilter(FilterConfig(tau_inter=tau)).inter_class_matches(ids, x).items()}
    assert got == want and len(got) > 10
    a, b, _ = close_pairs(x, tau)
    sims = x @ x.T
    assert set(zip(a.tolist(), b.tolist())) == {(i, j) for i in range(n) for j in range(i + 1, n) if sims[i, j] >= tau}
    if tau >= 0.6:  # where the sign sketch pays (tau 0.25 would propose most pairs): the same drops
        assert {i: d.of for i, d in find_duplicates(ids, x, tau, search="sketch").items()} == want


def test_choose_search_sketches_only_large_cpu_searches_at_a_high_threshold():
    from synthface.filtering.duplicates import SKETCH_MIN_CLASSES, choose_search

    assert choose_search(SKETCH_MIN_CLASSES, 0.6, "cpu") == "exact"
    assert choose_search(SKETCH_MIN_CLASSES + 1, 0.6, "cpu") == "sketch"
    assert choose_search(10**6, 0.6, "cuda") == "exact"  # a GPU does the exact search in seconds
    assert choose_search(10**6, 0.3, "cpu") == "exact"  # unrelated centres would flood the sketch


def test_finalise_with_the_sketch_search_drops_the_same_classes_and_records_its_bound(
    unfinalised, finalised, tmp_path, monkeypatch
):
    import synthface.filtering.duplicates as dup

    monkeypatch.setattr(dup, "SKETCH_MIN_CLASSES", 0)
    out = tmp_path / "sketched"
    shutil.copytree(unfinalised, out)
    result = finalise(str(out))
    want = finalised[1].new
    assert {i: d["duplicate_of"] for i, d in result.new.items()} == {i: d["duplicate_of"] for i, d in want.items()}
    for i, d in result.new.items():  # fp32 re-scoring with another summation order: the last digit may differ
        assert d["similarity"] == pytest.approx(want[i]["similarity"], abs=1e-5)
    dataset = json.loads((out / "dataset.json").read_text())
    search = dataset["finalise"]["search"]
    assert search["method"] == "sketch" and search["miss_rate_bound"] == 1e-6 and 0 < search["radius"] < search["bits"]
    from synthface.shards.card import audit_section
    from synthface.shards.storage import Output

    assert "512-bit sign sketches" in audit_section(Output(str(out)), dataset)
    assert verify_dataset(str(out)).ok
    assert finalise(str(out)).new == {}  # idempotent


def test_drop_classes_is_idempotent(unfinalised):
    stem = unfinalised / "shard-000003"
    stats = json.loads(stem.with_suffix(".json").read_text())
    once = drop_classes(stem.with_suffix(".tar").read_bytes(), stem.with_suffix(".parquet").read_bytes(), stats,
                        {10: "x", 11: "x"})
    twice = drop_classes(once[0], once[1], once[2], {10: "x", 11: "x"})
    assert once == twice
    with tarfile.open(fileobj=io.BytesIO(once[0])) as t:
        assert {m.name[:7] for m in t.getmembers()} == {"0000009"}


def test_a_shard_redone_after_finalising_is_rewritten_again(unfinalised, finalised, tmp_path):
    """generate redoes a shard that was deleted (or failed its checks): it comes back with the
    dropped class, and the next finalise applies the plan to it again."""
    out = tmp_path / "redone"
    shutil.copytree(finalised[0], out)
    for ext in ("tar", "parquet", "json", "centres.parquet"):
        shutil.copy(unfinalised / f"shard-000002.{ext}", out / f"shard-000002.{ext}")
    result = finalise(str(out))
    assert result.shards_rewritten == ["shard-000002"] and result.new == {}
    assert files_of(out) == files_of(finalised[0])


def test_rerun_skips_the_search_when_no_class_changed(finalised, tmp_path, monkeypatch):
    out = tmp_path / "again"
    shutil.copytree(finalised[0], out)
    import pipelines.finalise as fin

    def no_search(*args, **kwargs):
        raise AssertionError("searched again")

    monkeypatch.setattr(fin, "find_duplicates", no_search)
    assert finalise(str(out)).new == {}
    assert files_of(out) == files_of(finalised[0])


def test_drop_classes_keeps_recorded_file_checksums_true(unfinalised):
    import hashlib

    stem = unfinalised / "shard-000003"
    tar, parquet = stem.with_suffix(".tar").read_bytes(), stem.with_suffix(".parquet").read_bytes()
    stats = json.loads(stem.with_suffix(".json").read_text())
    stats["files"] = {name: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                      for name, b in (("tar", tar), ("parquet", parquet))}
    new_tar, new_parquet, new_stats = drop_classes(tar, parquet, stats, {10: "x"})
    assert new_stats["files"]["tar"] == {"size": len(new_tar), "sha256": hashlib.sha256(new_tar).hexdigest()}
    assert new_stats["files"]["parquet"]["sha256"] == hashlib.sha256(new_parquet).hexdigest()


def test_cli_finalise_and_its_user_error(unfinalised, tmp_path, cli):
    out = tmp_path / "cli"
    shutil.copytree(unfinalised, out)
    proc = cli("finalise", out)
    assert proc.returncode == 0, proc.stderr
    assert "3 classes dropped now, 3 in all; 2 shards rewritten" in proc.stdout
    (out / "dataset.json").unlink()
    proc = cli("finalise", out)
    assert proc.returncode == 2 and "no dataset.json" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_finalise_is_refused_while_a_run_holds_the_output(unfinalised, tmp_path, cli):
    from synthface.shards.lock import LOCK_FILE, OutputLock

    out = tmp_path / "locked"
    shutil.copytree(unfinalised, out)
    before = files_of(out)
    with OutputLock(Output(str(out))):  # this live process is "a generate run" on OUT
        proc = cli("finalise", out)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert "synthface generate" in proc.stderr and str(LOCK_FILE) in proc.stderr
    assert {k: v for k, v in files_of(out).items() if k != LOCK_FILE} == before  # nothing rewritten
    proc = cli("finalise", out)
    assert proc.returncode == 0, proc.stderr
    assert not (out / LOCK_FILE).exists()  # released after the run


def test_flag_action_lists_the_duplicates_and_keeps_them(tmp_path):
    out = tmp_path / "flag"
    build_dataset(out, planted_centres(), inter_action="flag")
    before = {n: b for n, b in files_of(out).items() if n.startswith("shard-")}
    result = finalise(str(out))
    assert result.new == {} and result.shards_rewritten == []
    assert {n: b for n, b in files_of(out).items() if n.startswith("shard-")} == before
    fin = json.loads((out / "dataset.json").read_text())["finalise"]
    assert {int(i): d["duplicate_of"] for i, d in fin["flagged"].items()} == {7: 1, 10: 4, 11: 1}
    assert fin["num_dropped"] == 0 and labels_in_tars(out) == set(range(NUM_IDS))
    report = verify_dataset(str(out))
    assert report.ok, report.problems
