"""Helpers for the pipeline tests (no tests here).

- ``tiny_config``: a factory config on the tiny random models, small enough
  for a 2-core CPU.
- ``KillOnce`` / ``FailShards`` / ``DieOnLoad`` / ``HangOnce`` / ``NoSpaceForShards``:
  fault injection around the real stages (a worker process that dies mid-job;
  jobs that always raise; a worker that dies while loading; a job that never
  returns; a full output disk).
- ``PhotoStages``: the one generator test double: it returns real photos from
  ../shared/assets for identities embedded from those photos, with the real
  face analyzer and filter, so the accept path runs on real faces.

Ray ships these classes to its workers by value (see ``ship_by_value``), so
workers need not import this file.
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO_ROOT = Path(__file__).resolve().parents[1]


def ship_by_value() -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def write_bank(path: Path, embeddings: np.ndarray) -> Path:
    """A bank Parquet with the columns the bank contract requires (ids dense from 0,
    unit-norm 512-d embeddings); shorter vectors are zero-padded to 512."""
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.shape[1] < 512:
        embeddings = np.pad(embeddings, ((0, 0), (0, 512 - embeddings.shape[1])))
    embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    n = len(embeddings)
    table = pa.table(
        {
            "id": pa.array(np.arange(n), pa.int64()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1), pa.float32()), 512),
            "sampler": pa.array(["test"] * n),
            "sampler_settings": pa.array(["{}"] * n),
            "nn_cosine": pa.array(np.zeros(n, np.float32)),
            "max_gallery_cosine": pa.array([None] * n, pa.float32()),
        }
    )
    pq.write_table(table, path)
    return path


def random_bank(path: Path, num_ids: int, dim: int = 512, seed: int = 0) -> Path:
    return write_bank(path, np.random.default_rng(seed).normal(size=(num_ids, dim)))


def tiny_config(models_dir: Path, bank: Path, **run) -> dict:
    """Factory config data: tiny models, 64 px, 2 steps, permissive filter (random recognizer).
    No top-up rounds (the candidate cap is the class size) and short classes kept, so each
    identity has exactly images_per_id candidates, unless the caller sets those keys."""
    run = {"oversample": 1.0, "max_candidates_per_id": run.get("images_per_id", 2), "short_classes": "flag", **run}
    return {
        "seed": 7,
        "models_dir": str(models_dir),
        "generation": {"steps": 2, "height": 64, "width": 64, "batch_size": 8, "guidance": 1.0},
        "faces": {"det_size": 64, "threads": 1},
        "filter": {"use_target": False, "tau_intra": 0.5, "min_images": 1, "det_score_min": 0.0},
        "run": {
            "bank": str(bank),
            "ids_per_shard": 2,
            "images_per_id": 2,
            "batch_size": 4,
            "workers": 2,
            "gpus_per_worker": 0,
            "cpus_per_worker": 0.5,
            "inter_class": "off",
            "log_every_s": 5,
            **run,
        },
    }


def build_real_stages(cfg):
    from pipelines.stages import build_stages

    return build_stages(cfg)


class _DyingGenerator:
    def __init__(self, inner, flag: str, out: str | None):
        self.inner, self.flag, self.out = inner, flag, out

    def generate(self, id_vectors, seeds):
        images = self.inner.generate(id_vectors, seeds)
        try:
            os.remove(self.flag)  # only the first worker to get here dies
        except FileNotFoundError:
            return images
        if self.out:  # as if it died half-way through writing a shard file
            Path(self.out, ".shard-000000.tar.0badf00d.tmp").write_bytes(b"half a tar")
        os._exit(1)  # the worker process dies mid-job, as if killed

    def describe(self):
        return self.inner.describe()


@dataclass
class KillOnce:
    """Real stages; the first generate() call after ``flag`` appears kills the worker process
    (leaving a half-written temp file in ``out`` when given)."""

    flag: str
    out: str | None = None

    def __call__(self, cfg):
        stages = build_real_stages(cfg)
        stages.generator = _DyingGenerator(stages.generator, self.flag, self.out)
        return stages


@dataclass
class DieOnLoad:
    """A worker process that dies while loading its stages (as if killed or out of memory)."""

    def __call__(self, cfg):
        os._exit(1)


class _HangingGenerator:
    def __init__(self, inner, flag: str):
        self.inner, self.flag = inner, flag

    def generate(self, id_vectors, seeds):
        try:
            os.remove(self.flag)  # only the first worker to get here hangs
        except FileNotFoundError:
            return self.inner.generate(id_vectors, seeds)
        import time

        time.sleep(3600)  # a job stuck in a driver call, a dead NFS mount, a deadlock

    def describe(self):
        return self.inner.describe()


@dataclass
class HangOnce:
    """Real stages; the first generate() call after ``flag`` appears never returns."""

    flag: str

    def __call__(self, cfg):
        stages = build_real_stages(cfg)
        stages.generator = _HangingGenerator(stages.generator, self.flag)
        return stages


@dataclass
class NoSpaceForShards:
    """Real stages in a worker whose every shard write fails as on a full disk (ENOSPC)."""

    def __call__(self, cfg):
        import errno

        from synthface.shards.storage import Output

        def full(self, target, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        Output._write = full  # this worker process only
        return build_real_stages(cfg)


@dataclass
class FailShards:
    """Real stages, except that every job holding one of ``bad_ids`` raises.

    The failure is injected through the jitter hook, the one stage call that
    sees each identity id.
    """

    bad_ids: tuple[int, ...]

    def __call__(self, cfg):
        stages = build_real_stages(cfg)
        real_jitter, bad = stages.jitter, set(self.bad_ids)

        def jitter(embedding, run_seed, identity_id, image_index):
            if identity_id in bad:
                raise RuntimeError(f"injected failure for identity {identity_id}")
            return real_jitter(embedding, run_seed, identity_id, image_index) if real_jitter else embedding

        stages.jitter = jitter
        return stages


# --------------------------------------------------------------------------- real photos
def photo_identities(assets: Path) -> dict[int, list[Path]]:
    people: dict[int, list[Path]] = {}
    with open(assets / "faces" / "identities.csv", newline="") as f:
        for row in csv.DictReader(f):
            people.setdefault(int(row["identity"]), []).append(assets / "faces" / row["image"])
    return {k: sorted(v) for k, v in sorted(people.items())}


def load_photo(path: Path, size: int = 320) -> np.ndarray:
    """A photo padded to a square (no distortion) and resized, as a generator's fixed-size output."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    side = max(img.size)
    canvas = Image.new("RGB", (side, side), (0, 0, 0))
    canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return np.asarray(canvas.resize((size, size), Image.BILINEAR))


def face_config(assets: Path, bank: Path, **run) -> dict:
    """Real detector and recognizer from the shared assets, the filter's defaults.

    The shared recognizer is 128-d, not the bank's 512-d space, so the filter
    judges each class by its centre (use_target false)."""
    return {
        "seed": 3,
        "models_dir": str(assets / "models"),
        "identity": {"jitter": {"enabled": False}},
        "faces": {
            "detector": str(assets / "models" / "scrfd_500m_kps.onnx"),
            "recognizer": str(assets / "models" / "mobilefacenet_arcface_128d.onnx"),
            "det_size": 320,
            "threads": 1,
        },
        "filter": {"use_target": False, "min_images": 3},
        "run": {
            "bank": str(bank),
            "ids_per_shard": 4,
            "images_per_id": 5,
            "batch_size": 10,
            "workers": 2,
            "gpus_per_worker": 0,
            "cpus_per_worker": 0.5,
            **run,
        },
    }


class PhotoGenerator:
    """Returns a real photo of the person whose embedding is nearest the id vector.

    Which of the person's photos: the seed picks it, so (vector, seed) -> image
    is deterministic and independent of the batch, like the real generator.
    """

    def __init__(self, people: dict[int, list[Path]], centres: np.ndarray, impostor_seeds: frozenset = frozenset()):
        self.people = list(people.values())
        self.centres = centres
        self.impostor_seeds = impostor_seeds
        self._cache: dict[Path, np.ndarray] = {}

    def _photo(self, path: Path) -> np.ndarray:
        if path not in self._cache:
            self._cache[path] = load_photo(path)
        return self._cache[path]

    def generate(self, id_vectors, seeds):
        out = []
        for vec, seed in zip(np.asarray(id_vectors), seeds):
            person = int(np.argmax(self.centres @ vec))
            if int(seed) in self.impostor_seeds:
                person = (person + 1) % len(self.people)  # a wrong-identity image the filter must reject
            photos = self.people[person]
            out.append(self._photo(photos[seed % len(photos)]))
        return np.stack(out)

    def describe(self):
        return {"model": "test-double: real photos from shared assets"}


@dataclass
class PhotoStages:
    assets: str
    centres: np.ndarray
    impostor_seeds: frozenset = frozenset()

    def __call__(self, cfg):
        from pipelines.shard_job import Stages
        from synthface.faces import FaceAnalyzer
        from synthface.filtering import IdentityFilter

        people = photo_identities(Path(self.assets))
        return Stages(
            generator=PhotoGenerator(people, self.centres, self.impostor_seeds),
            analyzer=FaceAnalyzer.from_config(cfg.models_dir, cfg.faces),
            id_filter=IdentityFilter(cfg.filter),
        )


def embed_people(assets: Path) -> np.ndarray:
    """Each person's identity: the normalised mean recognizer embedding of their photos."""
    from synthface.faces import FaceAnalyzer
    from synthface.faces.config import FaceAnalysisConfig

    cfg = face_config(assets, Path("unused"))["faces"]
    analyzer = FaceAnalyzer.from_config(None, FaceAnalysisConfig(**cfg))
    centres = []
    for photos in photo_identities(assets).values():
        results = analyzer.analyze([load_photo(p) for p in photos])
        emb = np.stack([r.embedding for r in results if r.ok])
        c = emb.mean(axis=0)
        centres.append(c / np.linalg.norm(c))
    centres = np.stack(centres).astype(np.float32)
    return np.pad(centres, ((0, 0), (0, 512 - centres.shape[1])))  # the bank's 512-d space

