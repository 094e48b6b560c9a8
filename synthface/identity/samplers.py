"""Identity samplers: where the raw identity vectors come from.

- ``uniform``: normalised Gaussian, i.e. uniform on the sphere.
- ``packed``: uniform start, then HyperFace-style packing (``packing.py``).
- ``gallery``: new identities around gallery embeddings, inside a cosine band.

Every draw is keyed by (run seed, block or identity id, purpose) through
``synthface.seeds``, never by call order: identity ``i`` of a uniform or gallery
bank is the same vector whatever N is, and a redraw of identity ``i`` in screen
round ``r`` is the same on every rerun.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from synthface import seeds
from synthface.errors import ConfigError
from synthface.identity.config import EMBEDDING_DIM, GallerySamplerConfig

# Identities drawn per random stream. Fixed, so identity i's vector does not
# depend on N (a stream always draws a whole block and the bank slices it).
DRAW_BLOCK = 1024


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def uniform_vectors(run_seed: int, n: int, dim: int = EMBEDDING_DIM) -> np.ndarray:
    """``n`` unit vectors uniform on the sphere; row i depends only on (seed, i)."""
    out = np.empty((n, dim), dtype=np.float32)
    for block_start in range(0, n, DRAW_BLOCK):
        gen = seeds.rng(run_seed, block_start // DRAW_BLOCK, purpose="identity.uniform")
        block = gen.standard_normal((DRAW_BLOCK, dim))
        stop = min(block_start + DRAW_BLOCK, n)
        out[block_start:stop] = normalise(block[: stop - block_start])
    return out


def redraw_uniform(run_seed: int, ids: np.ndarray, screen_round: int, dim: int = EMBEDDING_DIM) -> np.ndarray:
    """Fresh uniform vectors for identities rejected by a screen in ``screen_round``."""
    out = np.empty((len(ids), dim), dtype=np.float32)
    for row, identity in enumerate(ids):
        gen = seeds.rng(run_seed, int(identity), screen_round, purpose="identity.redraw")
        out[row] = normalise(gen.standard_normal(dim))
    return out


@dataclass
class BandDraws:
    vectors: np.ndarray  # float32[n, d]
    anchors: np.ndarray  # int64[n]: gallery row each identity was drawn around
    redraws: int  # draws that fell outside the band and were drawn again


def auto_concentration(centre: float, dim: int = EMBEDDING_DIM) -> float:
    """vMF kappa whose cosine-to-mean density peaks at ``centre``.

    The density of w = cos(x, mu) is proportional to exp(kappa w) (1 - w^2)^((d-3)/2);
    setting its derivative to zero at w = centre gives kappa = (d-3) c / (1 - c^2).
    """
    return max((dim - 3) * centre / (1.0 - centre * centre), 1e-6)


def auto_sigma(centre: float) -> float:
    """Gaussian noise norm s with cos(a, normalise(a + s u)) ~ 1/sqrt(1 + s^2) = centre."""
    if centre <= 0:
        raise ConfigError(
            "identity.gallery_sampler: method 'gaussian' needs a band centre above 0; "
            "set identity.gallery_sampler.sigma or use method 'vmf'"
        )
    return math.sqrt(1.0 / (centre * centre) - 1.0)


def _draw_around(anchors: np.ndarray, cfg: GallerySamplerConfig, gen: np.random.Generator) -> np.ndarray:
    """One draw around each anchor row (unit vectors) by the configured method."""
    n, dim = anchors.shape
    centre = 0.5 * (cfg.min_similarity + cfg.max_similarity)
    if cfg.method == "gaussian":
        sigma = cfg.sigma if cfg.sigma is not None else auto_sigma(centre)
        return normalise(anchors + sigma * gen.standard_normal((n, dim)) / math.sqrt(dim))
    from scipy.stats import vonmises_fisher

    kappa = cfg.concentration if cfg.concentration is not None else auto_concentration(centre, dim)
    # vMF around the first basis vector: its first coordinate is cos(x, mean); the
    # rest is a uniformly random direction. Re-seat that direction in the tangent
    # space of each anchor.
    mean = np.zeros(dim)
    mean[0] = 1.0
    base = vonmises_fisher(mean, kappa).rvs(n, random_state=gen).reshape(n, dim)
    w = np.clip(base[:, :1], -1.0, 1.0)
    tangent = gen.standard_normal((n, dim))
    tangent -= (tangent * anchors).sum(1, keepdims=True) * anchors
    tangent = tangent / np.linalg.norm(tangent, axis=1, keepdims=True)
    return normalise(w * anchors + np.sqrt(1.0 - w * w) * tangent)


def gallery_vectors(
    run_seed: int,
    ids: np.ndarray,
    gallery: np.ndarray,
    cfg: GallerySamplerConfig,
    *,
    purpose: str = "identity.gallery",
    round_key: int = 0,
) -> BandDraws:
    """Draw one identity per id around a random gallery row, cosine inside the band.

    Draws outside [min_similarity, max_similarity] are drawn again (a new anchor
    each time) up to ``cfg.max_draws`` times.
    """
    ids = np.asarray(ids, dtype=np.int64)
    n, dim = len(ids), gallery.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    anchors_out = np.full(n, -1, dtype=np.int64)
    redraws = 0
    # group ids by draw block, so each block is one random stream per attempt
    blocks = ids // DRAW_BLOCK
    for block in np.unique(blocks):
        rows = np.nonzero(blocks == block)[0]
        offsets = ids[rows] - block * DRAW_BLOCK
        pending = np.ones(len(rows), dtype=bool)
        for attempt in range(cfg.max_draws):
            gen = seeds.rng(run_seed, int(block), round_key, attempt, purpose=purpose)
            anchor_idx = gen.integers(0, len(gallery), size=DRAW_BLOCK)
            draws = _draw_around(gallery[anchor_idx], cfg, gen)
            cos = (draws * gallery[anchor_idx]).sum(1)
            ok = (cos >= cfg.min_similarity) & (cos <= cfg.max_similarity)
            take = pending & ok[offsets]
            out[rows[take]] = draws[offsets[take]]
            anchors_out[rows[take]] = anchor_idx[offsets[take]]
            redraws += int((pending & ~ok[offsets]).sum())
            pending &= ~take
            if not pending.any():
                break
        if pending.any():
            raise ConfigError(
                f"identity.gallery_sampler: {int(pending.sum())} identities found no draw with cosine in "
                f"[{cfg.min_similarity}, {cfg.max_similarity}] after {cfg.max_draws} draws; widen the band "
                "or set identity.gallery_sampler.concentration / sigma to match it"
            )
    return BandDraws(out, anchors_out, redraws)
