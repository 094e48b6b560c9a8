"""Benchmarks of the run machinery (not tests; nothing here is asserted).

- orchestration: the real dispatcher, workers, shard jobs and shard writer,
  with stand-in stages whose generator sleeps a fixed time per image (as if a
  GPU were busy) and whose analyzer/filter accept everything. Ideal
  throughput is ``workers / sleep``; efficiency is measured / ideal.
- shard writer: images/s of ShardWriter (JPEG + tar + parquet) on one core,
  against bare JPEG encoding of the same crops measured in the same run.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
from rich.console import Console
from rich.table import Table

from pipelines.planning import plan_jobs
from pipelines.shard_job import Stages

CROP = 112


def _crop(seed: int) -> np.ndarray:
    """A smooth, face-sized test crop (JPEG cost like a real crop, unlike pure noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:CROP, 0:CROP].astype(np.float32) / CROP
    base = rng.uniform(40, 200, size=3).astype(np.float32)
    img = base + 50 * np.sin(6 * xx[..., None] + rng.uniform(0, 6, 3)) * np.cos(4 * yy[..., None])
    img += rng.normal(0, 6, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


class SleepGenerator:
    """Sleeps ``sleep_s`` per image, returns small flat images."""

    def __init__(self, sleep_s: float, size: int = 32):
        self.sleep_s = sleep_s
        self.size = size

    def generate(self, id_vectors, seeds):
        time.sleep(self.sleep_s * len(seeds))
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
    import os

    import ray

    from pipelines.dispatch import Dispatcher
    from pipelines.worker import ShardWorker
    from synthface.factory_config import FactoryConfig

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
    return row
