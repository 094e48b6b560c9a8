"""Intra-class condition jitter: one perturbed identity vector per image.

Generation conditions image ``j`` of identity ``i`` on ``jitter_identity(e_i, seed,
i, j)`` instead of ``e_i`` itself, so the images of one identity vary (pose,
expression, light) while staying that identity. As in Vec2Face, the noise scale
of each image is drawn from a small mix of sigmas (0.3 / 0.5 / 0.7 by default).

Here sigma is the norm of the noise relative to the unit identity vector: the
noise is ``sigma * z / sqrt(d)`` with z standard normal, restricted to the
tangent space of the identity (a radial part would only be normalised away),
so cos(jittered, identity) ~ 1 / sqrt(1 + sigma^2): 0.96, 0.89, 0.82. When a
draw would fall below the floor ``min_similarity`` the noise is shrunk onto the
floor, so the floor always holds.

Deterministic: the draw is keyed by (run seed, identity id, image index) only,
never by batch composition or call order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from synthface import seeds
from synthface.identity.config import JitterConfig

# Shrink onto a hair above the floor, so float32 rounding cannot cross it.
_FLOOR_MARGIN = 1e-5


def _max_tangent_norm(floor: float) -> float:
    floor = min(floor + _FLOOR_MARGIN, 1.0)
    return math.sqrt(max(1.0 - floor * floor, 0.0)) / floor


def _draw(run_seed: int, identity_id: int, image_index: int, dim: int, cfg: JitterConfig) -> tuple[float, np.ndarray]:
    gen = seeds.rng(run_seed, identity_id, image_index, purpose="identity.jitter")
    weights = np.asarray(cfg.weights if cfg.weights is not None else [1.0] * len(cfg.sigmas), dtype=np.float64)
    sigma = float(gen.choice(np.asarray(cfg.sigmas, dtype=np.float64), p=weights / weights.sum()))
    return sigma, gen.standard_normal(dim)


def _apply(unit: np.ndarray, sigma: np.ndarray, z: np.ndarray, cfg: JitterConfig) -> np.ndarray:
    """unit: float64[B,d] identities; sigma: [B]; z: [B,d] standard normal."""
    dim = unit.shape[1]
    tangent = z - (z * unit).sum(1, keepdims=True) * unit
    noise = sigma[:, None] * tangent / math.sqrt(dim)
    norm = np.linalg.norm(noise, axis=1, keepdims=True)
    limit = _max_tangent_norm(cfg.min_similarity)
    scale = np.where(norm > limit, limit / np.maximum(norm, 1e-300), 1.0)
    out = unit + noise * scale
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected identity vectors of shape (B, d), got {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if not np.isfinite(x).all() or (norms < 1e-12).any():
        raise ValueError("identity vectors must be finite and non-zero")
    return x / norms


def jitter_identity(
    embedding: np.ndarray, run_seed: int, identity_id: int, image_index: int, cfg: JitterConfig
) -> np.ndarray:
    """The conditioning vector of image ``image_index`` of identity ``identity_id``: unit float32[d]."""
    unit = _unit_rows(np.asarray(embedding)[None, :])
    if not cfg.enabled:
        return unit[0].astype(np.float32)
    sigma, z = _draw(run_seed, identity_id, image_index, unit.shape[1], cfg)
    return _apply(unit, np.array([sigma]), z[None, :], cfg)[0]


def jitter_identities(
    embeddings: np.ndarray,
    run_seed: int,
    identity_ids: Sequence[int],
    image_indices: Sequence[int],
    cfg: JitterConfig,
) -> np.ndarray:
    """Batched :func:`jitter_identity`: row b is exactly ``jitter_identity(embeddings[b], seed,
    identity_ids[b], image_indices[b], cfg)``. Returns unit float32[B, d]."""
    unit = _unit_rows(embeddings)
    if not (len(identity_ids) == len(image_indices) == unit.shape[0]):
        raise ValueError("embeddings, identity_ids and image_indices must have the same length")
    if not cfg.enabled:
        return unit.astype(np.float32)
    draws = [_draw(run_seed, int(i), int(j), unit.shape[1], cfg) for i, j in zip(identity_ids, image_indices)]
    sigma = np.array([s for s, _ in draws])
    z = np.stack([d for _, d in draws]) if draws else np.zeros_like(unit)
    return _apply(unit, sigma, z, cfg)


def sigma_for(run_seed: int, identity_id: int, image_index: int, cfg: JitterConfig) -> float:
    """The sigma drawn for one image (for sample metadata)."""
    if not cfg.enabled:
        return 0.0
    return _draw(run_seed, identity_id, image_index, 1, cfg)[0]
