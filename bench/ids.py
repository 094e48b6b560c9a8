"""`synthface bench ids`: uniform vs packed identity banks at growing N.

Each (N, sampler) runs in a fresh process, so its peak memory (max RSS) is its
own. Separation is measured exactly, the same way for every sampler: the
exact nearest neighbour, against all N, of the same random queries (by
default 20,000; all rows when N is smaller), with the project's exact search
(``synthface.neighbours``) on the stored embeddings, whatever the sampler
used to build its bank.
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import time
from dataclasses import dataclass

import numpy as np

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


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_job(job: Job) -> dict:
    """Build one bank and measure its separation (runs in a child process)."""
    import torch  # noqa: F401  (imports outside the timings)

    from synthface.identity import codes, packing, screens  # noqa: F401
    from synthface.identity.bank import sample_bank
    from synthface.identity.config import IdentityConfig
    from synthface.identity.samplers import uniform_vectors
    from synthface.neighbours import search

    cfg = IdentityConfig.model_validate(job.identity)
    cpu0, t0 = _cpu_s(), time.perf_counter()
    if job.draw_only:
        x = uniform_vectors(job.seed, job.n)
        stages = {"draw": time.perf_counter() - t0}
    else:
        bank, report = sample_bank(cfg, job.seed)
        x = bank.embeddings
        stages = dict(report.seconds)
        del bank
    build_s, build_cpu = time.perf_counter() - t0, _cpu_s() - cpu0
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
