"""Benchmark of the finalising decision at scale (not a test; nothing here is asserted).

Synthetic class centres: N random unit vectors (512-d by default), of which a fraction
are planted duplicates (an earlier class's centre plus noise, cosine ~0.8 to it). Random
512-d unit vectors are ~0.04 apart in cosine (std), so at ``tau_inter`` 0.6 the planted
pairs are the only true duplicates, and "recall of planted duplicates" is exact ground
truth at every size.

For each size, in a fresh process (so that its peak memory is its own): the time and
peak RSS of :func:`synthface.filtering.duplicates.find_duplicates` (the finalising rule
with its nearest-neighbour search), and, where the N x N matrix fits
(``--brute-force-max``), plain brute force in the same run: the full similarity matrix
in numpy, every pair above the threshold, the same earlier-id-wins rule; the table gives
the ratio and the recall of brute force's drops.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

MIB = 1024 * 1024


def synthetic_centres(n: int, dim: int, dup_fraction: float, seed: int = 0) -> tuple[np.ndarray, dict[int, int]]:
    """(centres float32[n, dim], {planted duplicate: the earlier class it copies})."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), np.float32)
    for start in range(0, n, 65536):  # in blocks: no float64 copy of the whole array
        block = rng.standard_normal((min(65536, n - start), dim), dtype=np.float32)
        x[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    num_dups = int(n * dup_fraction)
    later = np.sort(rng.choice(np.arange(1, n), size=num_dups, replace=False))
    planted = {}
    for j in later.tolist():
        i = int(rng.integers(0, j))
        while i in planted:  # copy an original, so the expected drop is exactly j
            i = int(rng.integers(0, j))
        noise = rng.standard_normal(dim).astype(np.float32)
        v = x[i] + 0.75 * noise / np.linalg.norm(noise)  # cosine to x[i] ~ 0.8
        x[j] = v / np.linalg.norm(v)
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
    """One measurement in this (fresh) process."""
    import torch

    torch.set_num_threads(threads)
    x, planted = synthetic_centres(n, dim, dup_fraction)
    ids = np.arange(n)
    base_rss = _peak_rss_mib()
    t = time.perf_counter()
    if method == "finalise":
        from synthface.filtering.duplicates import find_duplicates

        dropped = {i: d.of for i, d in find_duplicates(ids, x, tau).items()}
    else:
        dropped = _brute_force(ids, x, tau)
    seconds = time.perf_counter() - t
    return {
        "method": method,
        "n": n,
        "seconds": seconds,
        "peak_rss_mib": _peak_rss_mib(),
        "input_rss_mib": base_rss,
        "dropped": dropped,
        "planted": planted,
    }


def _in_fresh_process(*args) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_measure, *args).result()


def finalise_bench(
    sizes: list[int], dim: int = 512, dup_fraction: float = 0.001, tau: float = 0.6, brute_force_max: int = 20000,
    threads: int = 2,
) -> list[dict[str, Any]]:
    from rich.console import Console
    from rich.table import Table

    from bench.runner import load_average, warn_if_loaded

    rows = []
    for n in sizes:
        loads = [load_average()]
        run = _in_fresh_process("finalise", n, dim, dup_fraction, tau, threads)
        planted = run["planted"]
        found = run["dropped"]
        row = {
            "n": n,
            "seconds": run["seconds"],
            "peak_rss_mib": run["peak_rss_mib"],
            "planted": len(planted),
            "planted_recall": sum(1 for j, i in planted.items() if found.get(j) == i) / max(len(planted), 1),
            "dropped": len(found),
        }
        if n <= brute_force_max:
            brute = _in_fresh_process("brute", n, dim, dup_fraction, tau, threads)
            truth = brute["dropped"]
            row.update(
                brute_seconds=brute["seconds"],
                brute_peak_rss_mib=brute["peak_rss_mib"],
                brute_dropped=len(truth),
                recall_vs_brute=sum(1 for j, i in truth.items() if found.get(j) == i) / max(len(truth), 1),
                same_as_brute=truth == found,
            )
        loads.append(load_average())
        row["load"] = f"{min(loads):.1f}-{max(loads):.1f}"
        rows.append(row)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)

    table = Table(title=f"finalising: duplicate identities among N class centres ({dim}-d, tau_inter {tau}, "
                  f"{dup_fraction:.2%} planted duplicates, {threads} threads)")
    for col in ("N", "finalise s", "peak MiB", "planted found", "brute force s", "brute peak MiB",
                "finalise / brute time", "recall vs brute", "load avg"):
        table.add_column(col, justify="right")
    for r in rows:
        has_brute = "brute_seconds" in r
        table.add_row(
            f"{r['n']:,}", f"{r['seconds']:.1f}", f"{r['peak_rss_mib']:.0f}",
            f"{r['planted_recall']:.2%} of {r['planted']}",
            f"{r['brute_seconds']:.1f}" if has_brute else "-",
            f"{r['brute_peak_rss_mib']:.0f}" if has_brute else "-",
            f"{r['seconds'] / r['brute_seconds']:.2f}" if has_brute else "-",
            (f"{r['recall_vs_brute']:.2%}" + (" (same drops)" if r["same_as_brute"] else "")) if has_brute else "-",
            r["load"],
        )
    Console(width=200).print(table)
    warn_if_loaded()
    return rows
