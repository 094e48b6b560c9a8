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
    addresses = set()
    for step, (images, labels) in enumerate(loader):
        want_images, want_labels = next(expected)
        assert torch.equal(images, want_images) and torch.equal(labels, want_labels)
        addresses.add(images.data_ptr())
        if step == 4 * RING_SLOTS:
            break
    assert loader.copies == 0
    assert len(addresses) <= RING_SLOTS  # every batch was one of the worker's slots


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


def test_a_killed_worker_is_an_error_naming_the_signal_not_a_hang(toy):
    spec = resolve_dataset(str(toy))
    before = _loader_children()
    batches = iter(make_loader(spec, _cfg(2), seed=1))
    next(batches)
    workers = _loader_children() - before
    assert len(workers) == 2
    os.kill(min(workers), signal.SIGKILL)
    with pytest.raises(RuntimeError, match=r"loader worker \d stopped unexpectedly \(exit code -9\)"):
        for _ in range(10 * RING_SLOTS):  # the batches it had ready still come first
            next(batches)
    _wait_until_gone(workers)


def test_workers_stop_when_the_loop_ends_or_their_training_process_dies(toy, tmp_path):
    spec = resolve_dataset(str(toy))
    before = _loader_children()
    batches = iter(make_loader(spec, _cfg(2), seed=1))
    next(batches)
    workers = _loader_children() - before
    assert len(workers) == 2
    batches.close()  # what leaving a for loop (or dropping the iterator) does
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in workers)

    # A training process killed outright runs no cleanup: its workers notice and exit.
    script = (
        "import os, sys, psutil\n"
        "from eval.config import DataConfig\n"
        "from eval.data import make_loader, resolve_dataset\n"
        f"cfg = DataConfig(batch_size=3, num_workers=2, shuffle_buffer=5)\n"
        f"it = iter(make_loader(resolve_dataset({str(toy)!r}), cfg))\n"
        "next(it)\n"
        "print(' '.join(str(p.pid) for p in psutil.Process().children()), flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    orphans = {int(pid) for pid in done.stdout.split()}
    assert len(orphans) == 2, done.stderr
    _wait_until_gone(orphans)


def _wait_until_gone(pids, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE}
        time.sleep(0.05)
    assert not alive, f"loader worker processes {sorted(alive)} still running"
