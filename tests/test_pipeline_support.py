"""Helpers for the pipeline tests (no tests here).

- ``tiny_config``: a factory config on the tiny random models, small enough
  for a 2-core CPU.
- ``KillOnce`` / ``FailAlways``: fault injection around the real stages (a
  worker process that dies mid-job; a job that always raises).
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
    """A bank Parquet in the contract's format (id dense from 0, unit-norm embedding)."""
    embeddings = np.asarray(embeddings, np.float32)
    embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    try:
        from synthface.identity.bank import write_bank as stage_write_bank  # the stage's own writer
    except ImportError:
        stage_write_bank = None
    if stage_write_bank is not None:
        try:
            stage_write_bank(path, embeddings)
            return path
        except TypeError:
            pass
    dim = embeddings.shape[1]
    table = pa.table(
        {
            "id": pa.array(np.arange(len(embeddings)), pa.int64()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1), pa.float32()), dim),
            "sampler": pa.array(["test"] * len(embeddings)),
            "nn_sim": pa.array(np.zeros(len(embeddings), np.float32)),
        }
    )
    pq.write_table(table, path)
    return path


def random_bank(path: Path, num_ids: int, dim: int = 512, seed: int = 0) -> Path:
    return write_bank(path, np.random.default_rng(seed).normal(size=(num_ids, dim)))


def tiny_config(models_dir: Path, bank: Path, **run) -> dict:
    """Factory config data: tiny models, 64 px, 2 steps, permissive filter (random recognizer)."""
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
    import pipelines.stages as st

    try:
        import synthface.identity.jitter  # noqa: F401
    except ImportError:  # TEMPORARY until the identity stage lands
        st.make_jitter = lambda cfg: None
    return st.build_stages(cfg)


class _DyingGenerator:
    def __init__(self, inner, flag: str):
        self.inner, self.flag = inner, flag

    def generate(self, id_vectors, seeds):
        images = self.inner.generate(id_vectors, seeds)
        try:
            os.remove(self.flag)  # only the first worker to get here dies
        except FileNotFoundError:
            return images
        os._exit(1)  # the worker process dies mid-job, as if killed

    def describe(self):
        return self.inner.describe()


@dataclass
class KillOnce:
    """Real stages; the first generate() call after ``flag`` appears kills the worker process."""

    flag: str

    def __call__(self, cfg):
        stages = build_real_stages(cfg)
        stages.generator = _DyingGenerator(stages.generator, self.flag)
        return stages


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
            people.setdefault(int(row["identity"]), []).append(assets / "faces" / "images" / row["image"])
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
    return {
        "seed": 3,
        "models_dir": str(assets / "models"),
        "faces": {
            "detector": str(assets / "models" / "scrfd_500m_kps.onnx"),
            "recognizer": str(assets / "models" / "mobilefacenet_arcface_128d.onnx"),
            "det_size": 320,
            "threads": 1,
        },
        "filter": {"use_target": True, "tau_target": 0.4, "tau_intra": 0.3, "min_images": 2},
        "run": {
            "bank": str(bank),
            "ids_per_shard": 4,
            "images_per_id": 4,
            "batch_size": 8,
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

    def __init__(self, people: dict[int, list[Path]], centres: np.ndarray, impostor_every: int = 0):
        self.people = list(people.values())
        self.centres = centres
        self.impostor_every = impostor_every
        self._cache: dict[Path, np.ndarray] = {}

    def _photo(self, path: Path) -> np.ndarray:
        if path not in self._cache:
            self._cache[path] = load_photo(path)
        return self._cache[path]

    def generate(self, id_vectors, seeds):
        out = []
        for vec, seed in zip(np.asarray(id_vectors), seeds):
            person = int(np.argmax(self.centres @ vec))
            if self.impostor_every and seed % self.impostor_every == 0:
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
    impostor_every: int = 0

    def __call__(self, cfg):
        from pipelines.shard_job import Stages
        from synthface.faces import FaceAnalyzer
        from synthface.filtering import IdentityFilter

        people = photo_identities(Path(self.assets))
        return Stages(
            generator=PhotoGenerator(people, self.centres, self.impostor_every),
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
    return np.stack(centres).astype(np.float32)


# TEMPORARY until synthface.identity.bank lands: read the contract Parquet directly.
def install_bank_reader_if_missing() -> None:
    try:
        import synthface.identity.bank  # noqa: F401
        return
    except ImportError:
        pass
    import types

    import pipelines.stages

    def read(path):
        t = pq.read_table(path)
        emb = np.stack(t["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
        return types.SimpleNamespace(ids=t["id"].to_numpy(), embeddings=emb, table=t)

    pipelines.stages._read_bank = read
