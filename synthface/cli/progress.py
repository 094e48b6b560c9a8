"""Progress bars of the CLI: the stages report ``progress(done, total)``; these draw it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def rate_bar(label: str, digits: int = 1, console=None) -> Iterator[Callable[[int, int], None]]:
    """A transient bar with images per second; yields the ``progress(done, total)`` callback.

    The rate counts from the start of the block, or from a call with ``done == 0`` (a
    library calls that once its model is loaded, so the load is not in the rate).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        state = {"t0": time.perf_counter()}

        def advance(done: int, total: int) -> None:
            if "task" not in state:
                state["task"] = progress.add_task(label, total=total, rate="")
            if done == 0:
                state["t0"] = time.perf_counter()
                return
            rate = done / max(time.perf_counter() - state["t0"], 1e-9)
            progress.update(state["task"], completed=done, total=total, rate=f"{rate:.{digits}f} img/s")

        yield advance


@contextmanager
def count_bar(label: str, console=None) -> Iterator[Callable[[int, int], None]]:
    """A transient bar with the elapsed time; yields the ``progress(done, total)`` callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(label, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)
