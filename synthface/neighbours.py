"""Nearest neighbours on the unit sphere: the one helper of the whole project.

Bank packing, the identity screens, bank statistics and the dataset-wide
duplicate check all ask the same questions of unit vectors (cosine = inner
product): "the k most similar rows of each row" and "every pair above a
threshold". Two modes answer them:

- ``exact``: blocked matrix products in torch (CUDA when present), memory
  bounded by ``block_size`` x ``column_block`` scores at a time. The block
  products run in bfloat16 where the hardware has fast bf16 matmul (CUDA, or
  CPUs with AVX512-BF16/AMX); bf16 only *proposes* a few extra candidates per
  row, which are re-scored exactly in fp32, so results are exact.
- ``approx``: faiss IVF-Flat (inverted lists over k-means cells, inner
  product); each query scans ``nprobe`` of ``nlist`` cells. Cheap where the
  vectors cluster (face embeddings, class centres); on vectors spread
  uniformly over the sphere it scans about as much as exact search for the
  same recall (docs/identity.md has the figures), so the identity banks use
  ``exact``. ``measure_recall`` reports what an approximate search found of
  the exact answer on a sample of queries.
- ``sketch`` (``pairs_above`` only): sign sketches. Each row becomes ``bits``
  signs of random projections (SimHash); two rows at angle theta differ in
  each sign with probability theta / pi, independently, so their Hamming
  distance is Binomial(bits, theta / pi). faiss's binary index scans all
  pairs' Hamming distances (64 bytes per row at 512 bits: 5.7x less CPU
  time than the exact fp32 products for 200K class centres on this CPU) and proposes the pairs within a radius
  chosen from the binomial tail, and every proposed pair is re-scored exactly
  in fp32. So no reported pair is below the threshold, and a pair at or
  above it is missed with probability at most ``miss_rate`` (a bound, not an
  estimate). It pays when the threshold is far above the typical cosine of
  unrelated rows (duplicate class centres: tau_inter 0.6 against ~0.04 for
  unrelated 512-d identities); ``sketch_candidate_rate`` says how many
  unrelated pairs it would propose. The sketches are seeded, so the same rows
  always give the same pairs (finalising stays idempotent).

Cost of exact search: one N x M x d product (half of it for a self-search:
the similarity matrix is symmetric).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from synthface.errors import ConfigError

Mode = Literal["exact", "approx"]
PairsMode = Literal["exact", "approx", "sketch"]

# Extra candidates per row re-scored in fp32: bf16 cosines are off by ~1e-3 at
# most, far less than the usual gap between the k-th and (k+4)-th neighbour.
_EXTRA_CANDIDATES = 4
# Columns scored at once against a block of rows (block_size x this many floats).
COLUMN_BLOCK = 65_536


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; asking for CUDA without one is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("identity.device: 'cuda' was asked for but no CUDA device is available")
    return torch.device(name)


@functools.lru_cache(maxsize=None)
def _fast_bf16(device_type: str) -> bool:
    if device_type == "cuda":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def search_dtype(device: torch.device) -> torch.dtype:
    """The dtype of the candidate search on ``device``."""
    return torch.bfloat16 if _fast_bf16(device.type) else torch.float32


def as_tensor(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return x.to(device=device, dtype=torch.float32)


def pair_cosines(x: torch.Tensor, y: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Exact fp32 cosines float32[n, k] between each row of ``x`` and its candidate rows ``y[cand]``.

    A sampled dense-dense product (SDDMM) on a CSR pattern: it reads each
    candidate row once instead of materialising the n x k x d gather (about 5x
    faster on a CPU for k = 16).
    """
    n, k = cand.shape
    if n == 0 or k == 0:
        return torch.empty((n, k), device=x.device)
    crow = torch.arange(0, n * k + 1, k, device=x.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        pattern = torch.sparse_csr_tensor(
            crow, cand.reshape(-1), torch.ones(n * k, device=x.device), size=(n, y.shape[0])
        )
        return torch.sparse.sampled_addmm(pattern, x, y.T, beta=0.0).values().reshape(n, k)


def _merge_top(best_val, best_idx, vals, idx, k):
    all_val = torch.cat([best_val, vals.float()], dim=1)
    all_idx = torch.cat([best_idx, idx], dim=1)
    top_val, order = all_val.topk(min(k, all_val.shape[1]), dim=1)
    return top_val, all_idx.gather(1, order)


def _cross_candidates(
    xq: torch.Tensor, y: torch.Tensor, n_cand: int, dtype: torch.dtype, column_block: int
) -> torch.Tensor:
    """Indices of the ``n_cand`` best rows of ``y`` for each row of ``xq``, tiling ``y`` in column blocks."""
    n, device = xq.shape[0], xq.device
    best_val = torch.full((n, 0), -torch.inf, device=device)
    best_idx = torch.full((n, 0), -1, dtype=torch.long, device=device)
    xs = xq.to(dtype)
    for c in range(0, y.shape[0], column_block):
        scores = xs @ y[c : c + column_block].to(dtype).T
        vals, idx = scores.topk(min(n_cand, scores.shape[1]), dim=1)
        best_val, best_idx = _merge_top(best_val, best_idx, vals, idx + c, n_cand)
    return best_idx


def top_k_neighbours(
    x: np.ndarray | torch.Tensor,
    k: int,
    *,
    others: np.ndarray | torch.Tensor | None = None,
    block_size: int = 4096,
    column_block: int = COLUMN_BLOCK,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact: the ``k`` most similar rows of ``others`` (default: ``x`` itself, self excluded)
    for every row of ``x``: (cosines float32[N,k] descending, indices int64[N,k]).

    Rows are assumed unit-norm. Memory: ``block_size`` x ``column_block``
    scores at a time, plus the outputs.
    """
    device = device or (x.device if isinstance(x, torch.Tensor) else torch.device("cpu"))
    xt = as_tensor(x, device)
    self_search = others is None
    yt = xt if self_search else as_tensor(others, device)
    n, m = xt.shape[0], yt.shape[0]
    k_eff = min(k, m - 1 if self_search else m)
    if k_eff <= 0:
        empty = torch.empty((n, 0), device=device)
        return empty, empty.long()
    n_cand = min(k_eff + _EXTRA_CANDIDATES, m - 1 if self_search else m)
    dtype = search_dtype(device)
    sims_out = torch.empty((n, k_eff), device=device)
    idx_out = torch.empty((n, k_eff), device=device, dtype=torch.long)
    cand = _self_candidates(xt, n_cand, block_size, dtype) if self_search else None
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        if self_search:
            block_cand = cand[start:stop]
        else:
            block_cand = _cross_candidates(xt[start:stop], yt, n_cand, dtype, column_block)
        exact = pair_cosines(xt[start:stop], yt, block_cand)
        best, order = exact.topk(k_eff, dim=1)
        sims_out[start:stop] = best
        idx_out[start:stop] = block_cand.gather(1, order)
    return sims_out, idx_out


def _self_candidates(x: torch.Tensor, n_cand: int, block_size: int, dtype: torch.dtype) -> torch.Tensor:
    """Indices of the ``n_cand`` best other rows of every row, from low-precision scores.

    The similarity matrix is symmetric, so only blocks on and above the
    diagonal are multiplied (half the work); each block proposes candidates to
    its rows (top-k along dim 1) and to its columns (top-k along dim 0), merged
    into a running top list per row.
    """
    n, device = x.shape[0], x.device
    xs = x.to(dtype)
    best_val = torch.full((n, n_cand), -torch.inf, device=device)
    best_idx = torch.full((n, n_cand), -1, dtype=torch.long, device=device)

    def merge(start: int, vals: torch.Tensor, idx: torch.Tensor) -> None:
        stop = start + vals.shape[0]
        best_val[start:stop], best_idx[start:stop] = _merge_top(
            best_val[start:stop], best_idx[start:stop], vals, idx, n_cand
        )

    starts = list(range(0, n, block_size))
    for a in starts:
        xa = xs[a : a + block_size]
        for b in starts:
            if b < a:
                continue
            scores = xa @ xs[b : b + block_size].T
            if a == b:
                scores.fill_diagonal_(-torch.inf)
            vals, idx = scores.topk(min(n_cand, scores.shape[1]), dim=1)
            merge(a, vals, idx + b)
            if b != a:
                vals, idx = scores.topk(min(n_cand, scores.shape[0]), dim=0)
                merge(b, vals.T, idx.T + a)
    return best_idx


# ---------------------------------------------------------------------------
# The numpy-facing API: search, streaming search, pairs above a threshold, recall


@dataclass
class Neighbours:
    """Each query's neighbours, most similar first; ids -1 / sims -inf where fewer than k exist."""

    sims: np.ndarray  # float32[n, k]
    ids: np.ndarray  # int64[n, k]
    mode: str


@dataclass(frozen=True)
class ApproxSettings:
    """faiss IVF-Flat: ``nlist`` k-means cells (None: 4 x sqrt(M), at least 1), ``nprobe`` scanned per query."""

    nlist: int | None = None
    nprobe: int = 32
    train_per_list: int = 64  # k-means training rows per cell (a sample of the base)
    seed: int = 0


class ApproxIndex:
    """A faiss IVF-Flat inner-product index over ``base`` (unit rows), built once, searched many times."""

    def __init__(self, base: np.ndarray, settings: ApproxSettings = ApproxSettings()):
        faiss = _faiss()
        base = np.ascontiguousarray(base, dtype=np.float32)
        m, d = base.shape
        nlist = settings.nlist or max(1, int(4 * math.sqrt(m)))
        nlist = min(nlist, m)
        self.nprobe = min(settings.nprobe, nlist)
        quantizer = faiss.IndexFlatIP(d)
        self.index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        train_n = min(m, nlist * settings.train_per_list)
        rows = np.random.default_rng(settings.seed).choice(m, train_n, replace=False) if train_n < m else slice(None)
        self.index.cp.seed = settings.seed
        self.index.train(base[rows])
        self.index.add(base)
        self.index.nprobe = self.nprobe
        self._quantizer = quantizer  # faiss does not own it from Python: keep it alive

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        sims = sims.astype(np.float32)
        sims[ids < 0] = -np.inf
        return sims, ids.astype(np.int64)

    def range_search(self, queries: np.ndarray, threshold: float):
        lims, sims, ids = self.index.range_search(np.ascontiguousarray(queries, dtype=np.float32), float(threshold))
        return lims.astype(np.int64), sims.astype(np.float32), ids.astype(np.int64)


@dataclass(frozen=True)
class SketchSettings:
    """Sign sketches of ``bits`` random hyperplanes (a multiple of 8); a pair at cosine >= the
    threshold is missed with probability at most ``miss_rate``; ``block_rows`` rows per index block."""

    bits: int = 512
    miss_rate: float = 1e-6
    seed: int = 0
    block_rows: int = 16_384  # 1 MiB of 512-bit codes per index block: fits in cache (faster than 64K rows)

    def __post_init__(self):
        if self.bits <= 0 or self.bits % 8:
            raise ConfigError(f"sketch bits must be a positive multiple of 8, got {self.bits}")
        if not 0.0 < self.miss_rate < 1.0:
            raise ConfigError(f"sketch miss_rate must be in (0, 1), got {self.miss_rate}")


def sketch_radius(threshold: float, settings: SketchSettings = SketchSettings()) -> int:
    """The largest Hamming distance proposed: at cosine ``threshold`` the distance is
    Binomial(bits, angle / pi), and P(distance > radius) <= miss_rate."""
    from scipy.stats import binom

    p = math.acos(min(1.0, max(-1.0, float(threshold)))) / math.pi
    return int(binom.ppf(1.0 - settings.miss_rate, settings.bits, p))


def sketch_candidate_rate(threshold: float, settings: SketchSettings = SketchSettings()) -> float:
    """The fraction of unrelated (orthogonal) pairs the sketch proposes for exact re-scoring."""
    from scipy.stats import binom

    return float(binom.cdf(sketch_radius(threshold, settings), settings.bits, 0.5))


def sign_sketches(x: np.ndarray, settings: SketchSettings = SketchSettings()) -> np.ndarray:
    """uint8[n, bits / 8]: the signs of ``x`` projected on ``bits`` seeded Gaussian directions."""
    planes = np.random.default_rng(settings.seed).standard_normal((x.shape[1], settings.bits)).astype(np.float32)
    codes = np.empty((len(x), settings.bits // 8), np.uint8)
    for start in range(0, len(x), 65_536):
        codes[start : start + 65_536] = np.packbits(x[start : start + 65_536] @ planes > 0, axis=1)
    return codes


def _sketch_pairs(x: np.ndarray, threshold: float, settings: SketchSettings):
    """(i, j, cosine) lists of the pairs i < j at cosine >= threshold (see ``sketch`` in the module doc).

    Blocks of rows: block ``b`` is indexed once and searched by every block ``a <= b``, so each
    pair is scanned once (half the matrix)."""
    faiss = _faiss()
    codes = sign_sketches(x, settings)
    radius = sketch_radius(threshold, settings)
    found_i, found_j, found_s = [], [], []
    starts = list(range(0, len(x), settings.block_rows))
    for b in starts:
        index = faiss.IndexBinaryFlat(settings.bits)
        index.add(codes[b : b + settings.block_rows])
        for a in starts:
            if a > b:
                break
            # faiss keeps distances strictly below the radius it is given
            lims, _, cols = index.range_search(codes[a : a + settings.block_rows], radius + 1)
            rows = np.repeat(np.arange(a, a + len(lims) - 1), np.diff(lims.astype(np.int64)))
            cols = cols.astype(np.int64) + b
            keep = rows < cols  # the diagonal block lists each pair twice, and each row itself
            rows, cols = rows[keep], cols[keep]
            for c in range(0, len(rows), 1_000_000):  # exact re-scoring, a bounded slice at a time
                r, k = rows[c : c + 1_000_000], cols[c : c + 1_000_000]
                sims = np.einsum("ij,ij->i", x[r], x[k])
                ok = sims >= threshold
                found_i.append(r[ok])
                found_j.append(k[ok])
                found_s.append(sims[ok].astype(np.float32))
    return found_i, found_j, found_s


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        raise ConfigError("approximate nearest-neighbour search needs faiss (pip install faiss-cpu)") from None
    return faiss


def _check_mode(mode: str, allowed: tuple[str, ...] = ("exact", "approx")) -> None:
    if mode not in allowed:
        names = [repr(m) for m in allowed]
        raise ConfigError(f"nearest-neighbour mode must be {', '.join(names[:-1])} or {names[-1]}, got {mode!r}")


def iter_search(
    queries: np.ndarray,
    k: int,
    *,
    base: np.ndarray | None = None,
    query_ids: np.ndarray | None = None,
    mode: Mode = "exact",
    rows_per_batch: int = 65_536,
    block_size: int = 4096,
    device: torch.device | None = None,
    approx: ApproxSettings = ApproxSettings(),
) -> Iterator[tuple[int, Neighbours]]:
    """Streaming top-k search: yields (first query row, its batch's Neighbours), batch by batch.

    ``base`` None: the queries search themselves (self excluded). ``query_ids``:
    the queries are rows ``query_ids`` of ``base``, and each one's own row is
    excluded. Memory: the base, one batch of results and the block scores; a
    caller that keeps only what it needs (e.g. pairs above a threshold) never
    holds N x k results.
    """
    _check_mode(mode)
    self_search = base is None
    base_arr = queries if self_search else base
    if self_search:
        query_ids = np.arange(len(queries))
    drop_self = query_ids is not None
    k_ask = k + 1 if drop_self else k
    index = ApproxIndex(base_arr, approx) if mode == "approx" else None
    device = device or torch.device("cpu")
    base_t = as_tensor(base_arr, device) if mode == "exact" else None
    for start in range(0, len(queries), rows_per_batch):
        q = queries[start : start + rows_per_batch]
        if mode == "exact":
            sims_t, ids_t = top_k_neighbours(q, min(k_ask, len(base_arr)), others=base_t, block_size=block_size, device=device)
            sims, ids = sims_t.cpu().numpy(), ids_t.cpu().numpy()
        else:
            sims, ids = index.search(q, min(k_ask, len(base_arr)))
        if drop_self:
            sims, ids = _drop_rows(sims, ids, np.asarray(query_ids[start : start + rows_per_batch]), k)
        yield start, Neighbours(_pad(sims, k, -np.inf, np.float32), _pad(ids, k, -1, np.int64), mode)


def _drop_rows(sims: np.ndarray, ids: np.ndarray, own: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each query's own row from its list, keeping the order; k columns."""
    keep = ids != own[:, None]
    # a query whose own row is not in its list keeps its first k entries
    keep &= np.cumsum(keep, axis=1) <= k
    n = len(ids)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    out_i = np.full((n, k), -1, dtype=np.int64)
    rows, cols = np.nonzero(keep)
    pos = np.cumsum(keep, axis=1)[rows, cols] - 1
    out_s[rows, pos] = sims[rows, cols]
    out_i[rows, pos] = ids[rows, cols]
    return out_s, out_i


def _pad(a: np.ndarray, k: int, fill, dtype) -> np.ndarray:
    a = a.astype(dtype, copy=False)
    if a.shape[1] >= k:
        return a[:, :k]
    return np.concatenate([a, np.full((a.shape[0], k - a.shape[1]), fill, dtype=dtype)], axis=1)


def search(
    queries: np.ndarray,
    k: int,
    *,
    base: np.ndarray | None = None,
    query_ids: np.ndarray | None = None,
    mode: Mode = "exact",
    block_size: int = 4096,
    device: torch.device | None = None,
    approx: ApproxSettings = ApproxSettings(),
) -> Neighbours:
    """Top-k neighbours of every query (see ``iter_search``), all at once: float32/int64 [n, k]."""
    parts = list(
        iter_search(
            queries, k, base=base, query_ids=query_ids, mode=mode, block_size=block_size, device=device, approx=approx
        )
    )
    if not parts:
        return Neighbours(np.zeros((0, k), np.float32), np.zeros((0, k), np.int64), mode)
    return Neighbours(
        np.concatenate([p.sims for _, p in parts]), np.concatenate([p.ids for _, p in parts]), mode
    )


@dataclass
class Pairs:
    """Pairs i < j with cosine >= threshold, most similar first."""

    i: np.ndarray  # int64
    j: np.ndarray  # int64
    sims: np.ndarray  # float32
    mode: str


def pairs_above(
    x: np.ndarray,
    threshold: float,
    *,
    mode: PairsMode = "exact",
    block_size: int = 4096,
    device: torch.device | None = None,
    approx: ApproxSettings = ApproxSettings(),
    sketch: SketchSettings = SketchSettings(),
    rows_per_batch: int = 65_536,
) -> Pairs:
    """Every pair of rows of ``x`` with cosine >= ``threshold`` (e.g. duplicate class centres).

    Exact: blocks on and above the diagonal of the similarity matrix, keeping
    only the entries above the threshold (memory: one block of scores plus the
    pairs found). Approximate: faiss range search on an IVF-Flat index.
    Sketch: sign sketches propose, exact fp32 re-scoring decides (module doc).
    """
    _check_mode(mode, ("exact", "approx", "sketch"))
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    found_i, found_j, found_s = [], [], []
    if mode == "exact":
        device = device or torch.device("cpu")
        xt = as_tensor(x, device)
        for a in range(0, n, block_size):
            xa = xt[a : a + block_size]
            for b in range(a, n, block_size):
                scores = xa @ xt[b : b + block_size].T
                r, c = torch.nonzero(scores >= threshold, as_tuple=True)
                gi, gj = r + a, c + b
                keep = gi < gj
                # copies: a numpy view would keep its tensor's storage alive, and torch's
                # nonzero results keep a block-sized capacity even when empty (measured:
                # +1.2 GiB at 50K rows, 5.7 GiB at 100K, without the copies)
                found_i.append(gi[keep].cpu().numpy().copy())
                found_j.append(gj[keep].cpu().numpy().copy())
                found_s.append(scores[r[keep], c[keep]].cpu().numpy().copy())
    elif mode == "sketch":
        found_i, found_j, found_s = _sketch_pairs(x, threshold, sketch)
    else:
        index = ApproxIndex(x, approx)
        for start in range(0, n, rows_per_batch):
            lims, sims, ids = index.range_search(x[start : start + rows_per_batch], threshold)
            rows = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims))
            # a pair is kept once, as (lower, higher); the approximate search may
            # find it from one side only, so take both sides and de-duplicate
            lo, hi = np.minimum(rows, ids), np.maximum(rows, ids)
            keep = lo != hi
            found_i.append(lo[keep])
            found_j.append(hi[keep])
            found_s.append(sims[keep])
    i = np.concatenate(found_i).astype(np.int64) if found_i else np.zeros(0, np.int64)
    j = np.concatenate(found_j).astype(np.int64) if found_j else np.zeros(0, np.int64)
    s = np.concatenate(found_s).astype(np.float32) if found_s else np.zeros(0, np.float32)
    if mode == "approx" and len(i):
        key = i * n + j
        _, first = np.unique(key, return_index=True)
        i, j, s = i[first], j[first], s[first]
    order = np.lexsort((j, i, -s))
    return Pairs(i[order], j[order], s[order], mode)


def recall(found: Neighbours, truth: Neighbours) -> float:
    """Fraction of the true top-k neighbours (``truth``, exact) that ``found`` lists."""
    hits = total = 0
    for f, t in zip(found.ids, truth.ids):
        t = t[t >= 0]
        hits += len(np.intersect1d(f, t))
        total += len(t)
    return hits / total if total else 1.0


def measure_recall(
    x: np.ndarray,
    k: int,
    *,
    sample: int = 1000,
    seed: int = 0,
    approx: ApproxSettings = ApproxSettings(),
    device: torch.device | None = None,
) -> float:
    """Recall@k of the approximate self-search of ``x`` against the exact one, on ``sample`` random rows."""
    rows = np.sort(np.random.default_rng(seed).choice(len(x), min(sample, len(x)), replace=False))
    found = search(x[rows], k, base=x, query_ids=rows, mode="approx", approx=approx)
    truth = search(x[rows], k, base=x, query_ids=rows, mode="exact", device=device)
    return recall(found, truth)


def nearest_neighbour(
    x: np.ndarray | torch.Tensor, *, block_size: int = 4096, device: torch.device | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest other row: (cosine float32[N], index int64[N]); with N = 1: NaN and -1."""
    n = x.shape[0]
    if n < 2:
        return np.full(n, np.nan, dtype=np.float32), np.full(n, -1, dtype=np.int64)
    sims, idx = top_k_neighbours(x, 1, block_size=block_size, device=device)
    return sims[:, 0].cpu().numpy().astype(np.float32), idx[:, 0].cpu().numpy().astype(np.int64)


def max_similarity_to(
    x: np.ndarray | torch.Tensor,
    gallery: np.ndarray | torch.Tensor,
    *,
    block_size: int = 4096,
    device: torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``x`` its most similar gallery row: (cosine float32[N], index int64[N])."""
    sims, idx = top_k_neighbours(x, 1, others=gallery, block_size=block_size, device=device)
    return sims[:, 0].cpu().numpy().astype(np.float32), idx[:, 0].cpu().numpy().astype(np.int64)
