"""One shard job, start to finish, inside one worker: the stages composed.

For every identity of the job and every image index: the (optionally
jittered) identity vector and the image seed, both derived from (run seed,
identity id, image index) only; generate in batches; analyse each batch right
away (so full-size images are not held; with ``run.overlap``, on a background
thread while the next batch is generated: see pipelines/overlap.py); filter
each identity's candidates as one class; check the shard's classes against
each other; write the shard.

The stages are passed in (see :class:`Stages`), and their interfaces are those
of docs/architecture.md; this module holds no model or image logic.
"""

from __future__ import annotations

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
from synthface.shards.storage import Output
from synthface.shards.writer import ShardWriter, encode_jpeg, sample_key


class Generator(Protocol):
    def generate(self, id_vectors: np.ndarray, seeds: Sequence[int]) -> np.ndarray: ...
    def describe(self) -> dict: ...


class Analyzer(Protocol):
    embedding_dim: int

    def analyze(self, images: Sequence[np.ndarray]) -> list: ...


class Filter(Protocol):
    def filter_class(self, target, results): ...
    def inter_class(self, ids, centres) -> dict[int, str]: ...


SAMPLE_GENERATOR_KEYS = (
    "model", "models_origin", "scheduler", "steps", "guidance", "guidance_fraction", "guided_steps",
    "lcm_lora", "height", "width", "dtype",
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


@dataclass
class JobSettings:
    """The parts of the factory config a shard job needs."""

    run_seed: int
    images_per_id: int
    batch_size: int
    jpeg_quality: int
    write_full_image: bool
    inter_class: str  # "shard" | "off"
    config_hash: str | None = None  # recorded in the stats: resume and verify check it
    overlap: bool = False  # generate batch k+1 while batch k is analysed (run.overlap)


def _f(value) -> float | None:
    return None if value is None else float(value)


def run_shard_job(
    job: ShardJob,
    embeddings: np.ndarray,
    stages: Stages,
    settings: JobSettings,
    output: Output,
    attempt: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Generate, analyse, filter and commit one shard; returns its stats."""
    t0 = time.perf_counter()
    started_at = time.time()
    times = Counter()
    generator_info = stages.generator.describe()
    # per sample: what shaped the image; the full description (paths, speed
    # switches) goes once into the shard stats, so tars do not depend on paths
    sample_generator = {k: v for k, v in generator_info.items() if k in SAMPLE_GENERATOR_KEYS}
    ids = list(range(job.id_start, job.id_stop))
    plan = [(i, k) for i in ids for k in range(settings.images_per_id)]
    seeds = {(i, k): image_seed(settings.run_seed, i, k) for i, k in plan}

    results: dict[tuple[int, int], Any] = {}
    full_images: dict[tuple[int, int], bytes] = {}  # encoded at once: full-size arrays would not fit

    def generate(batch):  # on this thread (see pipelines/overlap.py)
        t = time.perf_counter()
        vectors = np.stack(
            [
                stages.jitter(embeddings[i], settings.run_seed, i, k) if stages.jitter else embeddings[i]
                for i, k in batch
            ]
        ).astype(np.float32)
        images = stages.generator.generate(vectors, [seeds[p] for p in batch])
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

    # Filter each identity as a class. The bank embedding is the target when
    # the recognizer's embeddings have its size (whether the filter trusts the
    # similarity is its own setting, filter.use_target); otherwise the filter
    # judges the class by its centre only.
    t = time.perf_counter()
    decisions = {}
    same_space = stages.analyzer.embedding_dim == embeddings.shape[1]
    for i in ids:
        target = embeddings[i] if same_space else None
        decisions[i] = stages.id_filter.filter_class(target, [results[(i, k)] for k in range(settings.images_per_id)])
    class_reasons = {i: (None if d.kept else d.reason) for i, d in decisions.items()}
    class_flags: dict[int, str] = {}  # kept, but marked (filter.inter_action: flag)
    if settings.inter_class == "shard":
        kept = [i for i in ids if decisions[i].kept and decisions[i].centre is not None]
        if len(kept) > 1:
            centres = np.stack([decisions[i].centre for i in kept]).astype(np.float32)
            drop = stages.id_filter.drops_inter_duplicates
            for i, reason in stages.id_filter.inter_class(np.array(kept, dtype=np.int64), centres).items():
                (class_reasons if drop else class_flags)[int(i)] = reason
    times["filter_s"] += time.perf_counter() - t

    t = time.perf_counter()
    writer = ShardWriter(output, job.index, jpeg_quality=settings.jpeg_quality)
    reasons = Counter()
    for i, k in plan:
        result, decision = results[(i, k)], decisions[i].images[k]
        class_reason = class_reasons[i]
        accepted = bool(decision.accepted) and class_reason is None
        reason = None if accepted else (decision.reason if not decision.accepted else class_reason)
        reasons[reason or "accepted"] += 1
        writer.add_candidate(
            {
                "key": sample_key(i, k),
                "id": i,
                "index": k,
                "seed": seeds[(i, k)],
                "accepted": accepted,
                "reason": reason,
                "sim_target": _f(decision.sim_target),
                "sim_centre": _f(decision.sim_centre),
                "det_score": _f(result.det_score),
                "num_faces": int(result.num_faces),
                "class_kept": class_reason is None,
                "class_reason": class_reason or class_flags.get(i),
            }
        )
        if accepted:
            writer.add_sample(
                i,
                k,
                result.aligned,
                {
                    "seed": seeds[(i, k)],
                    "shard": writer.name,
                    "sim_target": _f(decision.sim_target),
                    "sim_centre": _f(decision.sim_centre),
                    "det_score": _f(result.det_score),
                    "bbox": None if result.bbox is None else np.asarray(result.bbox, dtype=float).round(2),
                    "landmarks": None if result.landmarks is None else np.asarray(result.landmarks, dtype=float).round(2),
                    "generator": sample_generator,
                    **({"class_flag": class_flags[i]} if i in class_flags else {}),
                },
                full_image=full_images.get((i, k)),
            )
    num_candidates = len(plan)
    stats = {
        "id_start": job.id_start,
        "id_stop": job.id_stop,
        "num_ids": job.num_ids,
        "num_classes_kept": sum(1 for r in class_reasons.values() if r is None),
        "reasons": dict(sorted(reasons.items())),
        "class_reasons": dict(sorted(Counter(r for r in class_reasons.values() if r).items())),
        "class_flags": dict(sorted(Counter(class_flags.values()).items())),
        "acceptance_rate": (reasons["accepted"] / num_candidates) if num_candidates else 0.0,
        "generator": generator_info,
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
