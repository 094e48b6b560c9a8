"""Duplicate identities across a whole dataset: which classes to drop, decided from class centres.

The rule is the shard job's inter-class rule (``IdentityFilter.inter_class_matches``)
applied to every class of the dataset at once: classes are taken in id order, and a
class whose centre is at least ``tau_inter`` similar to an earlier class that was kept
is dropped as a duplicate of the most similar such class. The earlier id wins, so the
decision depends only on the centres and the ids, never on shard boundaries or on the
order the shards were read in. Dropping a class that was not kept changes nothing for
the others (each decision looks only at earlier *kept* classes), so the rule can be
applied again to the remaining classes and finds nothing: finalising is idempotent.

Cost: one similarity search over K centres (:func:`close_pairs`), then work linear in
the number of close pairs. At 1M classes the search is the whole cost. The search goes
through :func:`neighbours` (exact, synthface/neighbours.py); the project's one
nearest-neighbour helper (issue 15: ``pairs_above`` with exact and approximate modes)
replaces the body of :func:`close_pairs` in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DUPLICATE_REASON = "inter_class_duplicate"
# neighbours fetched per class at first; rows whose k-th neighbour is still above the
# threshold are searched again with twice as many, so no close pair is ever cut off
FIRST_K = 8


def neighbours(x: np.ndarray, k: int, others: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar rows of ``others`` (default ``x`` itself, self excluded) for each
    row of ``x``: (cosines float32[N, k] descending, indices int64[N, k]). Exact.

    The one place the nearest-neighbour code is called: swap it here.
    """
    from synthface.neighbours import top_k_neighbours

    sims, idx = top_k_neighbours(x, k, others=others)
    return sims.cpu().numpy(), idx.cpu().numpy()


def close_pairs(x: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` of rows of ``x`` (unit norm) with cosine >= ``tau``:
    (i int64[P], j int64[P], cosine float32[P]), sorted by (i, j)."""
    x = np.ascontiguousarray(x, np.float32)
    n = len(x)
    empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))
    if n < 2:
        return empty
    k = min(FIRST_K, n - 1)
    sims, idx = neighbours(x, k)
    found_i, found_j, found_s = [], [], []
    rows = np.arange(n)
    while True:
        keep = sims >= tau
        r = np.repeat(rows, keep.sum(axis=1))
        found_i.append(r)
        found_j.append(idx[keep])
        found_s.append(sims[keep])
        # rows whose last neighbour still passes may have more close ones: ask again for more
        truncated = rows[(sims[:, -1] >= tau)] if sims.shape[1] == k else rows[:0]
        if len(truncated) == 0 or k >= n - 1:
            break
        k = min(2 * k, n - 1)
        sims, idx = neighbours(x[truncated], k + 1, others=x)  # includes the row itself
        not_self = idx != truncated[:, None]
        # drop the self match (or the last column if self was not among them: a tie)
        order = np.argsort(~not_self, axis=1, kind="stable")[:, :k]
        sims, idx = np.take_along_axis(sims, order, 1), np.take_along_axis(idx, order, 1)
        rows = truncated
    i = np.concatenate(found_i).astype(np.int64)
    j = np.concatenate(found_j).astype(np.int64)
    s = np.concatenate(found_s).astype(np.float32)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    valid = lo != hi
    pairs = {}
    for a, b, c in zip(lo[valid].tolist(), hi[valid].tolist(), s[valid].tolist()):
        pairs[(a, b)] = max(c, pairs.get((a, b), -2.0))  # the same pair seen from both ends
    if not pairs:
        return empty
    keys = sorted(pairs)
    return (
        np.array([a for a, _ in keys], np.int64),
        np.array([b for _, b in keys], np.int64),
        np.array([pairs[key] for key in keys], np.float32),
    )


@dataclass(frozen=True)
class Duplicate:
    """Class ``id`` is dropped as a duplicate of the kept class ``of`` (cosine of their centres)."""

    id: int
    of: int
    similarity: float


def find_duplicates(ids: np.ndarray, centres: np.ndarray, tau: float) -> dict[int, Duplicate]:
    """The classes to drop: {id: Duplicate}, by the earlier-id-wins rule described above."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    centres = np.asarray(centres, np.float32)
    if centres.ndim != 2 or len(centres) != len(ids):
        raise ValueError(f"expected centres [K, D] for K={len(ids)} ids, got {centres.shape}")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("class ids must be unique")
    unit = centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    a, b, sims = close_pairs(unit, tau)
    earlier: dict[int, list[tuple[int, float]]] = {}  # class id -> [(earlier class id, cosine)]
    for ia, ib, s in zip(ids[a].tolist(), ids[b].tolist(), sims.tolist()):
        lo, hi = min(ia, ib), max(ia, ib)
        earlier.setdefault(hi, []).append((lo, s))
    dropped: dict[int, Duplicate] = {}
    for cid in sorted(earlier):
        kept = [(s, -other) for other, s in earlier[cid] if other not in dropped]
        if kept:
            s, neg_other = max(kept)  # most similar kept class; on a tie the earlier id
            dropped[cid] = Duplicate(cid, -neg_other, float(s))
    return dropped
