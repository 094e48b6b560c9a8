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
nearest-neighbour helper ``synthface.neighbours.pairs_above``), then work linear in the
number of close pairs. At 1M classes the search is the whole cost, so
:func:`choose_search` picks how it runs:

- ``exact``: blocked fp32 products (bounded memory), on CUDA when the machine has one,
  and on a CPU for up to ``SKETCH_MIN_CLASSES`` classes (seconds);
- ``sketch``: above that on a CPU, sign sketches propose and exact fp32 re-scoring
  decides: no false duplicate, and a pair at or above tau_inter is missed with
  probability at most ``SketchSettings.miss_rate`` (1e-6), 5.7x less CPU time than exact on
  a CPU. It is used only while tau_inter is high enough that unrelated centres are
  rarely proposed (``MAX_SKETCH_CANDIDATE_RATE``); otherwise exact.

Both are deterministic (the sketches are seeded), so finalising stays idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DUPLICATE_REASON = "inter_class_duplicate"
# Up to this many classes a CPU runs the exact search (18 s for 50K centres on 2 cores).
SKETCH_MIN_CLASSES = 50_000
# The sketch re-scores the unrelated pairs it proposes; above this fraction it stops paying.
MAX_SKETCH_CANDIDATE_RATE = 1e-4


def neighbours(x: np.ndarray, k: int, others: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar rows of ``others`` (default ``x`` itself, self excluded) for each
    row of ``x``: (cosines float32[N, k] descending, indices int64[N, k]). Exact; numpy out
    (the audit's closest-face search).
    """
    from synthface.neighbours import top_k_neighbours

    sims, idx = top_k_neighbours(x, k, others=others)
    return sims.cpu().numpy(), idx.cpu().numpy()


def choose_search(num_classes: int, tau: float, device_type: str | None = None) -> str:
    """``exact`` or ``sketch`` for a duplicate search over ``num_classes`` centres (module doc)."""
    from synthface.neighbours import resolve_device, sketch_candidate_rate

    device_type = device_type or resolve_device("auto").type
    if device_type == "cuda" or num_classes <= SKETCH_MIN_CLASSES:
        return "exact"
    return "sketch" if sketch_candidate_rate(tau) <= MAX_SKETCH_CANDIDATE_RATE else "exact"


def search_record(method: str, tau: float) -> dict:
    """What finalising writes about its search (finalise.json): the method and, for the sketch, its bound."""
    from synthface.neighbours import SketchSettings, sketch_radius

    if method != "sketch":
        return {"method": method}
    s = SketchSettings()
    return {"method": method, "bits": s.bits, "radius": sketch_radius(tau, s), "miss_rate_bound": s.miss_rate}


def close_pairs(x: np.ndarray, tau: float, search: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` of rows of ``x`` (unit norm) with cosine >= ``tau``:
    (i int64[P], j int64[P], cosine float32[P]), sorted by (i, j). ``search``: ``auto``
    (:func:`choose_search`), ``exact`` or ``sketch``."""
    from synthface.neighbours import pairs_above, resolve_device

    device = resolve_device("auto")
    mode = choose_search(len(x), tau, device.type) if search == "auto" else search
    pairs = pairs_above(np.ascontiguousarray(x, np.float32), tau, mode=mode, device=device)
    order = np.lexsort((pairs.j, pairs.i))
    return pairs.i[order], pairs.j[order], pairs.sims[order]


@dataclass(frozen=True)
class Duplicate:
    """Class ``id`` is dropped as a duplicate of the kept class ``of`` (cosine of their centres)."""

    id: int
    of: int
    similarity: float


def find_duplicates(ids: np.ndarray, centres: np.ndarray, tau: float, search: str = "auto") -> dict[int, Duplicate]:
    """The classes to drop: {id: Duplicate}, by the earlier-id-wins rule described above
    (``search``: see :func:`close_pairs`)."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    centres = np.asarray(centres, np.float32)
    if centres.ndim != 2 or len(centres) != len(ids):
        raise ValueError(f"expected centres [K, D] for K={len(ids)} ids, got {centres.shape}")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("class ids must be unique")
    unit = centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    a, b, sims = close_pairs(unit, tau, search)
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
