"""Screens every bank passes, whatever its sampler.

- minimum separation: no two identities above ``max_pair_similarity``;
- novelty: no identity above ``max_gallery_similarity`` to any embedding of a
  real-identity gallery.

Offenders are rejected and redrawn by the sampler's ``redraw`` function, then
screened again, until the bank is clean or ``max_rounds`` is spent (an error:
the thresholds are too tight for the sampler). Of a too-close pair the higher
id is rejected, so the lower one keeps its vector. Only the redrawn rows and
the rows whose nearest neighbour was redrawn are re-scored against the whole
bank; the first round is the one full all-pairs pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from synthface.errors import ConfigError
from synthface.identity.config import ScreenConfig
from synthface.neighbours import max_similarity_to, top_k_neighbours

# redraw(ids, screen_round) -> float32[len(ids), d]
Redraw = Callable[[np.ndarray, int], np.ndarray]


@dataclass
class ScreenReport:
    rounds: int = 0
    rejected_separation: int = 0
    rejected_novelty: int = 0
    resampled: int = 0
    resampled_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def as_dict(self) -> dict:
        return {
            "rounds": self.rounds,
            "rejected_separation": self.rejected_separation,
            "rejected_novelty": self.rejected_novelty,
            "resampled": self.resampled,
        }


@dataclass
class ScreenedBank:
    embeddings: np.ndarray  # float32[N, d]
    nn_cosine: np.ndarray  # float32[N] (NaN when N = 1)
    nn_id: np.ndarray  # int64[N] (-1 when N = 1)
    gallery_cosine: np.ndarray | None  # float32[N], max cosine to the similarity gallery
    report: ScreenReport


def _nn_rows(x: torch.Tensor, rows: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact nearest other row (cosine, index) for the given rows of ``x``."""
    sims, idx = top_k_neighbours(x[rows], 2, others=x, block_size=block_size, device=x.device)
    # the best match of a row is usually itself: take the best one that is not
    is_self = idx[:, 0] == rows
    best_sim = torch.where(is_self, sims[:, 1], sims[:, 0])
    best_idx = torch.where(is_self, idx[:, 1], idx[:, 0])
    return best_sim, best_idx


def screen(
    embeddings: np.ndarray,
    cfg: ScreenConfig,
    redraw: Redraw,
    *,
    novelty_gallery: np.ndarray | None = None,
    similarity_gallery: np.ndarray | None = None,
    device: torch.device | None = None,
    block_size: int = 4096,
    nearest: bool = True,
) -> ScreenedBank:
    """Screen (and repair) ``embeddings``; returns them with their neighbour statistics.

    ``similarity_gallery`` is what ``gallery_cosine`` is measured against (the
    novelty gallery when given, else the sampler's gallery, else none).
    ``nearest=False``: the caller guarantees the separation and finds the
    nearest neighbours itself (a code bank, ``codes.py``), so only the novelty
    screen runs and ``nn_cosine`` / ``nn_id`` come back NaN / -1.
    """
    device = device or torch.device("cpu")
    x = torch.from_numpy(np.array(embeddings, dtype=np.float32, copy=True)).to(device)  # never edit the caller's array
    n = x.shape[0]
    report = ScreenReport()
    resampled = np.zeros(n, dtype=bool)
    check_pairs = cfg.max_pair_similarity is not None and n > 1 and nearest
    check_novelty = novelty_gallery is not None

    if n > 1 and nearest:
        sims, idx = top_k_neighbours(x, 1, block_size=block_size, device=device)
        nn_sim, nn_idx = sims[:, 0].clone(), idx[:, 0].clone()
    else:
        nn_sim = torch.full((n,), float("nan"), device=device)
        nn_idx = torch.full((n,), -1, dtype=torch.long, device=device)
    gal = novelty_gallery if novelty_gallery is not None else similarity_gallery
    gal_sim = None
    if gal is not None:
        gal_sim, _ = max_similarity_to(x, gal, block_size=block_size, device=device)

    for screen_round in range(cfg.max_rounds + 1):
        reject_sep = np.zeros(n, dtype=bool)
        if check_pairs:
            nn_np, idx_np = nn_sim.cpu().numpy(), nn_idx.cpu().numpy()
            # of a too-close pair, the higher id goes (the globally closest pair is
            # always a mutual pair, so every round makes progress)
            reject_sep = (nn_np > cfg.max_pair_similarity) & (idx_np < np.arange(n))
        reject_nov = np.zeros(n, dtype=bool)
        if check_novelty:
            reject_nov = gal_sim > cfg.max_gallery_similarity
        rejected = np.nonzero(reject_sep | reject_nov)[0]
        if len(rejected) == 0:
            break
        if screen_round == cfg.max_rounds:
            raise ConfigError(_too_tight(cfg, reject_sep.sum(), reject_nov.sum(), cfg.max_rounds))
        report.rounds = screen_round + 1
        report.rejected_separation += int(reject_sep.sum())
        report.rejected_novelty += int((reject_nov & ~reject_sep).sum())
        report.resampled += len(rejected)
        resampled[rejected] = True

        fresh = np.ascontiguousarray(redraw(rejected, screen_round + 1), dtype=np.float32)
        rej_t = torch.from_numpy(rejected).to(device)
        x[rej_t] = torch.from_numpy(fresh).to(device)
        if gal is not None:
            gal_sim[rejected], _ = max_similarity_to(fresh, gal, block_size=block_size, device=device)
        if n > 1 and nearest:
            nn_sim, nn_idx = _update_neighbours(x, nn_sim, nn_idx, rej_t, block_size)

    report.resampled_ids = np.nonzero(resampled)[0]
    return ScreenedBank(
        embeddings=x.cpu().numpy(),
        nn_cosine=nn_sim.cpu().numpy().astype(np.float32),
        nn_id=nn_idx.cpu().numpy().astype(np.int64),
        gallery_cosine=None if gal_sim is None else gal_sim.astype(np.float32),
        report=report,
    )


def _update_neighbours(
    x: torch.Tensor, nn_sim: torch.Tensor, nn_idx: torch.Tensor, changed: torch.Tensor, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest neighbours after rows ``changed`` got new vectors, without a full pass."""
    n = x.shape[0]
    stale = torch.zeros(n, dtype=torch.bool, device=x.device)
    stale[changed] = True
    stale |= stale[nn_idx]  # rows whose neighbour moved away must search again
    # rows that keep their neighbour may still have a closer one among the new vectors
    keep = torch.nonzero(~stale).squeeze(1)
    if keep.numel():
        new_sims, new_idx = top_k_neighbours(x[keep], 1, others=x[changed], block_size=block_size, device=x.device)
        closer = new_sims[:, 0] > nn_sim[keep]
        nn_sim[keep[closer]] = new_sims[closer, 0]
        nn_idx[keep[closer]] = changed[new_idx[closer, 0]]
    redo = torch.nonzero(stale).squeeze(1)
    if redo.numel():
        nn_sim[redo], nn_idx[redo] = _nn_rows(x, redo, block_size)
    return nn_sim, nn_idx


def _too_tight(cfg: ScreenConfig, n_sep: int, n_nov: int, rounds: int) -> str:
    parts = []
    if n_sep:
        parts.append(
            f"{int(n_sep)} identities still above identity.screen.max_pair_similarity={cfg.max_pair_similarity}"
        )
    if n_nov:
        parts.append(
            f"{int(n_nov)} identities still above identity.screen.max_gallery_similarity={cfg.max_gallery_similarity}"
        )
    return (
        f"identity.screen: after {rounds} resample rounds, " + " and ".join(parts)
        + "; loosen the threshold or raise identity.screen.max_rounds"
    )
