"""Loader worker processes: the training reader's batches made in other processes and handed
over in shared memory without a copy.

Each worker process runs its share of a :class:`~eval.data.ShardStream` (tar parsing,
shuffle, decode, augment) straight into the slots of its own :class:`BatchRing`, one block of
shared memory, and writes the index of each finished slot to a pipe. The training process
reads the workers' pipes in turn (worker 0, 1, ..., 0, 1, ...: a fixed order, so a seed gives
the same batches), and the batch it hands out *is* the slot: a tensor over the shared
memory. When that tensor and every view of it are gone, the slot goes back to its worker.

Why not torch's DataLoader: it moves a batch as a fresh shared-memory block per batch (page
faults on every first touch, a descriptor per batch) or, with a reused block, still passes
an index and a reply per batch through multiprocessing queues with feeder threads and a
profiler hook per step. On this project's 2-core VM that plumbing cost about 6 us per image
in the worker and 8-18 us in the training process, a tenth of the reader's whole budget at
5,000 images per CPU-second (docs/benchmark.md, "The training reader").
"""

from __future__ import annotations

import os
import pickle
import struct
import time
import traceback
import weakref
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.multiprocessing as mp

from eval.backbones import INPUT_SIZE
from synthface.errors import InputDataError

_IMAGE_BYTES = INPUT_SIZE * INPUT_SIZE * 3
RING_SLOTS = 6  # batches a worker can have ready or held by the training loop at once
# worker -> training process messages: a tag byte, then the payload
_READY = b"R"  # + the slot's index (4 bytes)
_ERROR = b"E"  # + pickled (exception, traceback text)
_DONE = b"D"  # the worker's share of a finite stream is exhausted
_SLOT = struct.Struct("<i")
_WAIT_S = 0.5  # how often a waiting worker, or the training process, checks the other is alive
_STOP_WAIT_S = 5.0  # how long a stopping worker may take to finish its batch before it is terminated


class BatchRing:
    """One worker's batch slots in a block of shared memory.

    Layout: ``slots`` x (uint8 [B,112,112,3] images, int64 [B] labels), then one busy byte
    per slot and a stop byte. ``free`` counts the slots nobody holds: the worker takes one
    before filling a slot, the training process gives one back when it lets a slot go.
    """

    def __init__(self, batch_size: int, slots: int, context):
        label_at = -(-batch_size * _IMAGE_BYTES // 64) * 64
        self.slot_bytes = label_at + batch_size * 8
        self.batch_size, self.slots, self.label_at = batch_size, slots, label_at
        self.flags_at = slots * self.slot_bytes
        self.memory = torch.zeros(self.flags_at + slots + 1, dtype=torch.uint8).share_memory_()
        self.free = context.Semaphore(slots)
        self.next = 0  # the worker's next slot to try: ring order while the consumer keeps up
        # training process: the slots handed out as tensors and not yet let go (set.add and
        # set.discard are atomic, so a batch dropped in another thread cannot lose a count)
        self.held: set[int] = set()
        # a process forked from the training process (another loader's worker, say) inherits the
        # batches' finalizers: only the training process itself may free slots or stop the ring
        self.owner = os.getpid()

    def views(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 [B,112,112,3] images, int64 [B] labels) of a slot: new array objects each call."""
        block = self.memory.numpy()
        start = slot * self.slot_bytes
        images = block[start : start + self.batch_size * _IMAGE_BYTES].reshape(self.batch_size, INPUT_SIZE, INPUT_SIZE, 3)
        labels = block[start + self.label_at : start + self.label_at + self.batch_size * 8].view(np.int64)
        return images, labels

    def _flags(self) -> np.ndarray:
        return self.memory.numpy()[self.flags_at :]

    @property
    def stopped(self) -> bool:
        return bool(self._flags()[self.slots])

    # the worker's side

    def take_free_slot(self, parent_alive: Callable[[], bool]) -> int | None:
        """A free slot, marked busy; None once the ring is stopped or the training process is gone."""
        flags = self._flags()
        while not self.free.acquire(timeout=_WAIT_S):
            if flags[self.slots] or not parent_alive():
                return None
        if flags[self.slots]:
            return None
        for k in range(self.slots):
            slot = (self.next + k) % self.slots
            if not flags[slot]:
                flags[slot] = 1
                self.next = (slot + 1) % self.slots
                return slot
        raise RuntimeError("batch ring: the free-slot count and the busy flags disagree")

    # the training process's side

    def release(self, slot: int) -> None:
        if os.getpid() == self.owner:
            self._flags()[slot] = 0
            self.free.release()

    def stop(self) -> None:
        if os.getpid() == self.owner:
            self._flags()[self.slots] = 1
            self.free.release()  # wakes a worker waiting for a slot


def _worker_main(stream, worker: int, num_workers: int, ring: BatchRing, pipe) -> None:
    """A loader worker: fill ring slots with the stream's batches and name each on the pipe.
    An error goes to the training process as (exception, traceback text)."""
    torch.set_num_threads(1)
    # The training process (or, under forkserver, the fork server it keeps alive) is this
    # process's parent; when it dies this process is handed to another parent.
    parent = os.getppid()

    def claim():
        slot = ring.take_free_slot(lambda: os.getppid() == parent)
        if slot is None:
            return None
        images, labels = ring.views(slot)
        return slot, images, labels

    try:
        for slot in stream.batches(claim, worker, num_workers):
            pipe.send_bytes(_READY + _SLOT.pack(slot))
        if not ring.stopped and os.getppid() == parent:  # the stream itself ended
            pipe.send_bytes(_DONE)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the training process reports it
        return
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the training process
        pipe.send_bytes(_ERROR + _error_payload(exc, traceback.format_exc()))
    finally:
        pipe.close()


def _error_payload(exc: BaseException, text: str) -> bytes:
    """(exc, text) pickled; an exception that does not survive pickling travels as its text."""
    try:
        payload = pickle.dumps((exc, text))
        pickle.loads(payload)  # some pickle but fail to unpickle (an __init__ with other arguments)
        return payload
    except Exception:  # noqa: BLE001 - whatever the exception's own pickling does wrong
        return pickle.dumps((RuntimeError(f"{type(exc).__name__}: {exc}"), text))


class _RemoteTraceback(Exception):
    """Carries a loader worker's traceback text as the cause of the error re-raised here."""

    def __str__(self) -> str:
        return self.args[0]


class Loader:
    """Iterating gives (uint8 [B,3,112,112] channels_last, int64 [B]) batches, endlessly.

    ``workers`` = 0: the stream runs in this process. Otherwise each iteration starts that
    many worker processes and stops them when it ends (the loop finishes, breaks, or raises).
    ``pin``: copy each batch into pinned memory (CUDA training) and let its slot go at once.
    ``copies`` counts the batches handed out as copies on CPU because the training loop was
    holding nearly every slot of their worker (0 in a loop that drops each batch in time).
    """

    def __init__(self, stream, workers: int, pin: bool = False, timeout_s: float = 0.0):
        self.stream, self.workers, self.pin = stream, workers, pin
        self.timeout_s = timeout_s
        self.copies = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.workers == 0:
            yield from self.stream
            return
        context = mp.get_context()
        rings, pipes, processes = [], [], []
        try:
            for worker in range(self.workers):
                ring = BatchRing(self.stream.cfg.batch_size, RING_SLOTS, context)
                reader, writer = context.Pipe(duplex=False)
                process = context.Process(
                    target=_worker_main,
                    args=(self.stream, worker, self.workers, ring, writer),
                    name=f"synthface-loader-{worker}",
                    daemon=True,
                )
                process.start()
                writer.close()  # the worker's end: when the worker dies, reading gives EOF
                rings.append(ring)
                pipes.append(reader)
                processes.append(process)
            worker = 0
            while True:
                slot = self._receive(pipes[worker], processes[worker], worker, self.timeout_s)
                if slot is None:
                    return  # the worker's share of a finite stream ended (the endless shard order never does)
                yield self._hand_over(rings[worker], slot)
                worker = (worker + 1) % self.workers
        finally:
            _stop(rings, pipes, processes)

    @staticmethod
    def _receive(pipe, process, worker: int, timeout_s: float = 0.0) -> int | None:
        """The next ready slot of a worker (None: its share of a finite stream ended); its
        error re-raised here; an InputDataError when a live worker sends nothing for
        ``timeout_s`` seconds (0: wait forever)."""
        message = b""
        deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
        try:
            while True:
                if pipe.poll(_WAIT_S):
                    message = pipe.recv_bytes()
                    break
                if not process.is_alive() and not pipe.poll(0):
                    break  # gone, and the pipe still open: a process of its own holds the other end
                if deadline is not None and time.monotonic() > deadline:
                    raise InputDataError(
                        f"loader worker {worker} (pid {process.pid}) is alive but sent no batch for {timeout_s:g} s "
                        f"(data.worker_timeout_s): a shard read that hangs? `py-spy dump --pid {process.pid}` "
                        "shows where it waits; raise the timeout for slow storage, 0 waits forever"
                    )
        except EOFError:  # gone, pipe closed
            pass
        tag = message[:1]
        if tag == _READY:
            return _SLOT.unpack(message[1:])[0]
        if tag == _DONE:
            return None
        if tag == _ERROR:
            exc, text = pickle.loads(message[1:])
            raise exc from _RemoteTraceback(f"in loader worker {worker}:\n{text}")
        process.join(timeout=5)
        raise RuntimeError(
            f"loader worker {worker} stopped unexpectedly (exit code {process.exitcode}); "
            "a negative code is the signal that killed it (-9: out of memory?)"
        )

    def _hand_over(self, ring: BatchRing, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = ring.views(slot)
        labels = torch.from_numpy(labels.copy())
        if self.pin or len(ring.held) >= ring.slots - 1:
            # CUDA: one copy, into pinned memory. CPU: the training loop keeps almost every slot
            # of this worker, so give it a copy and the worker its slot, or the worker would wait.
            self.copies += not self.pin
            out = torch.empty(images.shape, dtype=torch.uint8, pin_memory=self.pin)
            np.copyto(out.numpy(), images)  # one thread: torch's copy_ wakes (and spins) its pool
            ring.release(slot)
            return out.permute(0, 3, 1, 2), labels.pin_memory() if self.pin else labels
        ring.held.add(slot)
        # ``images`` is a fresh array object, and every tensor made from it keeps it alive:
        # it dies with the last view of this batch, and the slot goes back then.
        weakref.finalize(images, _let_go, ring, slot).atexit = False
        return torch.from_numpy(images).permute(0, 3, 1, 2), labels


def _let_go(ring: BatchRing, slot: int) -> None:
    ring.held.discard(slot)
    ring.release(slot)


def _stop(rings: list[BatchRing], pipes: list, processes: list) -> None:
    """Stop the workers: the stop byte first, then a wait, then the hard way. Only in the
    training process (a forked copy of a running loop may be cleaned up elsewhere)."""
    if rings and os.getpid() != rings[0].owner:
        return
    for ring in rings:
        ring.stop()
    for process in processes:
        process.join(timeout=_STOP_WAIT_S)
        if process.is_alive():  # stuck in a read, say
            process.terminate()
            process.join(timeout=5)
    for pipe in pipes:
        pipe.close()
