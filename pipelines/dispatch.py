"""Handing shard jobs to worker actors: bounded in-flight jobs, retries, failures.

The dispatcher keeps at most ``max_in_flight`` jobs submitted, spread over the
least-loaded workers (each worker runs one job at a time; a queued second job
keeps it busy between jobs). When a job raises, it is retried on another
worker; when a worker dies (process killed, out of memory), it is replaced by a
fresh one and its jobs are retried. A job that fails ``1 + max_retries`` times
is given up and reported; the others go on.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from pipelines.planning import ShardJob
from synthface.errors import SynthfaceError

log = logging.getLogger("synthface.generate")


class WorkerStartError(SynthfaceError):
    """A worker process died while loading its stages (before any job ran)."""


@dataclass
class _Slot:
    actor: Any
    number: int
    in_flight: int = 0
    alive: bool = True


@dataclass
class DispatchResult:
    done: dict[int, dict[str, Any]] = field(default_factory=dict)  # shard index -> stats
    failed: dict[int, str] = field(default_factory=dict)  # shard index -> last error
    retries: int = 0
    workers_replaced: int = 0


def _short_error(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}".splitlines()[0][:300]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:300]


class Dispatcher:
    def __init__(
        self,
        make_actor: Callable[[], Any],
        num_workers: int,
        max_in_flight: int,
        max_retries: int,
        on_done: Callable[[ShardJob, dict], None] | None = None,
        on_failed: Callable[[ShardJob, str], None] | None = None,
        on_tick: Callable[[], None] | None = None,
    ):
        self.make_actor = make_actor
        self.num_workers = num_workers
        self.max_in_flight = max(1, max_in_flight)
        self.max_retries = max_retries
        self.on_done = on_done or (lambda job, stats: None)
        self.on_failed = on_failed or (lambda job, err: None)
        self.on_tick = on_tick or (lambda: None)
        self.slots: list[_Slot] = []
        self._next_number = 0

    def _new_slot(self) -> _Slot:
        slot = _Slot(actor=self.make_actor(), number=self._next_number)
        self._next_number += 1
        return slot

    def start_workers(self, timeout_s: float | None = None) -> None:
        """Create the workers and wait until each has loaded its stages.

        An error raised while loading (missing weights, say) is re-raised here
        as the original exception, so the user sees its message.
        """
        self.slots = [self._new_slot() for _ in range(self.num_workers)]
        try:
            ray.get([s.actor.ready.remote() for s in self.slots], timeout=timeout_s)
        except RayTaskError as exc:
            self.shutdown()
            raise (exc.cause if exc.cause is not None else exc) from None
        except RayActorError as exc:  # the process itself died (killed, out of memory, a crash in native code)
            self.shutdown()
            raise WorkerStartError(
                f"a worker process died while loading the models ({_short_error(exc)}); "
                "see the Ray worker logs (e.g. /tmp/ray/session_latest/logs) for why"
            ) from None
        except GetTimeoutError:
            self.shutdown()
            raise

    def _pick(self, avoid: int | None) -> _Slot:
        alive = [s for s in self.slots if s.alive]
        preferred = [s for s in alive if s.number != avoid] or alive
        return min(preferred, key=lambda s: (s.in_flight, s.number))

    def _replace(self, slot: _Slot) -> None:
        slot.alive = False
        try:
            ray.kill(slot.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - it is already gone
            pass
        self.slots.append(self._new_slot())

    def run(self, jobs: list[ShardJob], poll_s: float = 0.5) -> DispatchResult:
        result = DispatchResult()
        pending: deque[tuple[ShardJob, int, int | None]] = deque((job, 0, None) for job in jobs)
        in_flight: dict[Any, tuple[ShardJob, int, _Slot]] = {}
        while pending or in_flight:
            while pending and len(in_flight) < self.max_in_flight:
                job, attempt, avoid = pending.popleft()
                slot = self._pick(avoid)
                ref = slot.actor.run_job.remote(job, attempt)
                slot.in_flight += 1
                in_flight[ref] = (job, attempt, slot)
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=poll_s)
            for ref in ready:
                job, attempt, slot = in_flight.pop(ref)
                slot.in_flight -= 1
                try:
                    stats = ray.get(ref)
                except RayActorError as exc:
                    error = f"worker died: {_short_error(exc)}"
                    if slot.alive:
                        log.warning("worker %d died while running %s; starting a new worker", slot.number, job)
                        self._replace(slot)
                        result.workers_replaced += 1
                except RayTaskError as exc:
                    error = _short_error(exc)
                else:
                    result.done[job.index] = stats
                    self.on_done(job, stats)
                    continue
                if attempt < self.max_retries:
                    result.retries += 1
                    log.warning("%s failed (attempt %d: %s); retrying on another worker", job, attempt + 1, error)
                    pending.append((job, attempt + 1, slot.number))
                else:
                    log.error("%s failed %d times, giving up: %s", job, attempt + 1, error)
                    result.failed[job.index] = error
                    self.on_failed(job, error)
            self.on_tick()
        return result

    def shutdown(self) -> None:
        for slot in self.slots:
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        self.slots = []
