"""One shard job, start to finish, inside one worker: the stages composed.

For every identity of the job and every image index: the (optionally
jittered) identity vector and the image seed, both derived from (run seed,
identity id, image index) only; generate in batches; analyse each batch right
away (so full-size images are not held; with ``run.overlap``, on a background
thread while the next batch is generated: see pipelines/overlap.py); filter
each identity's candidates as one class; top up, in further rounds with the
next image indices, the classes that have fewer than ``images_per_id``
accepted; check the shard's classes against each other; write the shard.

The stages are passed in (see :class:`Stages`), and their interfaces are those
of docs/architecture.md; this module holds no model or image logic.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from pipelines.overlap import run_overlapped
from pipelines.planning import ShardJob
from synthface.seeds import image_seed
from synthface.filtering.yaw_balance import keep_for_class
from synthface.shards.schema import SHORT_CLASS_REASON, SURPLUS_REASON
from pipelines.config import candidate_cap, first_round
from synthface.shards.storage import Output
from synthface.shards.writer import ShardWriter, encode_jpeg, sample_key, thumbnail_jpeg


class Generator(Protocol):
    def generate(self, id_vectors: np.ndarray, seeds: Sequence[int], **inputs: Any) -> np.ndarray: ...
    def describe(self) -> dict: ...


class Analyzer(Protocol):
    embedding_dim: int

    def analyze(self, images: Sequence[np.ndarray]) -> list: ...


class Filter(Protocol):
    def target_applies(self, bank_dim: int, embedding_dim: int) -> bool: ...
    def filter_class(self, target, results): ...
    def inter_class(self, ids, centres) -> dict[int, str]: ...


SAMPLE_GENERATOR_KEYS = (
    "model", "models_origin", "scheduler", "steps", "guidance", "guidance_fraction", "guided_steps",
    "lcm_lora", "height", "width", "dtype", "expression", "pose",
)

# (embedding, run_seed, identity_id, image_index) -> jittered embedding
Jitter = Callable[[np.ndarray, int, int, int], np.ndarray]


@dataclass
class Stages:
    """What a worker loads once and uses for every job."""

    generator: Generator
    analyzer: Analyzer
    id_filter: Filter
    jitter: Jitter | None = None
    # generation.reference: each candidate starts from one of its identity's images
    reference: Any | None = None  # synthface.generation.reference.ReferenceSource
    # per-candidate expression / pose controls (synthface.generation.controls.ControlSampler); None = off
    controls: Any = None


@dataclass
class JobSettings:
    """The parts of the factory config a shard job needs."""

    run_seed: int
    images_per_id: int  # accepted images per identity (a job from run.groups carries its own)
    batch_size: int
    jpeg_quality: int
    write_full_image: bool
    inter_class: str  # "dataset" | "shard" | "off"
    config_hash: str | None = None  # recorded in the stats: resume and verify check it
    oversample: float = 1.0
    max_candidates_per_id: int | None = None  # None: 2 x images_per_id
    short_classes: str = "drop"  # "drop" | "flag"
    rejected_thumbnails: bool = False
    overlap: bool = False  # generate batch k+1 while batch k is analysed (run.overlap)
    yaw_target_std: float | None = None  # filter.yaw_target_std: which surplus images a class keeps


def _f(value) -> float | None:
    return None if value is None else float(value)


def head_pose_fields(result) -> dict[str, float | None]:
    """yaw / pitch / roll (degrees, 2 decimals) of an analysed image, None without a face."""
    pose = getattr(result, "head_pose", None)
    if pose is None:
        return {"yaw": None, "pitch": None, "roll": None}
    return {name: round(float(v), 2) for name, v in zip(("yaw", "pitch", "roll"), pose)}


def next_round_size(images_per_id: int, accepted: int, candidates: int, cap: int, oversample: float) -> int:
    """Candidates of an identity's next top-up round (0: the class is done or its cap is spent).

    The missing count over the class's own acceptance so far, times ``oversample``;
    with nothing accepted yet, as many again as so far. It reads only this class's
    counts, so a class's rounds do not depend on the other classes of its job.
    """
    missing = images_per_id - accepted
    room = cap - candidates
    if missing <= 0 or room <= 0:
        return 0
    want = math.ceil(missing * oversample * candidates / accepted - 1e-9) if accepted else candidates
    return max(1, min(room, max(missing, want)))


def _accepted(decision) -> int:
    return sum(1 for img in decision.images if img.accepted)


def candidate_inputs(
    batch: Sequence[tuple[int, int]], embeddings: np.ndarray, stages: Stages, run_seed: int
) -> tuple[np.ndarray, dict[str, Any], dict[tuple[int, int], dict]]:
    """What the generator gets for a batch of (identity, index) candidates, each from
    (run seed, identity, index) only: the conditioning vectors, the extra keyword
    inputs of ``generate`` (none when every option is off), and per candidate what
    to record with its sample."""
    vectors, references, records = [], [], {}
    for i, k in batch:
        vector = stages.jitter(embeddings[i], run_seed, i, k) if stages.jitter else embeddings[i]
        if stages.reference is not None:
            ref = stages.reference.candidate(run_seed, i, k, vector)
            vector = ref.vector
            references.append(ref.image)
            records[(i, k)] = {"reference": ref.record}
        vectors.append(vector)
    inputs: dict[str, Any] = {}
    if stages.reference is not None:
        inputs["reference_images"] = references
    return np.stack(vectors).astype(np.float32), inputs, records


def _generate_and_analyse(
    plan: list[tuple[int, int]],
    embeddings: np.ndarray,
    stages: Stages,
    settings: JobSettings,
    seeds: dict[tuple[int, int], int],
    results: dict[tuple[int, int], Any],
    full_images: dict[tuple[int, int], bytes],
    times: Counter,
    records: dict[tuple[int, int], dict],
    controls: dict[tuple[int, int], Any] | None = None,
) -> None:
    """Process these (identity, image index) candidates: generate in batches and analyse
    each batch right away (so full-size images are not held); fills ``results`` (and
    ``records``: per candidate, the generator inputs worth recording)."""

    def generate(batch):  # on this thread (see pipelines/overlap.py)
        t = time.perf_counter()
        vectors, inputs, batch_records = candidate_inputs(batch, embeddings, stages, settings.run_seed)
        records.update(batch_records)
        if controls:
            inputs.update(stages.controls.generate_kwargs([controls[p] for p in batch]))
        images = stages.generator.generate(vectors, [seeds[p] for p in batch], **inputs)
        times["generate_s"] += time.perf_counter() - t
        return images

    def analyse(batch, images):  # on a background thread when run.overlap is on
        t = time.perf_counter()
        for p, result in zip(batch, stages.analyzer.analyze(list(images)), strict=True):
            results[p] = result
        times["analyze_s"] += time.perf_counter() - t
        if settings.write_full_image:
            full_images.update((p, encode_jpeg(img, settings.jpeg_quality)) for p, img in zip(batch, images))

    batches = [plan[s : s + settings.batch_size] for s in range(0, len(plan), settings.batch_size)]
    staged = run_overlapped(batches, generate, analyse, overlap=settings.overlap)
    if settings.overlap:
        times["analyze_wait_s"] += staged.stage2_wait_s


@dataclass
class Candidates:
    """Everything a job's rounds produced, keyed by (identity, index)."""

    results: dict[tuple[int, int], Any]  # FaceResult per candidate
    full_images: dict[tuple[int, int], bytes]  # encoded at once: full-size arrays would not fit
    records: dict[tuple[int, int], dict]  # per-candidate input records (jitter, reference)
    seeds: dict[tuple[int, int], int]
    controls: dict[tuple[int, int], Any]  # each candidate's controls; {} when all are off
    generated: dict[int, int]  # candidates per identity: indices 0..generated[i]-1
    decisions: dict[int, Any]  # the filter's last ClassDecision per identity
    rounds: int


@dataclass
class ClassOutcome:
    """Which accepted images each identity keeps, and why a class is dropped or flagged."""

    members: dict[int, set[int]]  # the kept image indices of each class
    reasons: dict[int, str | None]  # None = kept
    flags: dict[int, list[str]]  # kept, but marked (short_classes / filter.inter_action: flag)


def generate_rounds(
    ids: list[int], embeddings: np.ndarray, stages: Stages, settings: JobSettings, class_size: int, cap: int, times: Counter
) -> Candidates:
    """Generate, analyse and filter candidates in rounds until each class has ``class_size``
    accepted images or has spent ``cap`` candidates.

    Every identity first gets ``first_round`` candidates (indices 0..); after each round,
    each identity of the round is judged by the filter on all its candidates so far, and
    those with fewer than ``class_size`` accepted get a top-up round with the next indices
    (:func:`next_round_size`).
    """
    same_space = stages.id_filter.target_applies(embeddings.shape[1], stages.analyzer.embedding_dim)
    c = Candidates({}, {}, {}, {}, {}, {i: 0 for i in ids}, {}, 0)
    todo = {i: first_round(class_size, settings.oversample, cap) for i in ids}
    while todo:
        plan = [(i, k) for i in ids if i in todo for k in range(c.generated[i], c.generated[i] + todo[i])]
        c.seeds.update((p, image_seed(settings.run_seed, *p)) for p in plan)
        if stages.controls is not None:
            c.controls.update((p, stages.controls.for_candidate(*p)) for p in plan)
        _generate_and_analyse(plan, embeddings, stages, settings, c.seeds, c.results, c.full_images, times, c.records, c.controls)
        c.rounds += 1
        # Judge each class of the round on all its candidates (the filter is class-wide:
        # a new image can move the centre). The bank embedding is the target where the
        # filter's target_applies says so; otherwise the class is judged by its centre.
        t = time.perf_counter()
        for i in todo:
            c.generated[i] += todo[i]
            target = embeddings[i] if same_space else None
            c.decisions[i] = stages.id_filter.filter_class(target, [c.results[(i, k)] for k in range(c.generated[i])])
        times["filter_s"] += time.perf_counter() - t
        todo = {
            i: m for i in todo
            if (m := next_round_size(class_size, _accepted(c.decisions[i]), c.generated[i], cap, settings.oversample))
        }
    return c


def decide_classes(ids: list[int], c: Candidates, stages: Stages, settings: JobSettings, class_size: int) -> ClassOutcome:
    """Each class keeps ``class_size`` of its accepted images (first by index, or balanced by
    yaw); short classes are dropped or flagged as configured; then the shard's classes are
    checked against each other (``run.inter_class``)."""
    out = ClassOutcome({}, {}, {})
    for i in ids:
        d = c.decisions[i]
        accepted = [(k, head_pose_fields(c.results[(i, k)])["yaw"]) for k, img in enumerate(d.images) if img.accepted]
        out.members[i] = set(keep_for_class(accepted, class_size, settings.yaw_target_std))
        short = len(out.members[i]) < class_size
        if not d.kept:
            out.reasons[i] = d.reason
        elif short and settings.short_classes == "drop":
            out.reasons[i] = SHORT_CLASS_REASON
        else:
            out.reasons[i] = None
            if short:
                out.flags.setdefault(i, []).append(SHORT_CLASS_REASON)
    if settings.inter_class in ("shard", "dataset"):
        kept = [i for i in ids if out.reasons[i] is None and c.decisions[i].centre is not None]
        if len(kept) > 1:
            centres = np.stack([c.decisions[i].centre for i in kept]).astype(np.float32)
            drop = stages.id_filter.drops_inter_duplicates
            for i, reason in stages.id_filter.inter_class(np.array(kept, dtype=np.int64), centres).items():
                if drop:
                    out.reasons[int(i)] = reason
                else:
                    out.flags.setdefault(int(i), []).append(reason)
    return out


def candidate_reason(decision, class_reason: str | None, is_member: bool) -> str | None:
    """Why a candidate is not in the dataset (None: it is): its own rejection first, then its
    class's, then ``surplus`` for an accepted image beyond the class size."""
    if not decision.accepted:
        return decision.reason
    if class_reason is not None:
        return class_reason
    return None if is_member else SURPLUS_REASON


def write_candidates(
    writer: ShardWriter, ids: list[int], c: Candidates, outcome: ClassOutcome, settings: JobSettings, sample_generator: dict
) -> Counter:
    """One parquet row per candidate and one tar sample per kept image; returns the reason counts."""
    reasons = Counter()
    for i in ids:
        class_reason = outcome.reasons[i]
        class_flag = ",".join(outcome.flags.get(i, [])) or None
        for k in range(c.generated[i]):
            result, decision = c.results[(i, k)], c.decisions[i].images[k]
            reason = candidate_reason(decision, class_reason, k in outcome.members[i])
            accepted = reason is None
            reasons[reason or "accepted"] += 1
            record = c.records.get((i, k), {})
            reference = record.get("reference")
            pose = head_pose_fields(result)
            control_record = c.controls[(i, k)].record() if c.controls else {}
            writer.add_candidate(
                {
                    "key": sample_key(i, k),
                    "id": i,
                    "index": k,
                    "seed": c.seeds[(i, k)],
                    "accepted": accepted,
                    "reason": reason,
                    "sim_target": _f(decision.sim_target),
                    "sim_centre": _f(decision.sim_centre),
                    "det_score": _f(result.det_score),
                    "num_faces": int(result.num_faces),
                    "class_kept": class_reason is None,
                    "class_reason": class_reason or class_flag,
                    "thumb": (
                        thumbnail_jpeg(result.aligned)
                        if settings.rejected_thumbnails and not accepted and result.aligned is not None
                        else None
                    ),
                    "reference_image": reference and reference["image"],
                    "reference_strength": reference and reference["strength"],
                    **pose,
                    **control_record,
                }
            )
            if accepted:
                writer.add_sample(
                    i,
                    k,
                    result.aligned,
                    {
                        "seed": c.seeds[(i, k)],
                        "shard": writer.name,
                        "sim_target": _f(decision.sim_target),
                        "sim_centre": _f(decision.sim_centre),
                        "det_score": _f(result.det_score),
                        "bbox": None if result.bbox is None else np.asarray(result.bbox, dtype=float).round(2),
                        "landmarks": None if result.landmarks is None else np.asarray(result.landmarks, dtype=float).round(2),
                        "generator": sample_generator,
                        "head_pose": pose,
                        **({"controls": control_record} if control_record else {}),
                        **record,
                        **({"class_flag": class_flag} if class_flag else {}),
                    },
                    full_image=c.full_images.get((i, k)),
                )
    # the centres of the classes that hold samples: the dataset-wide duplicate check
    # (pipelines/finalise.py) and the leakage audit compare them without reading images
    with_samples = [i for i in ids if outcome.reasons[i] is None and c.decisions[i].centre is not None and outcome.members[i]]
    if with_samples:
        writer.set_centres(np.array(with_samples), np.stack([c.decisions[i].centre for i in with_samples]))
    return reasons


def run_shard_job(
    job: ShardJob,
    embeddings: np.ndarray,
    stages: Stages,
    settings: JobSettings,
    output: Output,
    attempt: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Generate, analyse, filter and commit one shard; returns its stats.

    Rounds (:func:`generate_rounds`) until each class has ``images_per_id`` accepted
    images or its cap is spent; then the classes (:func:`decide_classes`): a class keeps
    its first ``images_per_id`` accepted images by index (later ones are ``surplus``);
    then one parquet row per candidate and one tar sample per kept image, committed
    with the shard's stats.
    """
    t0 = time.perf_counter()
    started_at = time.time()
    times = Counter()
    generator_info = stages.generator.describe()
    # per sample: what shaped the image; the full description (paths, speed
    # switches) goes once into the shard stats, so tars do not depend on paths
    sample_generator = {k: v for k, v in generator_info.items() if k in SAMPLE_GENERATOR_KEYS}
    ids = list(range(job.id_start, job.id_stop))
    class_size = job.images_per_id or settings.images_per_id
    cap = candidate_cap(class_size, job.max_candidates_per_id or settings.max_candidates_per_id)

    candidates = generate_rounds(ids, embeddings, stages, settings, class_size, cap, times)
    t = time.perf_counter()
    outcome = decide_classes(ids, candidates, stages, settings, class_size)
    times["filter_s"] += time.perf_counter() - t

    t = time.perf_counter()
    writer = ShardWriter(output, job.index, jpeg_quality=settings.jpeg_quality)
    reasons = write_candidates(writer, ids, candidates, outcome, settings, sample_generator)
    num_candidates = sum(candidates.generated.values())
    stats = {
        "id_start": job.id_start,
        "id_stop": job.id_stop,
        "num_ids": job.num_ids,
        "images_per_id": class_size,
        "max_candidates_per_id": cap,
        "num_classes_kept": sum(1 for r in outcome.reasons.values() if r is None),
        "reasons": dict(sorted(reasons.items())),
        "class_reasons": dict(sorted(Counter(r for r in outcome.reasons.values() if r).items())),
        "class_flags": dict(sorted(Counter(f for fl in outcome.flags.values() for f in fl).items())),
        "acceptance_rate": (reasons["accepted"] / num_candidates) if num_candidates else 0.0,
        # the real GPU cost of the data: candidates generated per image written
        "candidates_per_image": (num_candidates / reasons["accepted"]) if reasons["accepted"] else None,
        "rounds": candidates.rounds,
        "topup_candidates": num_candidates - len(ids) * first_round(class_size, settings.oversample, cap),
        "generator": generator_info,
        **({"controls": stages.controls.describe()} if stages.controls is not None else {}),
        "attempt": attempt,
        "config_hash": settings.config_hash,
        "host": platform.node(),
        "pid": os.getpid(),
        "started_at": round(started_at, 3),
    }
    times["write_s"] += time.perf_counter() - t
    stats["timings_s"] = {k: round(v, 3) for k, v in sorted(times.items())}
    stats["timings_s"]["total_s"] = round(time.perf_counter() - t0, 3)
    committed = writer.commit(stats)
    if log:
        log(f"{job}: {committed['num_samples']}/{num_candidates} accepted")
    return committed
