"""Building the stages a worker composes, from the factory config.

:func:`build_stages` is the production factory: the Arc2Face generator, the
face analyzer and the identity filter read from ``cfg.models_dir``, plus the
bank's per-image jitter. Tests pass their own factory with the same signature
(``(FactoryConfig) -> Stages``) to the pipeline instead.
"""

from __future__ import annotations

import numpy as np

from pipelines.shard_job import Stages
from synthface.errors import InputDataError
from pipelines.config import FactoryConfig


def build_stages(cfg: FactoryConfig) -> Stages:
    # Imported here: these pull in torch / diffusers / onnxruntime.
    from synthface.faces import FaceAnalyzer
    from synthface.filtering import IdentityFilter
    from synthface.generation import Arc2FaceGenerator
    from synthface.generation.controls import control_sampler

    controls = control_sampler(cfg.generation, cfg.seed)  # checks the pools before the slow model load
    generator = Arc2FaceGenerator.from_folder(cfg.models_dir, cfg.generation)
    analyzer = FaceAnalyzer.from_config(cfg.models_dir, cfg.faces)
    return Stages(
        generator=generator,
        analyzer=analyzer,
        id_filter=IdentityFilter(cfg.filter),
        jitter=make_jitter(cfg),
        reference=make_reference(cfg),
        controls=controls,
    )


def make_reference(cfg: FactoryConfig, bank=None):
    """Reference mode's image source (the identity images of ``bank``, default run.bank), or None when it is off."""
    if not cfg.generation.reference.enabled:
        return None
    from synthface.generation.reference import ReferenceSource

    return ReferenceSource.from_bank(bank if bank is not None else cfg.run.bank, cfg.generation.reference)


def make_jitter(cfg: FactoryConfig):
    """The bank's per-image condition jitter bound to the config."""
    from synthface.identity.jitter import jitter_identity

    jitter_cfg = cfg.identity.jitter

    def jitter(embedding: np.ndarray, run_seed: int, identity_id: int, image_index: int) -> np.ndarray:
        return jitter_identity(embedding, run_seed, identity_id, image_index, jitter_cfg)

    return jitter


def load_bank_embeddings(path: str, max_ids: int | None = None) -> np.ndarray:
    """The bank's embeddings as a float32 [N, D] array indexed by identity id."""
    bank = _read_bank(path)
    ids = np.asarray(bank.ids)
    if not np.array_equal(ids, np.arange(len(ids))):
        raise InputDataError(f"{path}: identity ids must be dense from 0 in order (the bank contract)")
    embeddings = np.asarray(bank.embeddings, dtype=np.float32)
    if max_ids is not None:
        embeddings = embeddings[:max_ids]
    return np.ascontiguousarray(embeddings)


def _read_bank(path: str):
    from synthface.identity.bank import read_bank

    return read_bank(path)
