"""Exact class sizes: a shard job tops up short classes in rounds until each has
run.images_per_id accepted images (or its candidate cap is spent). Stand-in generator
and analyzer whose every outcome derives from the image seed alone (as the real
stages' do), the real filter and shard writer; no Ray, no models."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.planning import IdGroup, ShardJob, plan_jobs, run_groups
from pipelines.shard_job import JobSettings, Stages, next_round_size, run_shard_job
from synthface.errors import ConfigError
from synthface.faces.analyzer import FaceResult
from pipelines.config import FactoryConfig
from synthface.filtering import FilterConfig, IdentityFilter
from pipelines.config import first_round
from pipelines.resume import run_record
from synthface.shards.storage import Output
from synthface.shards.writer import THUMB_SIZE

DIM = 16
# identity -> share of its candidates in which no face is found; identities other than 0
# also get IMPOSTOR of candidates that show someone else (the filter's low_intra_sim)
FAIL = {0: 0.0, 1: 0.2, 2: 0.5, 3: 0.95}
IMPOSTOR = 0.15


class SeedGenerator:
    """An "image" carries its identity and its seed, so the analyzer can depend on nothing else."""

    def __init__(self, die_on_index: int | None = None, seeds_of=None):
        self.die_on_seeds = set(seeds_of or ())
        self.calls = 0

    def generate(self, id_vectors, seeds):
        self.calls += 1
        if self.die_on_seeds & set(seeds):
            os._exit(3)  # the worker process dies in the middle of a top-up round
        out = np.zeros((len(seeds), 4, 4, 3), np.uint8)
        for n, (v, seed) in enumerate(zip(id_vectors, seeds)):
            out[n, 0, 0, 0] = int(v[0])
            out[n, 1].reshape(-1)[:8] = np.frombuffer(int(seed).to_bytes(8, "little"), np.uint8)
        return out

    def describe(self):
        return {"model": "stand-in", "steps": 1}


class SeedAnalyzer:
    """Identity i embeds near axis i; whether a face is found and the noise come from the seed."""

    embedding_dim = DIM

    def analyze(self, images):
        out = []
        for img in images:
            identity = int(img[0, 0, 0])
            seed = int.from_bytes(img[1].reshape(-1)[:8].tobytes(), "little")
            rng = np.random.default_rng(seed)
            if rng.random() < FAIL[identity]:
                out.append(FaceResult(ok=False, reason="no_face"))
                continue
            emb = np.zeros(DIM, np.float32)
            emb[identity + 8 if identity and rng.random() < IMPOSTOR else identity] = 1.0
            emb += rng.normal(0, 0.12, DIM).astype(np.float32)
            out.append(FaceResult(ok=True, det_score=0.9, num_faces=1,
                                  aligned=np.full((112, 112, 3), 40 * identity + 20, np.uint8),
                                  bbox=np.zeros(4, np.float32), landmarks=np.zeros((5, 2), np.float32),
                                  embedding=emb / np.linalg.norm(emb)))
        return out


def settings(**kw) -> JobSettings:
    base = dict(run_seed=5, images_per_id=6, batch_size=4, jpeg_quality=90, write_full_image=False,
                inter_class="off", oversample=1.0, max_candidates_per_id=30, rejected_thumbnails=True)
    return JobSettings(**{**base, **kw})


def embeddings() -> np.ndarray:
    e = np.zeros((len(FAIL), DIM), np.float32)
    e[:, 0] = np.arange(len(FAIL))  # the generator reads the identity back from the vector
    return e


def stages(generator=None) -> Stages:
    return Stages(generator=generator or SeedGenerator(), analyzer=SeedAnalyzer(),
                  id_filter=IdentityFilter(FilterConfig(use_target=False, min_images=2, tau_intra=0.6)))


def run(out, job=ShardJob(index=0, id_start=0, id_stop=4), generator=None, **kw):
    stats = run_shard_job(job, embeddings(), stages(generator), settings(**kw), Output(str(out)))
    rows = pq.read_table(out / f"shard-{job.index:06d}.parquet").to_pylist()
    with tarfile.open(out / f"shard-{job.index:06d}.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    return stats, rows, members


def per_class(members) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for name in members:
        if name.endswith(".cls"):
            identity, index = name.split(".")[0].split("_")
            out.setdefault(int(identity), []).append(int(index))
    return {i: sorted(v) for i, v in out.items()}


def test_top_ups_reach_exactly_n_per_class(tmp_path):
    stats, rows, members = run(tmp_path)
    classes = per_class(members)
    # identities 0-2 reach 6 (1 and 2 through top-up rounds); 3 (95% no face) spends its cap and is dropped
    assert {i: len(v) for i, v in classes.items()} == {0: 6, 1: 6, 2: 6}
    assert stats["rounds"] > 1 and stats["topup_candidates"] > 0
    by_id: dict[int, list[dict]] = {}
    for r in rows:
        by_id.setdefault(r["id"], []).append(r)
    for i, own in by_id.items():
        assert [r["index"] for r in own] == list(range(len(own)))  # next indices, no holes
        accepted = [r["index"] for r in own if r["accepted"]]
        assert accepted == classes.get(i, [])
        # the class is its first 6 filter-accepted images; later ones that passed are surplus
        passed = [r["index"] for r in own if r["accepted"] or r["reason"] == "surplus"]
        assert accepted == passed[:6] if i != 3 else accepted == []
    assert len(by_id[0]) == 6 < len(by_id[2])  # the clean class needed no top-up (oversample 1)
    assert len(by_id[3]) == 30 and stats["class_reasons"] == {"class_too_small": 1}
    assert {r["reason"] for r in by_id[1]} == {None, "no_face", "low_intra_sim", "surplus"}
    assert stats["num_samples"] == 18 and stats["num_candidates"] == len(rows)
    assert stats["candidates_per_image"] == pytest.approx(len(rows) / 18)


def test_rejected_candidates_carry_a_thumbnail(tmp_path):
    _, rows, _ = run(tmp_path)
    for r in rows:
        if r["accepted"] or r["reason"] == "no_face":
            assert r["thumb"] is None
        else:
            assert Image.open(io.BytesIO(r["thumb"])).size == (THUMB_SIZE, THUMB_SIZE)
    assert any(r["thumb"] for r in rows)
    _, rows, _ = run(tmp_path / "off", rejected_thumbnails=False)
    assert not any(r["thumb"] for r in rows)


def test_short_classes_dropped_or_flagged(tmp_path):
    # a cap of 8 candidates leaves identity 1 with 4 accepted, short of 6 (2 and 3: fewer than min_images)
    stats, rows, members = run(tmp_path / "drop", max_candidates_per_id=8, short_classes="drop")
    assert set(per_class(members)) == {0}
    own = [r for r in rows if r["id"] == 1]
    assert len(own) == 8 and not any(r["class_kept"] for r in own)
    assert [r["reason"] for r in own].count("short_class") == 4
    assert stats["class_reasons"] == {"class_too_small": 2, "short_class": 1}

    stats, rows, members = run(tmp_path / "flag", max_candidates_per_id=8, short_classes="flag")
    classes = per_class(members)
    assert {i: len(v) for i, v in classes.items()} == {0: 6, 1: 4}
    meta = json.loads(members[f"0000001_{classes[1][0]:03d}.json"])
    assert meta["class_flag"] == "short_class"
    assert "class_flag" not in json.loads(members["0000000_000.json"])
    assert {r["class_reason"] for r in rows if r["id"] == 1} == {"short_class"}
    assert all(r["class_kept"] for r in rows if r["id"] == 1)
    assert stats["class_flags"] == {"short_class": 1} and stats["class_reasons"] == {"class_too_small": 2}
    from synthface.shards.card import class_stats, read_candidates

    outcomes = class_stats(read_candidates(Output(str(tmp_path / "flag")), {"shards": [{"name": "shard-000000.tar"}]}))
    assert list(outcomes["outcome"]) == ["", "flagged: short_class", "dropped: class_too_small", "dropped: class_too_small"]


def test_a_class_does_not_depend_on_its_job_or_batches(tmp_path):
    """Identity 2 alone in its job, batched differently, with analysis overlapped, gets the
    same rounds and rows (the identities around it in the job, and their rounds, differ)."""
    _, rows_all, _ = run(tmp_path / "all", batch_size=3)
    _, rows_one, members_one = run(tmp_path / "one", job=ShardJob(index=0, id_start=2, id_stop=3), batch_size=5,
                                   overlap=True)  # each round's batches through run.overlap's thread
    assert [r for r in rows_all if r["id"] == 2] == rows_one
    assert len(per_class(members_one)[2]) == 6


def _killed_run(out: str, seeds: list[int]) -> None:
    run_shard_job(ShardJob(index=0, id_start=0, id_stop=4), embeddings(),
                  stages(SeedGenerator(seeds_of=seeds)), settings(), Output(out))


def test_a_job_killed_mid_top_up_reruns_to_the_same_bytes(tmp_path):
    from synthface.seeds import image_seed

    clean = tmp_path / "clean"
    stats, rows, _ = run(clean)
    # die on identity 2's first top-up candidate (the first round gives indices 0..5)
    assert max(r["index"] for r in rows if r["id"] == 2) >= 6
    killed = tmp_path / "killed"
    proc = multiprocessing.get_context("fork").Process(target=_killed_run, args=(str(killed), [image_seed(5, 2, 6)]))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 3
    assert not (killed / "shard-000000.json").exists()  # nothing committed
    run(killed)  # the rerun
    for ext in ("tar", "parquet"):
        assert (killed / f"shard-000000.{ext}").read_bytes() == (clean / f"shard-000000.{ext}").read_bytes()


def test_next_round_size():
    # missing 4 at an acceptance of 1/2 so far, oversample 1.25: 10 more
    assert next_round_size(10, accepted=6, candidates=12, cap=40, oversample=1.25) == 10
    assert next_round_size(10, accepted=10, candidates=12, cap=40, oversample=1.25) == 0  # done
    assert next_round_size(10, accepted=3, candidates=40, cap=40, oversample=1.25) == 0  # cap spent
    assert next_round_size(10, accepted=6, candidates=36, cap=40, oversample=1.25) == 4  # up to the cap
    assert next_round_size(10, accepted=0, candidates=12, cap=40, oversample=1.0) == 12  # nothing yet: double
    assert next_round_size(10, accepted=9, candidates=9, cap=40, oversample=1.0) == 1  # never fewer than missing
    assert first_round(50, 1.2, 100) == 60 and first_round(50, 1.2, 55) == 55 and first_round(5, 1.0, 10) == 5


def test_mixed_protocol_plan():
    cfg = FactoryConfig.model_validate(
        {"run": {"ids_per_shard": 4, "oversample": 1.1,
                 "groups": [{"num_ids": 6, "images_per_id": 50}, {"num_ids": 9, "images_per_id": 5,
                                                                  "max_candidates_per_id": 7}]}}
    )
    groups = run_groups(cfg.run, bank_size=20)
    assert groups == [IdGroup(6, 50, 100), IdGroup(9, 5, 7)]
    jobs = plan_jobs(groups, cfg.run.ids_per_shard)
    # contiguous blocks; the first group's last job is short rather than straddling into the second
    assert [(j.index, j.id_start, j.id_stop, j.images_per_id, j.max_candidates_per_id) for j in jobs] == [
        (0, 0, 4, 50, 100), (1, 4, 6, 50, 100), (2, 6, 10, 5, 7), (3, 10, 14, 5, 7), (4, 14, 15, 5, 7),
    ]
    with pytest.raises(ConfigError, match=r"'run.groups' asks for 15 identities but the bank .* holds 12"):
        run_groups(cfg.run, bank_size=12)
    # without groups: max_ids and the run's class size
    flat = FactoryConfig.model_validate({"run": {"max_ids": 5, "images_per_id": 8}})
    assert run_groups(flat.run, bank_size=20) == [IdGroup(5, 8, 16)]
    assert [j.id_stop for j in plan_jobs(run_groups(flat.run, 20), 2)] == [2, 4, 5]


def test_groups_are_part_of_the_run_identity(tmp_path):
    bank = tmp_path / "bank.parquet"
    bank.write_bytes(b"x")

    def record(groups):
        data = FactoryConfig.model_validate({"run": {"bank": str(bank), "groups": groups}}).model_dump(mode="json")
        return run_record(data, str(bank), 15)["config_hash"]

    assert record([{"num_ids": 6, "images_per_id": 50}]) == record([{"num_ids": 6, "images_per_id": 50}])
    assert record([{"num_ids": 6, "images_per_id": 50}]) != record([{"num_ids": 6, "images_per_id": 40}])


def test_a_job_of_a_group_uses_its_class_size(tmp_path):
    stats, _, members = run(tmp_path, job=ShardJob(index=3, id_start=0, id_stop=2, images_per_id=3,
                                                  max_candidates_per_id=9))
    assert {i: len(v) for i, v in per_class(members).items()} == {0: 3, 1: 3}
    assert stats["images_per_id"] == 3 and stats["max_candidates_per_id"] == 9


def test_card_shows_per_class_quality_and_the_weakest(tmp_path):
    from synthface.shards.card import WEAKEST_PNG, class_stats, read_candidates, weakest_ids, write_card
    from pipelines.resume import check_or_start_run
    from synthface.shards.manifest import write_manifest
    from synthface.shards.verify import verify_dataset
    from synthface.shards.writer import committed_shards

    out = Output(str(tmp_path))
    # inter_class "shard": this test is about the card, and a "dataset" run is not verified until finalised
    cfg = FactoryConfig.model_validate(
        {"run": {"images_per_id": 6, "ids_per_shard": 2, "inter_class": "shard"}}
    ).model_dump(mode="json")
    record = {"config": cfg, "config_hash": "abc", "bank": {"path": "b", "sha256": "x", "num_ids": 4}}
    check_or_start_run(out, record, restart=False)
    for k in range(2):
        run(tmp_path, job=ShardJob(index=k, id_start=2 * k, id_stop=2 * k + 2))
    dataset = write_manifest(out, record, committed_shards(out), 2, {}, {"origin": "test"})
    assert verify_dataset(str(tmp_path)).ok
    assert dataset["candidates_per_image"] == pytest.approx(dataset["num_candidates"] / 18)
    assert dataset["topup_candidates"] == dataset["num_candidates"] - 4 * 6

    stats = class_stats(read_candidates(out, dataset))
    rows = pq.read_table(tmp_path / "shard-000000.parquet").to_pylist()
    own = [r["sim_centre"] for r in rows if r["id"] == 1 and r["accepted"]]
    assert stats["accepted"][1] == 6 and stats["candidates"][1] == sum(r["id"] == 1 for r in rows)
    assert stats["sim_mean"][1] == pytest.approx(np.mean(own)) and stats["sim_std"][1] == pytest.approx(np.std(own))
    assert np.isnan(stats["sim_mean"][3]) and stats["outcome"][3] == "dropped: class_too_small"
    assert stats["outcome"][0] == ""
    assert weakest_ids(stats) == [3, 2, 1, 0]  # lowest acceptance first

    write_card(out)
    card = (tmp_path / "README.md").read_text()
    assert "## Classes" in card and "card/classes.png" in card and WEAKEST_PNG in card
    assert "| candidates generated per image kept (GPU cost) |" in card
    lost = [r for r in rows if r["id"] == 1 and not r["accepted"]]
    counts = {reason: sum(r["reason"] == reason for r in lost) for reason in {r["reason"] for r in lost}}
    line = next(s for s in card.splitlines() if s.startswith("| 1 | kept | 6 / "))
    assert all(f"`{reason}` x{n}" in line for reason, n in counts.items())
    assert "| 3 | dropped: class_too_small | 0 / 30 | 0% |" in card
    sheet = Image.open(tmp_path / WEAKEST_PNG)
    assert sheet.size[1] == 4 * (64 + 14)
    # identity 1's row: accepted crops framed green, then a rejected thumbnail (grey 60 = 40*1+20) framed red
    px = np.asarray(sheet.convert("RGB"))
    row = px[2 * 78 : 2 * 78 + 64]
    accepted_area, rejected_area = row[:, 70 : 70 + 4 * 64], row[:, 70 + 4 * 64 + 10 :]
    assert (accepted_area[:, 1] == [0, 128, 0]).all(axis=-1).all()
    assert (accepted_area == [60, 60, 60]).all(axis=-1).sum() > 4 * 50 * 50
    assert (rejected_area[:, 1] == [255, 0, 0]).all(axis=-1).all()
    assert (rejected_area == [60, 60, 60]).all(axis=-1).sum() > 50 * 50  # thumbnails (low_intra_sim, surplus)
    assert (rejected_area == [200, 200, 200]).all(axis=-1).sum() > 50 * 50  # no face: nothing to show


def test_verify_checks_class_sizes(tmp_path):
    from pipelines.resume import check_or_start_run
    from synthface.shards.manifest import write_manifest
    from synthface.shards.verify import verify_dataset
    from synthface.shards.writer import committed_shards

    out = Output(str(tmp_path))
    record = {"config": {"seed": 1, "run": {}}, "config_hash": "abc", "bank": {"path": "b", "sha256": "x", "num_ids": 2}}
    check_or_start_run(out, record, restart=False)
    run(tmp_path, job=ShardJob(index=0, id_start=0, id_stop=2), max_candidates_per_id=8, short_classes="flag")
    write_manifest(out, record, committed_shards(out), 1, {}, {"origin": "test"})
    assert verify_dataset(str(tmp_path)).ok  # identity 1 has 4 of 6, flagged short_class
    stats = json.loads((tmp_path / "shard-000000.json").read_text())
    (tmp_path / "shard-000000.json").write_text(json.dumps({**stats, "images_per_id": 5}))
    problems = verify_dataset(str(tmp_path)).problems
    assert problems == ["shard-000000.tar: identity 0 has 6 images; its class size is 5"]
    (tmp_path / "shard-000000.json").write_text(json.dumps({**stats, "class_flags": {}}))
    tar = tmp_path / "shard-000000.tar"
    with tarfile.open(tar) as t:  # identity 1 without its flag
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for m, data in members:
            if m.name.startswith("0000001_") and m.name.endswith(".json"):
                data = json.dumps({k: v for k, v in json.loads(data).items() if k != "class_flag"}).encode()
                m.size = len(data)
            t.addfile(m, io.BytesIO(data))
    tar.write_bytes(buf.getvalue())
    # a consistent rewrite (its stats record the new tar), so only the class size is wrong
    from synthface.shards.writer import file_record

    files = {**stats["files"], "tar": file_record(buf.getvalue())}
    (tmp_path / "shard-000000.json").write_text(json.dumps({**stats, "class_flags": {}, "files": files}))
    assert verify_dataset(str(tmp_path)).problems == [
        "shard-000000.tar: identity 1 has 4 images; its class size is 6 and it is not flagged short_class"
    ]


@pytest.mark.parametrize(
    "run_cfg, message",
    [
        ({"groups": [{"num_ids": 3}], "max_ids": 3}, "'run': .*run.groups fixes how many identities are used; remove run.max_ids"),
        ({"images_per_id": 10, "max_candidates_per_id": 5}, "'run': .*max_candidates_per_id \\(5\\) is below images_per_id \\(10\\)"),
        ({"max_candidates_per_id": 60, "groups": [{"num_ids": 3, "images_per_id": 70}]},
         "groups\\[0\\]: max_candidates_per_id \\(60\\) is below images_per_id \\(70\\)"),
        ({"groups": []}, "'run.groups': List should have at least 1 item"),
        ({"groups": [{"num_ids": 3, "size": 5}]}, "'run.groups.0.size': unknown key"),
        ({"oversample": 0.5}, "'run.oversample'"),
        ({"images_per_id": 1001}, "'run.images_per_id'"),
    ],
)
def test_class_size_config_errors_name_the_key(run_cfg, message):
    from synthface.config import validate

    with pytest.raises(ConfigError, match=message):
        validate(FactoryConfig, {"run": run_cfg})
