"""`synthface bench ids`: uniform vs packed identity banks at growing N.

Each (N, sampler) runs in a fresh process, so its peak memory (max RSS) is its
own. Separation is measured exactly, the same way for every sampler: the
exact nearest neighbour, against all N, of the same random queries (by
default 20,000; all rows when N is smaller), with the project's exact search
(``synthface.neighbours``) on the stored embeddings, whatever the sampler
used to build its bank.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import resource
import sys
import time
from dataclasses import dataclass

import numpy as np

from bench.runner import cpu_seconds, load_average, warn_if_loaded

# (label, sampler, packed.start)
SAMPLERS = {
    "uniform": ("uniform", "uniform"),
    "packed-optimised": ("packed", "uniform"),
    "packed-code": ("packed", "code"),
}


@dataclass
class Job:
    n: int
    label: str
    identity: dict  # IdentityConfig as a dict
    seed: int
    queries: int
    draw_only: bool  # uniform baseline: the draw alone (its screen is an N^2 pass, not what is compared)


def _peak_gib() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**30


def run_job(job: Job) -> dict:
    """Build one bank and measure its separation (runs in a child process)."""
    import torch  # noqa: F401  (imports outside the timings)

    from synthface.identity import codes, packing, screens  # noqa: F401
    from synthface.identity.bank import sample_bank
    from synthface.identity.config import IdentityConfig
    from synthface.identity.samplers import uniform_vectors
    from synthface.neighbours import search

    cfg = IdentityConfig.model_validate(job.identity)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    if job.draw_only:
        x = uniform_vectors(job.seed, job.n)
        stages = {"draw": time.perf_counter() - t0}
    else:
        bank, report = sample_bank(cfg, job.seed)
        x = bank.embeddings
        stages = dict(report.seconds)
        del bank
    build_s, build_cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    build_peak = _peak_gib()
    rows = np.sort(np.random.default_rng(12345).choice(job.n, min(job.queries, job.n), replace=False))
    t1 = time.perf_counter()
    nn = search(x[rows], 1, base=x, query_ids=rows, mode="exact", block_size=1024).sims[:, 0].astype(np.float64)
    measure_s = time.perf_counter() - t1
    return {
        "n": job.n,
        "label": job.label,
        "seconds": build_s,
        "cpu_seconds": build_cpu,
        "stages": stages,
        "peak_gib": build_peak,
        "peak_gib_with_measure": _peak_gib(),
        "queries": len(rows),
        "measure_seconds": measure_s,
        "max": float(nn.max()),
        "p999": float(np.quantile(nn, 0.999)),
        "mean": float(nn.mean()),
    }


def run_in_child(job: Job) -> dict:
    """``run_job`` in a fresh spawned process (own peak memory, nothing shared)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(run_job, (job,))


def ids_bench(base, sizes: list[int], queries: int, optimise_up_to: int, out) -> list[dict]:
    """Every (N, sampler) row in a fresh process, a line each as it ends, then the table
    against uniform; ``base`` is the factory config, ``out`` a rich Console. Returns the rows."""
    from rich.table import Table

    out.print(f"cpu cores {os.cpu_count()}, load average at start {load_average():.2f}", highlight=False)
    rows = []
    for n in sizes:
        for label, (sampler, start) in SAMPLERS.items():
            if label == "packed-optimised" and n > optimise_up_to:
                out.print(f"N={n:,} {label}: skipped (above --optimise-up-to {optimise_up_to:,})", highlight=False)
                continue
            identity = base.identity.model_copy(update={"num_identities": n, "sampler": sampler})
            identity = identity.model_copy(update={"packed": identity.packed.model_copy(update={"start": start})})
            job = Job(n, label, identity.model_dump(mode="json"), base.seed, queries, draw_only=label == "uniform")
            r = run_in_child(job)
            r["load"] = load_average()
            rows.append(r)
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in r["stages"].items())
            out.print(
                f"N={n:,} {label}: {r['seconds']:.1f}s (cpu {r['cpu_seconds']:.1f}s; {stages}), peak {r['peak_gib']:.2f} GiB; "
                f"exact NN of {r['queries']:,} queries in {r['measure_seconds']:.1f}s: max {r['max']:.4f}, "
                f"p99.9 {r['p999']:.4f}, mean {r['mean']:.4f}; load {r['load']:.1f}",
                highlight=False,
            )

    table = Table(title="identity samplers vs uniform (baseline): time, peak memory, exact nearest-neighbour cosine of random queries")
    for col in ("N", "sampler", "time s", "cpu s", "peak GiB", "queries", "max NN", "p99.9 NN", "mean NN",
                "max gain", "p99.9 gain", "time ~ N^p"):
        table.add_column(col, justify="right")
    uniform = {r["n"]: r for r in rows if r["label"] == "uniform"}
    previous: dict[str, dict] = {}
    for r in rows:
        u = uniform.get(r["n"])
        growth = "-"
        prev = previous.get(r["label"])
        if prev is not None and prev["n"] != r["n"]:
            growth = f"p = {math.log(r['seconds'] / prev['seconds']) / math.log(r['n'] / prev['n']):.2f}"
        previous[r["label"]] = r
        table.add_row(
            f"{r['n']:,}", r["label"], f"{r['seconds']:.1f}", f"{r['cpu_seconds']:.1f}", f"{r['peak_gib']:.2f}",
            f"{r['queries']:,}", f"{r['max']:.4f}", f"{r['p999']:.4f}", f"{r['mean']:.4f}",
            "-" if u is None or u is r else f"{u['max'] - r['max']:+.4f}",
            "-" if u is None or u is r else f"{u['p999'] - r['p999']:+.4f}",
            growth,
        )
    out.print(table)
    out.print(f"load average at end {load_average():.2f} (other work on the machine slows every timing)", highlight=False)
    warn_if_loaded(lambda line: out.print(line, highlight=False))
    return rows
