"""HyperFace-style packing of identity vectors on the unit sphere.

Goal: maximise the smallest angle between any two identities (minimise the
largest pairwise cosine), optionally while pulling each identity towards its
nearest gallery embedding so the points stay on the face manifold.

All-pairs gradients cost N^2 per step, which is out of reach at 100k on a CPU.
The close pairs are what matter, and each identity moves only a little, so the
optimisation works on a nearest-neighbour graph instead:

1. a *round* starts with one exact all-pairs pass (blocked, see
   ``neighbours.py``) that lists each identity's ``k`` nearest neighbours;
2. each *step* pushes identities away from their listed neighbours with
   weights ``exp(sharpness * (cos - max cos))``: a soft maximum, so the closest
   pairs in the whole bank get the push and pairs far below it get none;
3. only rows whose closest listed pair is near the current maximum move, so
   a step touches a small active set (sparse CSR products, no N x k x d copy);
   every ``check_every`` steps all listed pairs are re-scored to update it.

The step size decays to zero (cosine schedule) so the bank settles. With the
gallery regulariser every row feels the pull, so every row is active.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from synthface.identity.config import PackedConfig
from synthface.neighbours import as_tensor, max_similarity_to, pair_cosines, top_k_neighbours

Progress = Callable[[str, int, int], None]

# A row joins the active set when its closest listed pair is within this many
# "temperatures" of the bank's maximum: exp(-8) ~ 3e-4 of the top push.
_ACTIVE_TEMPERATURES = 8.0


@dataclass
class PackingReport:
    rounds: int
    steps: int
    mean_active_rows: float
    start_max_cosine: float
    end_max_listed_cosine: float


def pack(
    start: np.ndarray,
    cfg: PackedConfig,
    *,
    gallery: np.ndarray | None = None,
    device: torch.device | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, PackingReport]:
    """Pack ``start`` (float32[N, d], unit rows); returns the packed rows and a report."""
    device = device or torch.device("cpu")
    x = as_tensor(start, device).clone()
    n = x.shape[0]
    use_gallery = gallery is not None and cfg.gallery_weight > 0
    g = as_tensor(gallery, device) if use_gallery else None
    k = min(cfg.neighbours, n - 1)
    total = cfg.rounds * cfg.steps
    if n < 2 or k < 1 or total == 0:
        return x.cpu().numpy(), PackingReport(cfg.rounds, 0, 0.0, float("nan"), float("nan"))

    margin = _ACTIVE_TEMPERATURES / cfg.sharpness
    active_counts: list[int] = []
    start_max = float("nan")
    listed_max = float("nan")
    step = 0
    for round_index in range(cfg.rounds):
        if progress:
            progress("neighbours", step, total)
        sims, nbr = top_k_neighbours(x, k, block_size=cfg.block_size, device=device)
        if round_index == 0:
            start_max = float(sims[:, 0].max())
        anchors = None
        if use_gallery:
            _, anchor_idx = max_similarity_to(x, g, block_size=cfg.block_size, device=device)
            anchors = g[torch.from_numpy(anchor_idx).to(device)]
        active = torch.arange(n, device=device)
        for inner in range(cfg.steps):
            if inner % cfg.check_every == 0 and not use_gallery:
                row_max = _row_max_listed(x, nbr, cfg.block_size)
                listed_max = float(row_max.max())
                active = torch.nonzero(row_max > listed_max - margin).squeeze(1)
            lr = cfg.step_size * 0.5 * (1.0 + math.cos(math.pi * step / total))
            listed_max = _step(x, nbr, active, anchors, cfg, lr)
            active_counts.append(int(active.numel()))
            step += 1
            if progress and (step % 10 == 0 or step == total):
                progress("packing", step, total)
    row_max = _row_max_listed(x, nbr, cfg.block_size)
    report = PackingReport(
        rounds=cfg.rounds,
        steps=step,
        mean_active_rows=float(np.mean(active_counts)) if active_counts else 0.0,
        start_max_cosine=start_max,
        end_max_listed_cosine=float(row_max.max()),
    )
    return x.cpu().numpy(), report


def _row_max_listed(x: torch.Tensor, nbr: torch.Tensor, block_size: int) -> torch.Tensor:
    """The largest cosine of each row to its listed neighbours."""
    out = torch.empty(x.shape[0], device=x.device)
    for s in range(0, x.shape[0], block_size):
        out[s : s + block_size] = pair_cosines(x[s : s + block_size], x, nbr[s : s + block_size]).amax(1)
    return out


def _step(
    x: torch.Tensor,
    nbr: torch.Tensor,
    active: torch.Tensor,
    anchors: torch.Tensor | None,
    cfg: PackedConfig,
    lr: float,
) -> float:
    """One projected-gradient step on the active rows (in place); returns their max listed cosine."""
    if active.numel() == 0:
        return float("nan")
    k = nbr.shape[1]
    xa = x[active]
    listed = nbr[active]
    cos = pair_cosines(xa, x, listed).reshape(-1)  # cosines of the listed pairs only
    top = cos.max()
    weights = torch.exp(cfg.sharpness * (cos - top))  # soft maximum: the closest pairs get the push
    crow = torch.arange(0, active.numel() * k + 1, k, device=x.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        push = torch.sparse_csr_tensor(crow, listed.reshape(-1), weights, size=(active.numel(), x.shape[0])) @ x
    grad = push
    if anchors is not None:
        grad = grad - cfg.gallery_weight * anchors[active]
    # project on the tangent space of the sphere, step and renormalise
    grad = grad - (grad * xa).sum(1, keepdim=True) * xa
    xa = torch.nn.functional.normalize(xa - lr * grad, dim=1)
    x[active] = xa
    return float(top)
