"""A small committed dataset without Ray or models (no tests here).

Every shard job runs through the real ``run_shard_job`` (real filter and shard
writer) with a stand-in generator and analyzer: identity ``i``'s images embed
near ``centres[i]`` (a row per identity, any dimension), so a test can plant
duplicate identities in different shards. The manifest is written by the real
``write_manifest``, as ``generate`` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.planning import plan_jobs
from pipelines.shard_job import JobSettings, Stages, run_shard_job
from pipelines.config import FactoryConfig
from synthface.faces.analyzer import FaceResult
from synthface.filtering import IdentityFilter
from synthface.shards.manifest import RUN_FILE, write_manifest
from synthface.config import hash_json
from pipelines.resume import output_config
from synthface.shards.storage import Output
from synthface.shards.writer import committed_shards


class _Generator:
    def generate(self, id_vectors, seeds):
        out = np.zeros((len(id_vectors), 8, 8, 3), np.uint8)
        for row, v in enumerate(id_vectors):
            identity = int(v[0])
            out[row, 0, 0, :2] = (identity // 256, identity % 256)
            out[row, 0, 1, 0] = int(v[1])  # image index, for the noise seed
        return out

    def describe(self):
        return {"model": "stand-in", "steps": 1}


class _Analyzer:
    """Embeds identity i's image k as centres[i] plus a little noise fixed by (i, k)."""

    def __init__(self, centres: np.ndarray, noise: float):
        self.centres = centres
        self.noise = noise
        self.embedding_dim = centres.shape[1]

    def analyze(self, images):
        out = []
        for img in images:
            identity = int(img[0, 0, 0]) * 256 + int(img[0, 0, 1])
            k = int(img[0, 1, 0])
            rng = np.random.default_rng([identity, k])
            emb = self.centres[identity] + rng.normal(0, self.noise, self.embedding_dim)
            crop = np.full((112, 112, 3), (identity * 37) % 256, np.uint8)
            out.append(
                FaceResult(ok=True, det_score=0.9, num_faces=1, aligned=crop, bbox=np.zeros(4, np.float32),
                           landmarks=np.zeros((5, 2), np.float32),
                           embedding=(emb / np.linalg.norm(emb)).astype(np.float32))
            )
        return out


def _jitter(embedding, run_seed, identity_id, image_index):
    v = np.zeros(4, np.float32)
    v[0], v[1] = identity_id, image_index
    return v


def build_dataset(out: Path, centres: np.ndarray, *, ids_per_shard: int = 3, images_per_id: int = 3,
                  inter_class: str = "dataset", tau_inter: float = 0.6, noise: float = 0.02,
                  models_dir: str = "models", faces: dict | None = None, inter_action: str = "drop") -> FactoryConfig:
    """Commit every shard of ``len(centres)`` identities into ``out`` and write the manifest."""
    centres = np.asarray(centres, np.float32)
    centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    cfg = FactoryConfig.model_validate(
        {
            "seed": 3,
            "models_dir": models_dir,
            "faces": faces or {},
            "filter": {"use_target": False, "tau_intra": 0.3, "min_images": 1, "det_score_min": 0.0,
                       "tau_inter": tau_inter, "inter_action": inter_action},
            "run": {"ids_per_shard": ids_per_shard, "images_per_id": images_per_id, "inter_class": inter_class},
        }
    )
    stages = Stages(generator=_Generator(), analyzer=_Analyzer(centres, noise), id_filter=IdentityFilter(cfg.filter),
                    jitter=_jitter)
    settings = JobSettings(run_seed=cfg.seed, images_per_id=images_per_id, batch_size=4, jpeg_quality=90,
                           write_full_image=False, inter_class=inter_class)
    output = Output(str(out))
    output.makedirs()
    cfg_data = cfg.model_dump(mode="json")
    record = {"config": cfg_data, "config_hash": hash_json(output_config(cfg_data)),
              "bank": {"path": "bank.parquet", "sha256": "0" * 64, "num_ids": len(centres)}, "models": {}}
    output.write_json(RUN_FILE, record)
    jobs = plan_jobs(len(centres), ids_per_shard)
    bank = np.zeros((len(centres), 4), np.float32)  # unused by the stand-ins but for its shape
    for job in jobs:
        stats = run_shard_job(job, bank, stages, settings, output)
        for key in ("host", "pid", "started_at", "finished_at", "timings_s"):
            stats.pop(key, None)
        output.write_json(f"{stats['shard']}.json", stats)  # machine-independent stats: byte comparisons
    write_manifest(output, record, committed_shards(output), len(jobs), {}, {"origin": "stand-in", "files": {}})
    return cfg
