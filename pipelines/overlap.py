"""Two stages in a pipeline: stage one on the calling thread, stage two on one background thread.

Inside a shard job, stage one is generation (GPU) and stage two is analysis and
JPEG encoding (CPU), so the GPU works on batch k+1 while the CPU handles batch
k. Generation stays on the calling thread on purpose: torch.compile's CUDA
graphs are recorded per thread (pytorch/pytorch#123177), and a worker's jobs
must all replay the graphs its first job recorded.

Guarantees: stage two sees the items in their order, one at a time; at most
one stage-one output waits while stage two works (memory: two batches instead
of one); the first error of either stage is raised as it was raised; the
thread is joined before :func:`run_overlapped` returns or raises (an error in
stage one waits for the stage-two call in progress, at most one item).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Generic, Iterable, TypeVar

T = TypeVar("T")
U = TypeVar("U")
R = TypeVar("R")

THREAD_PREFIX = "synthface-stage2"


@dataclass
class OverlapRun(Generic[R]):
    results: list[R]
    # Seconds the calling thread waited for stage two: near 0 means stage one
    # (the GPU) was never held up by stage two.
    stage2_wait_s: float = 0.0


def run_overlapped(
    items: Iterable[T],
    first: Callable[[T], U],
    second: Callable[[T, U], R],
    overlap: bool,
) -> OverlapRun[R]:
    """``[second(item, first(item)) for item in items]``, stage two overlapped with the next stage one."""
    if not overlap:
        return OverlapRun([second(item, first(item)) for item in items])
    results: list[R] = []
    waited = 0.0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_PREFIX) as pool:
        pending: Future | None = None
        for item in items:
            if pending is not None and pending.done():
                results.append(pending.result())  # a stage-two error stops us before more stage-one work
                pending = None
            out = first(item)
            if pending is not None:
                t = time.perf_counter()
                results.append(pending.result())
                waited += time.perf_counter() - t
            pending = pool.submit(second, item, out)
            del out  # held by the submitted call only
        if pending is not None:
            t = time.perf_counter()
            results.append(pending.result())
            waited += time.perf_counter() - t
    return OverlapRun(results, waited)
