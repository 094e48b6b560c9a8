"""Benchmark of the finalising decision at scale (not a test; nothing here is asserted).

Synthetic class centres: N random unit vectors (512-d by default), of which a fraction
are planted duplicates: an earlier class's centre turned by an exact angle, at cosines
spread uniformly from just above ``tau_inter`` to 0.9 (the hard cases sit at the
threshold). Random 512-d unit vectors are ~0.04 apart in cosine (std; the largest of
5e11 pairs is ~0.35), so at ``tau_inter`` 0.6 the planted pairs are the only true
duplicates, and "planted duplicates found" is exact ground truth at every size.

For each size, in a fresh process (so that its peak memory is its own): the time, CPU
time and peak RSS of :func:`synthface.filtering.duplicates.find_duplicates` with the
search finalising picks (``choose_search``: exact, or sign sketches above 50K classes on
a CPU); where it fits, the same rule with the exact blocked search (``--exact-max``: the
recall baseline), and plain numpy N x N brute force (``--brute-force-max``).
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

MIB = 1024 * 1024


def synthetic_centres(
    n: int, dim: int, dup_fraction: float, seed: int = 0, low_cosine: float = 0.605
) -> tuple[np.ndarray, dict[int, int]]:
    """(centres float32[n, dim], {planted duplicate: the earlier class it copies}); each planted
    duplicate sits at a cosine uniform in [low_cosine, 0.9] to its original."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), np.float32)
    for start in range(0, n, 65536):  # in blocks: no float64 copy of the whole array
        block = rng.standard_normal((min(65536, n - start), dim), dtype=np.float32)
        x[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    num_dups = int(n * dup_fraction)
    later = np.sort(rng.choice(np.arange(1, n), size=num_dups, replace=False))
    cosines = rng.uniform(low_cosine, 0.9, size=num_dups)
    planted = {}
    for j, c in zip(later.tolist(), cosines.tolist()):
        i = int(rng.integers(0, j))
        while i in planted:  # copy an original, so the expected drop is exactly j
            i = int(rng.integers(0, j))
        noise = rng.standard_normal(dim).astype(np.float32)
        noise -= (noise @ x[i]) * x[i]  # orthogonal to x[i]: the cosine is exactly c
        x[j] = c * x[i] + np.sqrt(1.0 - c * c) * noise / np.linalg.norm(noise)
        planted[j] = i
    return x, planted


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB  # Linux: KiB


def _brute_force(ids: np.ndarray, x: np.ndarray, tau: float) -> dict[int, int]:
    sims = x @ x.T
    np.fill_diagonal(sims, -1.0)
    a, b = np.nonzero(np.triu(sims >= tau, 1))
    earlier: dict[int, list[tuple[int, float]]] = {}
    for i, j in zip(a.tolist(), b.tolist()):
        earlier.setdefault(j, []).append((i, float(sims[i, j])))
    dropped: dict[int, int] = {}
    for j in sorted(earlier):
        kept = [(s, -i) for i, s in earlier[j] if i not in dropped]
        if kept:
            dropped[j] = -max(kept)[1]
    return dropped


def _measure(method: str, n: int, dim: int, dup_fraction: float, tau: float, threads: int) -> dict[str, Any]:
    """One measurement in this (fresh) process: ``finalise`` (the search finalising picks),
    ``exact`` (the exact search forced) or ``brute`` (numpy N x N)."""
    import faiss
    import torch

    from synthface.filtering.duplicates import choose_search, find_duplicates

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    x, planted = synthetic_centres(n, dim, dup_fraction, low_cosine=tau + 0.005)
    ids = np.arange(n)
    base_rss = _peak_rss_mib()
    search = {"finalise": choose_search(n, tau), "exact": "exact"}.get(method, "numpy")
    cpu, t = time.process_time(), time.perf_counter()
    if method == "brute":
        dropped = _brute_force(ids, x, tau)
    else:
        dropped = {i: d.of for i, d in find_duplicates(ids, x, tau, search=search).items()}
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    return {
        "method": method,
        "search": search,
        "n": n,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mib": _peak_rss_mib(),
        "input_rss_mib": base_rss,
        "dropped": dropped,
        "planted": planted,
    }


def _in_fresh_process(*args) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_measure, *args).result()


def _recall(found: dict[int, int], truth: dict[int, int]) -> float:
    return sum(1 for j, i in truth.items() if found.get(j) == i) / max(len(truth), 1)


def finalise_bench(
    sizes: list[int], dim: int = 512, dup_fraction: float = 0.001, tau: float = 0.6, brute_force_max: int = 20000,
    threads: int = 2, exact_max: int = 200_000,
) -> list[dict[str, Any]]:
    from rich.console import Console
    from rich.table import Table

    from bench.runner import load_average, warn_if_loaded

    rows = []
    for n in sizes:
        loads = [load_average()]
        run = _in_fresh_process("finalise", n, dim, dup_fraction, tau, threads)
        planted, found = run["planted"], run["dropped"]
        row = {
            "n": n,
            "search": run["search"],
            "seconds": run["seconds"],
            "cpu_seconds": run["cpu_seconds"],
            "peak_rss_mib": run["peak_rss_mib"],
            "planted": len(planted),
            "planted_recall": _recall(found, planted),
            "dropped": len(found),
        }
        for method, limit in (("exact", exact_max), ("brute", brute_force_max)):
            if n > limit or (method == "exact" and run["search"] == "exact"):
                continue
            ref = _in_fresh_process(method, n, dim, dup_fraction, tau, threads)
            row[method] = {
                "seconds": ref["seconds"],
                "cpu_seconds": ref["cpu_seconds"],
                "peak_rss_mib": ref["peak_rss_mib"],
                "dropped": len(ref["dropped"]),
                "recall": _recall(found, ref["dropped"]),
                "same_drops": ref["dropped"] == found,
            }
        loads.append(load_average())
        row["load"] = f"{min(loads):.1f}-{max(loads):.1f}"
        rows.append(row)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)

    table = Table(title=f"finalising: duplicate identities among N class centres ({dim}-d, tau_inter {tau}, "
                  f"{dup_fraction:.2%} planted duplicates at cosine {tau + 0.005:.3f}-0.9, {threads} threads)")
    for col in ("N", "search", "finalise s", "CPU s", "peak MiB", "planted found", "exact search s",
                "exact / finalise time", "recall vs exact", "numpy brute force s", "recall vs brute", "load avg"):
        table.add_column(col, justify="right")

    def recall_cell(ref):
        return f"{ref['recall']:.2%}" + (" (same drops)" if ref["same_drops"] else "") if ref else "-"

    for r in rows:
        exact, brute = r.get("exact"), r.get("brute")
        if r["search"] == "exact":  # finalise ran the exact search itself: it is its own baseline
            exact_cells = ["(itself)", "1.00", "100% (exact)"]
        else:
            exact_cells = [f"{exact['seconds']:.1f}" if exact else "-",
                           f"{exact['seconds'] / r['seconds']:.2f}" if exact else "-", recall_cell(exact)]
        table.add_row(
            f"{r['n']:,}", r["search"], f"{r['seconds']:.1f}", f"{r['cpu_seconds']:.1f}", f"{r['peak_rss_mib']:.0f}",
            f"{r['planted_recall']:.2%} of {r['planted']}", *exact_cells,
            f"{brute['seconds']:.1f}" if brute else "-", recall_cell(brute), r["load"],
        )
    Console(width=220).print(table)
    warn_if_loaded()
    return rows
