"""Handing shard jobs to worker actors: bounded in-flight jobs, retries, timeouts, failures.

Workers load their models in parallel; jobs go to every worker as soon as it
is ready, so a worker the cluster cannot place yet (or a slow node) delays
nobody. The dispatcher keeps at most ``max_in_flight`` jobs submitted, spread
over the least-loaded ready workers (each worker runs one job at a time; a
queued second job keeps it busy between jobs). When a job raises, it is
retried on another worker; when a worker dies (process killed, out of memory)
or a job runs past the job timeout (a hang), the worker is replaced by a
fresh one and its jobs are retried. A job that fails ``1 + max_retries`` times
is given up and reported; the others go on. An error no retry can fix (the
output is full, read-only, or refuses our credentials) is not retried: the
jobs not yet started are failed with it at once.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from pipelines.planning import ShardJob
from synthface.errors import WorkerStartError

log = logging.getLogger("synthface.generate")

# With no run.job_timeout_s, a job is declared hung after this many times the
# slowest job so far (never less than the floor); before any job has finished
# there is nothing to measure, so no limit applies.
TIMEOUT_FACTOR = 5.0
MIN_DERIVED_TIMEOUT_S = 300.0


def job_timeout_s(configured: float | None, finished_job_s: list[float]) -> float | None:
    """The time after which a running job counts as hung: the configured one, else derived
    from the jobs measured so far (None: no limit yet)."""
    if configured is not None:
        return configured
    if not finished_job_s:
        return None
    return max(MIN_DERIVED_TIMEOUT_S, TIMEOUT_FACTOR * max(finished_job_s))


@dataclass
class _Slot:
    actor: Any
    number: int
    alive: bool = True
    ready: bool = False
    queue: deque = field(default_factory=deque)  # refs in submission order: the actor runs them in turn
    head_since: float = 0.0  # when the job at the head of the queue started running

    @property
    def in_flight(self) -> int:
        return len(self.queue)


@dataclass
class DispatchResult:
    done: dict[int, dict[str, Any]] = field(default_factory=dict)  # shard index -> stats
    failed: dict[int, str] = field(default_factory=dict)  # shard index -> last error
    retries: int = 0
    workers_replaced: int = 0
    timeouts: int = 0


def _short_error(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}".splitlines()[0][:300]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:300]


def _fatal_reason(exc: BaseException) -> str | None:
    """The reason when the error is one no retry can fix (an OutputError marked fatal)."""
    cause = getattr(exc, "cause", None) or exc
    return getattr(cause, "fatal_reason", None)


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
        job_timeout_s: float | None = None,
    ):
        self.make_actor = make_actor
        self.num_workers = num_workers
        self.max_in_flight = max(1, max_in_flight)
        self.max_retries = max_retries
        self.on_done = on_done or (lambda job, stats: None)
        self.on_failed = on_failed or (lambda job, err: None)
        self.on_tick = on_tick or (lambda: None)
        self.configured_timeout_s = job_timeout_s
        self.job_s: list[float] = []  # measured run time of every finished job
        self.slots: list[_Slot] = []
        self._loading: dict[Any, _Slot] = {}  # ready() ref -> slot still loading its models
        self._next_number = 0

    def _new_slot(self) -> _Slot:
        slot = _Slot(actor=self.make_actor(), number=self._next_number)
        self._next_number += 1
        self._loading[slot.actor.ready.remote()] = slot
        return slot

    def start_workers(self, wait_all: bool = False, timeout_s: float | None = None) -> None:
        """Create the workers; return once the first (``wait_all``: every one) has loaded its stages.

        The others keep loading and take jobs in :meth:`run` as they become ready.
        An error raised while loading (missing weights, say) is re-raised here
        as the original exception, so the user sees its message.
        """
        self.slots = [self._new_slot() for _ in range(self.num_workers)]
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._loading and (wait_all or not any(s.ready for s in self.slots)):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _ = ray.wait(list(self._loading), num_returns=1, timeout=left)
            if not ready:
                self.shutdown()
                raise GetTimeoutError(f"no worker loaded its models within {timeout_s} s")
            for ref in ready:
                self._check_loaded(ref, during_start=True)

    def _check_loaded(self, ref: Any, during_start: bool = False) -> None:
        """Mark the slot of a finished ready() call ready, or handle its loading failure."""
        slot = self._loading.pop(ref)
        try:
            ray.get(ref)
        except (RayTaskError, RayActorError) as exc:
            slot.alive = False
            if during_start or not any(s.ready and s.alive for s in self.slots):
                self.shutdown()
                if isinstance(exc, RayTaskError):
                    raise (exc.cause if exc.cause is not None else exc) from None
                raise WorkerStartError(
                    f"a worker process died while loading the models ({_short_error(exc)}); "
                    "see the Ray worker logs (e.g. /tmp/ray/session_latest/logs) for why; on a cluster with "
                    "token authentication (RAY_AUTH_MODE=token) every node must have the same token"
                ) from None
            # the others work: run on without this one (its node may lack the weights)
            log.error("worker %d failed while loading and is dropped: %s", slot.number, _short_error(exc))
            return
        slot.ready = True
        slot.head_since = time.monotonic()
        log.info("worker %d ready", slot.number)

    def _pick(self, avoid: int | None) -> _Slot | None:
        # each worker holds its share of the in-flight jobs at most, so the first worker
        # ready does not queue the jobs of the others still loading
        per_worker = -(-self.max_in_flight // max(1, self.num_workers))
        usable = [s for s in self.slots if s.alive and s.ready and s.in_flight < per_worker]
        preferred = [s for s in usable if s.number != avoid] or usable
        return min(preferred, key=lambda s: (s.in_flight, s.number)) if preferred else None

    def _replace(self, slot: _Slot) -> None:
        slot.alive = False
        try:
            ray.kill(slot.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - it is already gone
            pass
        self.slots.append(self._new_slot())

    def timeout_s(self) -> float | None:
        return job_timeout_s(self.configured_timeout_s, self.job_s)

    def run(self, jobs: list[ShardJob], poll_s: float = 0.5) -> DispatchResult:
        result = DispatchResult()
        pending: deque[tuple[ShardJob, int, int | None]] = deque((job, 0, None) for job in jobs)
        in_flight: dict[Any, tuple[ShardJob, int, _Slot]] = {}

        def retry_or_fail(job: ShardJob, attempt: int, slot: _Slot, error: str, fatal: str | None = None) -> None:
            if fatal is None and attempt < self.max_retries:
                result.retries += 1
                log.warning("%s failed (attempt %d: %s); retrying on another worker", job, attempt + 1, error)
                pending.append((job, attempt + 1, slot.number))
                return
            if fatal is not None:
                log.error("%s failed: %s (not retried: no retry can fix it)", job, error)
            else:
                log.error("%s failed %d times, giving up: %s", job, attempt + 1, error)
            result.failed[job.index] = fatal or error
            self.on_failed(job, fatal or error)

        while pending or in_flight:
            while pending and len(in_flight) < self.max_in_flight:
                job, attempt, avoid = pending[0]
                slot = self._pick(avoid)
                if slot is None:
                    break  # no worker ready yet
                pending.popleft()
                ref = slot.actor.run_job.remote(job, attempt)
                if not slot.queue:
                    slot.head_since = time.monotonic()
                slot.queue.append(ref)
                in_flight[ref] = (job, attempt, slot)
            if not in_flight and not self._loading and not any(s.alive and s.ready for s in self.slots):
                raise WorkerStartError("no worker is left to run the remaining jobs (see the errors above)")
            ready, _ = ray.wait(list(in_flight) + list(self._loading), num_returns=1, timeout=poll_s)
            for ref in ready:
                if ref in self._loading:
                    self._check_loaded(ref)
                    continue
                job, attempt, slot = in_flight.pop(ref)
                if ref in slot.queue:
                    slot.queue.remove(ref)
                now = time.monotonic()
                ran_s, slot.head_since = now - slot.head_since, now
                fatal = None
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
                    fatal = _fatal_reason(exc)
                else:
                    self.job_s.append(ran_s)
                    result.done[job.index] = stats
                    self.on_done(job, stats)
                    continue
                retry_or_fail(job, attempt, slot, error, fatal)
                if fatal is not None:
                    while pending:  # the others would fail the same way, after all their generation
                        job, _, _ = pending.popleft()
                        result.failed[job.index] = fatal
                        self.on_failed(job, fatal)
            self._expire_hung(in_flight, pending, result, retry_or_fail)
            self.on_tick()
        return result

    def _expire_hung(self, in_flight, pending, result: DispatchResult, retry_or_fail) -> None:
        """A job running past the timeout: its worker is replaced, the job retried elsewhere,
        and the jobs queued behind it go back to the queue (they never started)."""
        limit = self.timeout_s()
        if limit is None:
            return
        now = time.monotonic()
        for slot in [s for s in self.slots if s.alive and s.queue]:
            if now - slot.head_since <= limit:
                continue
            head, *queued = list(slot.queue)
            job, attempt, _ = in_flight.pop(head)
            for ref in queued:
                waiting, waiting_attempt, _ = in_flight.pop(ref)
                pending.appendleft((waiting, waiting_attempt, slot.number))
            slot.queue.clear()
            log.warning("%s ran %.0f s, past the job timeout (%.0f s): replacing worker %d", job,
                        now - slot.head_since, limit, slot.number)
            self._replace(slot)
            result.workers_replaced += 1
            result.timeouts += 1
            retry_or_fail(job, attempt, slot, f"timed out after {limit:.0f} s (hung?)")

    def shutdown(self) -> None:
        for slot in self.slots:
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        self.slots = []
        self._loading = {}
