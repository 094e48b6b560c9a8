"""Benchmarks of the run machinery (not tests; nothing here is asserted).

- orchestration: the real dispatcher, workers, shard jobs and shard writer,
  with stand-in stages whose generator sleeps a fixed time per image (as if a
  GPU were busy) and whose analyzer/filter accept everything. Ideal
  throughput is ``workers / sleep``; efficiency is measured / ideal.
- overlap: ``run.overlap`` off vs on inside one worker (no Ray), on the tiny
  models, and with a sleeping generator standing in for a GPU.
- shard writer: images/s of ShardWriter (JPEG + tar + parquet) on one core,
  against bare JPEG encoding of the same crops measured in the same run.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.runner import load_average, warn_if_loaded
from pipelines.planning import plan_jobs
from pipelines.shard_job import Stages

CROP = 112


def _crop(seed: int, size: int = CROP) -> np.ndarray:
    """A smooth, face-sized test crop (JPEG cost like a real crop, unlike pure noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(40, 200, size=3).astype(np.float32)
    img = base + 50 * np.sin(6 * xx[..., None] + rng.uniform(0, 6, 3)) * np.cos(4 * yy[..., None])
    img += rng.normal(0, 6, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


class SleepGenerator:
    """Sleeps ``sleep_s`` per image, returns small flat images (``textured``: smooth test
    pictures, which the real face analyzer does not turn away as single-coloured)."""

    def __init__(self, sleep_s: float, size: int = 32, textured: bool = False):
        self.sleep_s = sleep_s
        self.size = size
        self.textured = textured

    def generate(self, id_vectors, seeds):
        time.sleep(self.sleep_s * len(seeds))
        if self.textured:
            return np.stack([_crop(s, self.size) for s in seeds])
        return np.stack([np.full((self.size, self.size, 3), s % 256, dtype=np.uint8) for s in seeds])

    def describe(self) -> dict:
        return {"model": "sleep", "sleep_s": self.sleep_s}


@dataclass
class _Result:
    ok: bool = True
    reason: str | None = None
    det_score: float = 1.0
    bbox: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    num_faces: int = 1
    aligned: np.ndarray | None = None
    embedding: np.ndarray | None = None


class PassAnalyzer:
    """Every image is one face; the crop is a precomputed test crop."""

    embedding_dim = 8

    def __init__(self):
        self.crops = [_crop(s) for s in range(16)]

    def analyze(self, images):
        return [_Result(aligned=self.crops[int(img[0, 0, 0]) % 16], embedding=np.ones(8, np.float32) / np.sqrt(8)) for img in images]


@dataclass
class _ImageDecision:
    accepted: bool = True
    reason: str | None = None
    sim_target: float | None = None
    sim_centre: float | None = 1.0


@dataclass
class _ClassDecision:
    images: list = field(default_factory=list)
    kept: bool = True
    reason: str | None = None
    centre: np.ndarray | None = None


class AcceptAllFilter:
    def filter_class(self, target, results):
        return _ClassDecision(images=[_ImageDecision() for _ in results])

    def inter_class(self, ids, centres):
        return {}


@dataclass
class SleepStages:
    """A picklable stages factory for the orchestration benchmark."""

    sleep_s: float

    def __call__(self, cfg) -> Stages:
        return Stages(generator=SleepGenerator(self.sleep_s), analyzer=PassAnalyzer(), id_filter=AcceptAllFilter())


def orchestration_bench(
    worker_counts: list[int], shards_per_worker: int, ids_per_shard: int, images_per_id: int, sleep_s: float
) -> list[dict]:
    import ray

    from pipelines.dispatch import Dispatcher
    from pipelines.worker import ShardWorker
    from pipelines.config import FactoryConfig

    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores, include_dashboard=False, configure_logging=False, log_to_driver=False)
    rows = []
    try:
        for workers in worker_counts:
            cfg = FactoryConfig.model_validate(
                {
                    "run": {
                        "ids_per_shard": ids_per_shard,
                        "images_per_id": images_per_id,
                        "oversample": 1.0,  # the stand-in filter accepts all: no surplus to generate
                        "batch_size": images_per_id,
                        "workers": workers,
                        "gpus_per_worker": 0,
                        # sleeping workers need no CPU of their own: all fit on the cores we have
                        "cpus_per_worker": min(1.0, cores / max(worker_counts)),
                    }
                }
            )
            jobs = plan_jobs(workers * shards_per_worker * ids_per_shard, ids_per_shard)
            embeddings = np.ones((jobs[-1].id_stop, 8), np.float32)
            with tempfile.TemporaryDirectory() as out:
                actor = ray.remote(ShardWorker).options(num_cpus=cfg.run.cpus_per_worker, num_gpus=0)
                ref = ray.put(embeddings)
                data = cfg.model_dump(mode="json")
                dispatcher = Dispatcher(
                    lambda: actor.remote(data, out, ref, SleepStages(sleep_s)),
                    num_workers=workers,
                    max_in_flight=cfg.run.jobs_in_flight(),
                    max_retries=0,
                )
                dispatcher.start_workers(wait_all=True)
                t0 = time.perf_counter()
                result = dispatcher.run(jobs, poll_s=0.05)
                wall = time.perf_counter() - t0
                dispatcher.shutdown()
            images = sum(s["num_samples"] for s in result.done.values())
            ideal = workers / sleep_s
            # time a worker spent on a job outside the (sleeping) generator: analysis, filter, writing
            in_job = [s["timings_s"]["total_s"] - s["timings_s"]["generate_s"] for s in result.done.values()]
            rows.append(
                {"workers": workers, "images": images, "wall_s": wall, "img_per_s": images / wall, "ideal": ideal,
                 "job_overhead_s": float(np.mean(in_job)), "shard_s": images_per_id * ids_per_shard * sleep_s}
            )
    finally:
        ray.shutdown()
    table = Table(title=f"orchestration: {sleep_s * 1000:.0f} ms/image sleeping generator, {cores} cores")
    for col in ("workers", "images", "wall s", "images/s", "ideal images/s", "efficiency", "worker s/shard"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["workers"]), str(r["images"]), f"{r['wall_s']:.2f}", f"{r['img_per_s']:.1f}", f"{r['ideal']:.1f}",
            f"{r['img_per_s'] / r['ideal']:.1%}", f"{r['job_overhead_s']:.2f}+{r['shard_s']:.1f}",
        )
    Console().print(table)
    warn_if_loaded()
    return rows


def shard_writer_bench(num_images: int, quality: int) -> dict:
    from synthface.shards.storage import Output
    from synthface.shards.writer import ShardWriter, encode_jpeg

    crops = [_crop(s) for s in range(num_images)]

    def write(out: str, n: int) -> None:
        writer = ShardWriter(Output(out), 0, jpeg_quality=quality)
        for k, c in enumerate(crops[:n]):
            key_id, idx = divmod(k, 100)
            writer.add_sample(key_id, idx, c, {"seed": k, "sim_target": 0.5, "landmarks": np.zeros((5, 2))})
            writer.add_candidate({"key": f"{key_id:07d}_{idx:03d}", "id": key_id, "index": idx, "accepted": True})
        writer.commit({"id_start": 0, "id_stop": n // 100 + 1})

    with tempfile.TemporaryDirectory() as out:
        write(out, 10)  # warm-up: first-use imports (pyarrow, PIL plugins) are not write cost
    t0 = time.perf_counter()
    for c in crops:
        encode_jpeg(c, quality)
    encode_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        write(out, num_images)
        write_s = time.perf_counter() - t0
    row = {
        "images": num_images,
        "writer_img_per_s": num_images / write_s,
        "jpeg_only_img_per_s": num_images / encode_s,
    }
    table = Table(title="shard writer, one process (one core)")
    for col in ("images", "writer images/s", "JPEG-encode-only images/s", "writer / encode-only"):
        table.add_column(col, justify="right")
    table.add_row(
        str(num_images), f"{row['writer_img_per_s']:.0f}", f"{row['jpeg_only_img_per_s']:.0f}",
        f"{row['writer_img_per_s'] / row['jpeg_only_img_per_s']:.1%}",
    )
    Console().print(table)
    warn_if_loaded()
    return row


def overlap_bench(
    models_dir: str | None, size: int, steps: int, batch_size: int, ids_per_job: int, images_per_id: int,
    jobs: int, repeats: int, sleep_ms: float, torch_threads: int, full_image: bool,
) -> list[dict]:
    """run.overlap off vs on, in one process, on the same loaded stages (no Ray: the worker's own loop).

    Two rows: the tiny torch generator on the CPU (generation and analysis share the cores), and a
    sleeping generator as a stand-in for a GPU (the CPU is free while it "generates") with the same
    real tiny analysis. Off and on alternate (off-on, on-off, ...) and the median wall time counts.
    """
    import dataclasses
    from pathlib import Path

    import torch

    from pipelines.planning import ShardJob
    from pipelines.stages import build_stages
    from pipelines.worker import job_settings
    from pipelines.config import FactoryConfig

    torch.set_num_threads(torch_threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if models_dir is None:
            from synthface.models.tiny import init_tiny

            models_dir = str(init_tiny(Path(tmp) / "models"))
        cfg = FactoryConfig.model_validate(
            {
                "models_dir": models_dir,
                "generation": {"steps": steps, "guidance": 1.0, "height": size, "width": size, "batch_size": batch_size, "device": "cpu"},
                "faces": {"det_size": max(32, size // 32 * 32), "device": "cpu", "threads": 1},
                "filter": {"use_target": False, "det_score_min": 0.0, "tau_intra": -1.0, "min_images": 1},
                # oversample 1: the filter passes everything, so each identity is exactly
                # images_per_id candidates (no surplus, no top-up)
                "run": {"ids_per_shard": ids_per_job, "images_per_id": images_per_id, "oversample": 1.0,
                        "batch_size": batch_size, "inter_class": "off", "write_full_image": full_image},
            }
        )
        stages = build_stages(cfg)
        settings = job_settings(cfg)
        rng = np.random.default_rng(0)
        embeddings = rng.normal(size=(jobs * ids_per_job, 512)).astype(np.float32)
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
        job_list = [ShardJob(index=j, id_start=j * ids_per_job, id_stop=(j + 1) * ids_per_job) for j in range(jobs)]
        load_before = load_average()
        images = jobs * ids_per_job * images_per_id
        rows.append(_overlap_row("tiny torch generator, CPU", stages, settings, embeddings, job_list, repeats, f"{tmp}/cpu"))
        if sleep_ms <= 0:  # as long as the analysis: the case where overlap could double the speed
            sleep_ms = 1000.0 * rows[0]["analyze_s"] / (images * repeats)
        stand_in = dataclasses.replace(stages, generator=SleepGenerator(sleep_ms / 1000.0, size=size, textured=True))
        rows.append(_overlap_row(f"GPU stand-in, sleeps {sleep_ms:.1f} ms/img", stand_in, settings, embeddings, job_list, repeats, f"{tmp}/gpu"))
        load_after = load_average()
    table = Table(title=f"run.overlap off vs on: {size} px, batch {batch_size}, {jobs} jobs x {ids_per_job * images_per_id} images, "
                        f"median of {repeats}; load {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} cores")
    for col in ("row", "off img/s", "on img/s", "on/off", "ideal (gen s, analyse s)"):
        table.add_column(col, justify="right")
    for r in rows:
        ideal = f"{r['ideal_on_over_off']:.2f} ({r['generate_s']:.2f}, {r['analyze_s']:.2f})" if r["ideal_on_over_off"] else "-"
        table.add_row(r["row"], f"{r['off_img_per_s']:.1f}", f"{r['on_img_per_s']:.1f}", f"{r['on_over_off']:.2f}", ideal)
    Console().print(table)
    warn_if_loaded()
    for r in rows:
        r.update(load_before=load_before, load_after=load_after)
    return rows


def _overlap_row(name, stages, settings, embeddings, job_list, repeats, out) -> dict:
    """Median images/s of the jobs with run.overlap off and on, alternating which goes first."""
    import statistics

    from pipelines.shard_job import run_shard_job
    from synthface.shards.storage import Output

    wall: dict[bool, list[float]] = {False: [], True: []}
    split = Counter()
    for r in range(repeats + 1):  # round 0 warms up (first calls, allocator), not counted
        for overlap in (False, True) if r % 2 == 0 else (True, False):
            settings.overlap = overlap
            t0 = time.perf_counter()
            for job in job_list:
                stats = run_shard_job(job, embeddings, stages, settings, Output(f"{out}-{r}-{overlap}"))
                if r and not overlap:
                    split.update({k: v for k, v in stats["timings_s"].items() if k in ("generate_s", "analyze_s")})
            if r:
                wall[overlap].append(time.perf_counter() - t0)
    images = sum(j.num_ids for j in job_list) * settings.images_per_id
    off, on = images / statistics.median(wall[False]), images / statistics.median(wall[True])
    g, a = split["generate_s"], split["analyze_s"]
    return {"row": name, "images": images, "off_img_per_s": off, "on_img_per_s": on, "on_over_off": on / off,
            "generate_s": g, "analyze_s": a, "ideal_on_over_off": (g + a) / max(g, a) if max(g, a) else None}
