"""Loader worker processes (eval/loader.py): batches handed over in shared memory, the
slots' lifetimes, and what the training process sees when a worker fails or goes away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from eval.config import DataConfig
from eval.data import ShardStream, make_loader, resolve_dataset
from eval.loader import RING_SLOTS
from eval.toydata import pattern_images, write_pattern_dataset
from synthface.errors import InputDataError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_pattern_dataset(tmp_path_factory.mktemp("toy") / "ds", num_classes=4, images_per_class=6, shards=2)


def _cfg(workers=1, **overrides):
    return DataConfig(**{"batch_size": 3, "num_workers": workers, "shuffle_buffer": 5, "flip": True, **overrides})


def _loader_children() -> set[int]:
    return {p.pid for p in psutil.Process().children()}


def test_a_batch_dropped_in_time_is_its_slot_and_the_slot_comes_back(toy):
    """A loop that lets go of each batch gets every batch without a copy; the worker reuses
    the slots (far more batches than slots) and the batches are still the right ones."""
    spec = resolve_dataset(str(toy))
    expected = iter(ShardStream(spec, _cfg(0), seed=2))
    loader = make_loader(spec, _cfg(1), seed=2)
    for step, (images, labels) in enumerate(loader):
        want_images, want_labels = next(expected)
        assert torch.equal(images, want_images) and torch.equal(labels, want_labels)
        if step == 4 * RING_SLOTS:
            break
    assert loader.copies == 0  # every batch was the slot itself


def test_views_of_a_batch_keep_its_slot(toy):
    """Only a view of each batch is kept (the batch itself is dropped): the slot must stay out
    of the worker's reach until that view is gone too, while the loader goes on."""
    spec = resolve_dataset(str(toy))
    expected = iter(ShardStream(spec, _cfg(0), seed=5))
    loader = make_loader(spec, _cfg(1), seed=5)
    kept, wanted = [], []
    for images, _ in loader:
        kept.append(images[1:])
        wanted.append(next(expected)[0][1:])
        if len(kept) == 3 * RING_SLOTS:
            break
    assert all(torch.equal(a, b) for a, b in zip(kept, wanted))
    assert loader.copies > 0  # holding every slot: the rest came as copies, and nothing stalled


def test_a_worker_error_is_raised_here_as_itself_with_the_workers_traceback(tmp_path):
    from test_eval_data import _jpeg, _write_shard

    good = _jpeg(pattern_images([0])[0])
    root = _write_shard(tmp_path / "ds", [("0000000_000", {"jpg": good, "cls": b"0"}),
                                           ("0000001_000", {"jpg": b"\xff\xd8 not a jpeg", "cls": b"1"})])
    before = _loader_children()
    with pytest.raises(InputDataError, match="0000001_000.*undecodable") as err:
        next(iter(make_loader(resolve_dataset(str(root)), _cfg(1, batch_size=2, shuffle_buffer=0))))
    assert "in loader worker 0" in str(err.value.__cause__) and "_fill" in str(err.value.__cause__)
    _wait_until_gone(_loader_children() - before)


def _running_loader(toy):
    """A two-worker loader that has handed out its first batch, and its worker pids."""
    before = _loader_children()
    batches = iter(make_loader(resolve_dataset(str(toy)), _cfg(2), seed=1))
    next(batches)
    workers = _loader_children() - before
    assert len(workers) == 2
    return batches, workers


def test_a_killed_worker_is_an_error_naming_the_signal_not_a_hang(toy):
    batches, workers = _running_loader(toy)
    os.kill(min(workers), signal.SIGKILL)
    with pytest.raises(RuntimeError, match=r"loader worker \d stopped unexpectedly \(exit code -9\)"):
        for _ in range(10 * RING_SLOTS):  # the batches it had ready still come first
            next(batches)
    _wait_until_gone(workers)


def test_workers_stop_when_the_loop_ends_or_their_training_process_dies(toy, tmp_path):
    batches, workers = _running_loader(toy)
    batches.close()  # what leaving a for loop (or dropping the iterator) does
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in workers)

    # A training process killed outright runs no cleanup: its workers notice and exit.
    pids = tmp_path / "pids"
    script = (
        "import os, psutil\n"
        "from eval.config import DataConfig\n"
        "from eval.data import make_loader, resolve_dataset\n"
        "cfg = DataConfig(batch_size=3, num_workers=2, shuffle_buffer=5)\n"
        f"it = iter(make_loader(resolve_dataset({str(toy)!r}), cfg))\n"
        "next(it)\n"
        f"open({str(pids)!r}, 'w').write(' '.join(str(p.pid) for p in psutil.Process().children()))\n"
        "os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    orphans = {int(pid) for pid in pids.read_text().split()}
    assert len(orphans) == 2
    _wait_until_gone(orphans)


class _FiniteStream:
    """A stand-in for ShardStream: three batches per worker (worker id in every pixel), then
    the end, or an error when ``fail`` is given."""

    def __init__(self, fail: BaseException | None = None):
        self.cfg = DataConfig(batch_size=2)
        self.fail = fail

    def batches(self, claim, worker=0, num_workers=1):
        for step in range(3):
            if self.fail is not None and step == 1:
                raise self.fail
            handle, rows, labels = claim()
            rows[:] = worker
            labels[:] = step
            yield handle


class _StuckStream(_FiniteStream):
    """One batch, then a read that never returns (a stalled network mount, say)."""

    def batches(self, claim, worker=0, num_workers=1):
        handle, rows, labels = claim()
        rows[:], labels[:] = 0, 0
        yield handle
        time.sleep(3600)


def test_a_worker_stuck_but_alive_is_an_error_after_the_timeout_not_a_hang(monkeypatch):
    from eval.loader import Loader

    monkeypatch.setattr("eval.loader._STOP_WAIT_S", 0.5)  # it will not finish its batch: terminate it sooner
    before = _loader_children()
    loader = Loader(_StuckStream(), workers=1)
    batches = iter(loader)
    next(batches)  # no timeout for the first batch: a slow start on a loaded machine is not what is tested
    loader.timeout_s = 1.0
    started = time.monotonic()
    with pytest.raises(InputDataError, match=r"loader worker 0 .* no batch for 1 s \(data\.worker_timeout_s\)"):
        next(batches)
    assert time.monotonic() - started < 30
    _wait_until_gone(_loader_children() - before)
    # the config key behind it: 0 waits forever, a negative value is refused by name
    assert DataConfig().worker_timeout_s > 0 and DataConfig(worker_timeout_s=0).worker_timeout_s == 0
    with pytest.raises(ValueError, match="worker_timeout_s"):
        DataConfig(worker_timeout_s=-1)


def test_a_finite_stream_ends_the_loop_cleanly():
    from eval.loader import Loader

    got = [(int(images.max()), labels.tolist()) for images, labels in Loader(_FiniteStream(), workers=2)]
    assert got == [(0, [0, 0]), (1, [0, 0]), (0, [1, 1]), (1, [1, 1]), (0, [2, 2]), (1, [2, 2])]


class _TwoArgumentError(Exception):
    def __init__(self, what, where):
        super().__init__(f"{what} at {where}")


def test_an_error_that_does_not_unpickle_still_arrives_with_its_text():
    from eval.loader import Loader

    with pytest.raises(RuntimeError, match="_TwoArgumentError: bad shard at step 1") as err:
        list(Loader(_FiniteStream(fail=_TwoArgumentError("bad shard", "step 1")), workers=1))
    assert "in loader worker 0" in str(err.value.__cause__)


def test_only_the_training_process_can_free_a_slot():
    """A process forked from the training process inherits the batches' finalizers; if it ran
    one, the worker would refill a slot the training process still reads."""
    import multiprocessing

    from eval.loader import BatchRing

    context = multiprocessing.get_context("fork")
    ring = BatchRing(batch_size=1, slots=2, context=context)
    slot = ring.take_free_slot(lambda: True)
    child = context.Process(target=ring.release, args=(slot,))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0 and ring._flags()[slot] == 1  # still busy
    ring.release(slot)
    assert ring._flags()[slot] == 0


def _wait_until_gone(pids, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE}
        time.sleep(0.05)
    assert not alive, f"loader worker processes {sorted(alive)} still running"
