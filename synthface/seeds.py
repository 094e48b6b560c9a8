"""Deterministic randomness.

Every random draw in the factory is keyed by explicit integers (the run seed,
an identity id, an image index, and a purpose tag), never by the order in which
work happens. So an image is identical whatever worker, batch or rerun
produces it.
"""

from __future__ import annotations

import zlib

import numpy as np


def _tag(purpose: str) -> int:
    # crc32 is stable across processes and Python versions (unlike hash()).
    return zlib.crc32(purpose.encode("utf-8"))


def derive_seed(run_seed: int, *keys: int, purpose: str = "") -> int:
    """A 63-bit seed derived from ``run_seed``, ``keys`` and a purpose string."""
    entropy = [int(run_seed) & 0xFFFFFFFFFFFFFFFF, _tag(purpose)] + [int(k) for k in keys]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def rng(run_seed: int, *keys: int, purpose: str = "") -> np.random.Generator:
    """A numpy Generator seeded by :func:`derive_seed`."""
    return np.random.default_rng(derive_seed(run_seed, *keys, purpose=purpose))


def image_seed(run_seed: int, identity_id: int, image_index: int) -> int:
    """The seed of one generated image (its initial latent noise)."""
    return derive_seed(run_seed, identity_id, image_index, purpose="image")
