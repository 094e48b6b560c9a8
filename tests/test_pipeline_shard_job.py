"""One shard job without Ray or models: stand-in generator and analyzer, the real filter
and shard writer. What the job writes for each kind of rejection, and how the inter-class
check's `drop` and `flag` actions end up in the tar, the parquet and the stats."""

from __future__ import annotations

import io
import json
import tarfile
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.overlap import THREAD_PREFIX
from pipelines.planning import ShardJob
from pipelines.shard_job import JobSettings, Stages, run_shard_job
from synthface.faces.analyzer import FaceResult
from synthface.filtering import FilterConfig, IdentityFilter
from synthface.shards.storage import Output

DIM = 16
PER_ID = 4
# identity -> its direction in embedding space; 11 duplicates 10, 13 gets only one good image
DIRECTIONS = {10: 0, 11: 0, 12: 1, 13: 2}


class IdGenerator:
    """Each "image" carries its identity id, so the analyzer can tell them apart."""

    def generate(self, id_vectors, seeds):
        return np.stack([np.full((16, 16, 3), int(v[0]), np.uint8) for v in id_vectors])

    def describe(self):
        return {"model": "stand-in", "steps": 1}


class ScriptedAnalyzer:
    """Embeds identity i near axis DIRECTIONS[i]; identity 13's images after the first find no face."""

    embedding_dim = DIM

    def __init__(self):
        self.seen: dict[int, int] = {}

    def analyze(self, images):
        out = []
        rng = np.random.default_rng(0)
        for img in images:
            identity = int(img[0, 0, 0])
            k = self.seen.get(identity, 0)
            self.seen[identity] = k + 1
            if identity == 13 and k > 0:
                out.append(FaceResult(ok=False, reason="no_face"))
                continue
            emb = np.zeros(DIM, np.float32)
            emb[DIRECTIONS[identity]] = 1.0
            emb += rng.normal(0, 0.05, DIM).astype(np.float32)
            out.append(FaceResult(ok=True, det_score=0.9, num_faces=1, aligned=np.full((112, 112, 3), identity, np.uint8),
                                  bbox=np.zeros(4, np.float32), landmarks=np.zeros((5, 2), np.float32),
                                  embedding=emb / np.linalg.norm(emb)))
        return out


def run(tmp_path, inter_action: str):
    stages = Stages(
        generator=IdGenerator(),
        analyzer=ScriptedAnalyzer(),
        id_filter=IdentityFilter(FilterConfig(use_target=False, min_images=2, inter_action=inter_action)),
    )
    embeddings = np.zeros((14, DIM), np.float32)
    embeddings[:, 0] = np.arange(14)  # the generator reads the identity back from the vector
    # no top-ups (the cap is the class size): these tests are about the class decisions;
    # tests/test_pipeline_rounds.py covers the rounds
    settings = JobSettings(run_seed=1, images_per_id=PER_ID, batch_size=3, jpeg_quality=90,
                           write_full_image=False, inter_class="shard", max_candidates_per_id=PER_ID)
    out = Output(str(tmp_path / inter_action))
    stats = run_shard_job(ShardJob(index=2, id_start=10, id_stop=14), embeddings, stages, settings, out)
    rows = {(r["id"], r["index"]): r for r in pq.read_table(tmp_path / inter_action / "shard-000002.parquet").to_pylist()}
    with tarfile.open(tmp_path / inter_action / "shard-000002.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    return stats, rows, members


def keys(members) -> set[str]:
    return {name.split(".")[0] for name in members}


def test_drop_removes_the_later_duplicate_and_every_reason_is_recorded(tmp_path):
    stats, rows, members = run(tmp_path, "drop")
    assert len(rows) == 4 * PER_ID and stats["num_candidates"] == 4 * PER_ID
    assert keys(members) == {f"{i:07d}_{k:03d}" for i in (10, 12) for k in range(PER_ID)}
    assert {(rows[(11, k)]["accepted"], rows[(11, k)]["reason"], rows[(11, k)]["class_kept"]) for k in range(PER_ID)} == {
        (False, "inter_class_duplicate", False)
    }
    # identity 13: one image passed, the rest found no face, so the class is too small
    assert rows[(13, 0)]["reason"] == "class_too_small" and not rows[(13, 0)]["class_kept"]
    assert {rows[(13, k)]["reason"] for k in range(1, PER_ID)} == {"no_face"}
    assert stats["class_reasons"] == {"class_too_small": 1, "inter_class_duplicate": 1}
    assert stats["reasons"] == {"accepted": 8, "class_too_small": 1, "inter_class_duplicate": 4, "no_face": 3}
    assert stats["rounds"] == 1 and stats["topup_candidates"] == 0 and stats["candidates_per_image"] == 2.0
    assert stats["num_samples"] == 8 and stats["labels"] == [10, 12] and stats["num_classes_kept"] == 2


def test_flag_keeps_the_duplicate_and_marks_it(tmp_path):
    stats, rows, members = run(tmp_path, "flag")
    assert keys(members) == {f"{i:07d}_{k:03d}" for i in (10, 11, 12) for k in range(PER_ID)}
    assert all(rows[(11, k)]["accepted"] and rows[(11, k)]["class_kept"] for k in range(PER_ID))
    assert {rows[(11, k)]["class_reason"] for k in range(PER_ID)} == {"inter_class_duplicate"}
    assert rows[(10, 0)]["class_reason"] is None
    meta = json.loads(members["0000011_000.json"])
    assert meta["class_flag"] == "inter_class_duplicate"
    assert "class_flag" not in json.loads(members["0000010_000.json"])
    assert stats["class_flags"] == {"inter_class_duplicate": 1} and stats["class_reasons"] == {"class_too_small": 1}
    assert stats["num_samples"] == 12 and stats["labels"] == [10, 11, 12]


@pytest.mark.parametrize("action", ["drop", "flag"])
def test_same_job_writes_the_same_tar(tmp_path, action):
    run(tmp_path / "a", action)
    run(tmp_path / "b", action)
    name = f"{action}/shard-000002.tar"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with tarfile.open(fileobj=io.BytesIO((tmp_path / "a" / name).read_bytes())) as tar:
        assert all(m.mtime == 0 for m in tar.getmembers())


class _FakeReference:
    """A ReferenceSource stand-in: the image and record depend on (seed, id, index) only."""

    def candidate(self, run_seed, identity_id, image_index, class_vector):
        from synthface.generation.reference import ReferenceInput

        image = np.full((8, 8, 3), (identity_id * 7 + image_index) % 256, np.uint8)
        record = {"image": f"p{identity_id}/{(run_seed + image_index) % 3}.png", "strength": 0.4, "image_embedding_weight": 0.0}
        return ReferenceInput(np.asarray(class_vector, np.float32) * 2, image, record)


def test_candidate_inputs_are_per_candidate_and_plain_mode_passes_nothing():
    from pipelines.shard_job import candidate_inputs

    emb = np.eye(4, DIM, dtype=np.float32)
    plain = Stages(generator=IdGenerator(), analyzer=ScriptedAnalyzer(), id_filter=None)
    vectors, inputs, records = candidate_inputs([(1, 0), (2, 3)], emb, plain, 5)
    assert inputs == {} and records == {} and np.array_equal(vectors, emb[[1, 2]])

    stages = Stages(generator=IdGenerator(), analyzer=ScriptedAnalyzer(), id_filter=None, reference=_FakeReference())
    big = [(i, k) for i in range(4) for k in range(3)]
    v_all, in_all, rec_all = candidate_inputs(big, emb, stages, 5)
    for start in range(0, len(big), 5):  # other batch boundaries, same inputs per candidate
        chunk = big[start : start + 5]
        v, inp, rec = candidate_inputs(chunk, emb, stages, 5)
        assert np.array_equal(v, v_all[start : start + 5])
        for j, p in enumerate(chunk):
            assert np.array_equal(inp["reference_images"][j], in_all["reference_images"][start + j])
            assert rec[p] == rec_all[p] == {"reference": _FakeReference().candidate(5, *p, emb[p[0]]).record}


# --- run.overlap: generation of batch k+1 while batch k is analysed (pipelines/overlap.py) ---


class OrderRecordingAnalyzer(ScriptedAnalyzer):
    """ScriptedAnalyzer that also stamps each result with its place in the order of analysis
    (in det_score, which the parquet and each sample's json record) and notes its thread."""

    def __init__(self, fail_on_call: int | None = None):
        super().__init__()
        self.calls = 0
        self.threads: set[str] = set()
        self.fail_on_call = fail_on_call

    def analyze(self, images):
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if self.calls == self.fail_on_call:
            raise RuntimeError(f"analyzer broke on call {self.calls}")
        out = super().analyze(images)
        done = sum(self.seen.values()) - len(images)
        for n, result in enumerate(out):
            if result.ok:
                result.det_score = 0.9 + 0.001 * (done + n)
        return out


class FailingGenerator(IdGenerator):
    def __init__(self, fail_on_call: int):
        self.calls, self.fail_on_call = 0, fail_on_call

    def generate(self, id_vectors, seeds):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError(f"generator broke on call {self.calls}")
        return super().generate(id_vectors, seeds)


def run_job(out_dir, overlap: bool, generator=None, analyzer=None, full_image: bool = True):
    stages = Stages(
        generator=generator or IdGenerator(),
        analyzer=analyzer or OrderRecordingAnalyzer(),
        id_filter=IdentityFilter(FilterConfig(use_target=False, min_images=2, inter_action="drop")),
    )
    embeddings = np.zeros((14, DIM), np.float32)
    embeddings[:, 0] = np.arange(14)
    settings = JobSettings(run_seed=1, images_per_id=PER_ID, batch_size=3, jpeg_quality=90,
                           write_full_image=full_image, inter_class="shard", overlap=overlap)
    return run_shard_job(ShardJob(index=2, id_start=10, id_stop=14), embeddings, stages, settings, Output(str(out_dir)))


def stage_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


RUN_DEPENDENT = ("timings_s", "started_at", "finished_at", "pid", "host", "attempt")


def test_overlap_writes_the_same_shard_in_the_same_order(tmp_path):
    on_analyzer, off_analyzer = OrderRecordingAnalyzer(), OrderRecordingAnalyzer()
    off = run_job(tmp_path / "off", overlap=False, analyzer=off_analyzer)
    on = run_job(tmp_path / "on", overlap=True, analyzer=on_analyzer)
    # the analysis really ran on the background thread with overlap, on this one without
    assert off_analyzer.threads == {threading.current_thread().name}
    assert len(on_analyzer.threads) == 1 and next(iter(on_analyzer.threads)).startswith(THREAD_PREFIX)
    for name in ("shard-000002.tar", "shard-000002.parquet"):
        assert (tmp_path / "on" / name).read_bytes() == (tmp_path / "off" / name).read_bytes(), name
    assert {k: v for k, v in on.items() if k not in RUN_DEPENDENT} == {k: v for k, v in off.items() if k not in RUN_DEPENDENT}
    assert "analyze_wait_s" in on["timings_s"] and "analyze_wait_s" not in off["timings_s"]
    # analysed in plan order: the order stamp of every analysed candidate is its place in the plan
    rows = pq.read_table(tmp_path / "on" / "shard-000002.parquet").to_pylist()
    plan = [(i, k) for i in range(10, 14) for k in range(PER_ID)]
    stamped = {(r["id"], r["index"]): r["det_score"] for r in rows if r["reason"] != "no_face"}
    assert stamped == {p: pytest.approx(0.9 + 0.001 * plan.index(p)) for p in stamped}
    with tarfile.open(tmp_path / "on" / "shard-000002.tar") as tar:
        assert any(m.name.endswith(".full.jpg") for m in tar.getmembers())
    assert stage_threads() == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("stage", ["generate", "analyse"])
def test_a_failing_stage_fails_the_job_with_its_error_and_commits_nothing(tmp_path, stage, overlap):
    kwargs = {"generator": FailingGenerator(3)} if stage == "generate" else {"analyzer": OrderRecordingAnalyzer(2)}
    with pytest.raises(RuntimeError, match=f"{'generator' if stage == 'generate' else 'analyzer'} broke on call"):
        run_job(tmp_path, overlap=overlap, **kwargs)
    assert not (tmp_path / "shard-000002.json").exists()  # no commit marker: resume redoes it
    assert stage_threads() == []
