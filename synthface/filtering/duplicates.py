"""Duplicate identities across a whole dataset: which classes to drop, decided from class centres.

The rule is the shard job's inter-class rule (``IdentityFilter.inter_class_matches``)
applied to every class of the dataset at once: classes are taken in id order, and a
class whose centre is at least ``tau_inter`` similar to an earlier class that was kept
is dropped as a duplicate of the most similar such class. The earlier id wins, so the
decision depends only on the centres and the ids, never on shard boundaries or on the
order the shards were read in. Dropping a class that was not kept changes nothing for
the others (each decision looks only at earlier *kept* classes), so the rule can be
applied again to the remaining classes and finds nothing: finalising is idempotent.

Cost: one similarity search over K centres (:func:`close_pairs`, the project's one
nearest-neighbour helper ``synthface.neighbours.pairs_above``, exact: blocked, bounded
memory, CUDA when given), then work linear in the number of close pairs. At 1M classes
the search is the whole cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DUPLICATE_REASON = "inter_class_duplicate"


def neighbours(x: np.ndarray, k: int, others: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar rows of ``others`` (default ``x`` itself, self excluded) for each
    row of ``x``: (cosines float32[N, k] descending, indices int64[N, k]). Exact; numpy out
    (the audit's closest-face search).
    """
    from synthface.neighbours import top_k_neighbours

    sims, idx = top_k_neighbours(x, k, others=others)
    return sims.cpu().numpy(), idx.cpu().numpy()


def close_pairs(x: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` of rows of ``x`` (unit norm) with cosine >= ``tau``:
    (i int64[P], j int64[P], cosine float32[P]), sorted by (i, j)."""
    from synthface.neighbours import pairs_above, resolve_device

    # all pairs of K centres is O(K^2): ~2 h at 1M on two CPU cores, seconds on a GPU
    pairs = pairs_above(np.ascontiguousarray(x, np.float32), tau, device=resolve_device("auto"))
    order = np.lexsort((pairs.j, pairs.i))
    return pairs.i[order], pairs.j[order], pairs.sims[order]


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
