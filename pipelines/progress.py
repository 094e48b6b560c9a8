"""Run progress: a rich bar on a terminal, plain log lines always.

The bar shows shards done, accepted images/s, acceptance rate and ETA. The log
lines (every ``log_every_s`` and at the end) carry the same numbers as
``key=value`` pairs, for cluster logs and grep.
"""

from __future__ import annotations

import logging
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

log = logging.getLogger("synthface.generate")


class RunProgress:
    def __init__(self, total_shards: int, already_done: int, log_every_s: float, console: Console | None = None):
        self.total = total_shards
        self.done = already_done
        self.skipped = already_done
        self.failed = 0
        self.accepted = 0
        self.candidates = 0
        self.log_every_s = log_every_s
        self.start = time.monotonic()
        self._last_log = self.start
        self.console = console or Console(stderr=True)
        self._bar: Progress | None = None
        if self.console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]shards"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} img/s  accepted {task.fields[accepted]}  ({task.fields[acc]})"),
                TimeElapsedColumn(),
                TextColumn("ETA {task.fields[eta]}"),
                console=self.console,
            )
            self._task = self._bar.add_task("generate", total=self.total, completed=self.done, **self._fields())
            self._bar.start()

    def _elapsed(self) -> float:
        return max(time.monotonic() - self.start, 1e-9)

    def _fields(self) -> dict[str, str]:
        rate = self.accepted / self._elapsed()
        acc = f"{self.accepted / self.candidates:.1%}" if self.candidates else "-"
        eta = self.eta_s()
        eta_text = "-" if eta is None else f"{int(eta) // 3600}:{int(eta) % 3600 // 60:02d}:{int(eta) % 60:02d}"
        return {"rate": f"{rate:.1f}", "accepted": str(self.accepted), "acc": acc, "eta": eta_text}

    def eta_s(self) -> float | None:
        finished_here = self.done - self.skipped
        if finished_here <= 0:
            return None
        return (self.total - self.done - self.failed) * self._elapsed() / finished_here

    def shard_done(self, stats: dict) -> None:
        self.done += 1
        self.accepted += int(stats.get("num_samples", 0))
        self.candidates += int(stats.get("num_candidates", 0))
        self._refresh()

    def shard_failed(self) -> None:
        self.failed += 1
        self._refresh()

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
        self.tick()

    def tick(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, **self._fields())
        now = time.monotonic()
        if now - self._last_log >= self.log_every_s:
            self._last_log = now
            self.log_line()

    def log_line(self, final: bool = False) -> None:
        eta = self.eta_s()
        fields = self._fields()
        line = (
            f"{'finished' if final else 'progress'} shards={self.done}/{self.total} failed={self.failed} "
            f"accepted={self.accepted} candidates={self.candidates} acceptance={fields['acc']} "
            f"img_per_s={fields['rate']} elapsed_s={self._elapsed():.0f} "
            f"eta_s={'-' if eta is None else f'{eta:.0f}'}"
        )
        log.info(line)  # on a terminal rich prints it above the bar

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        self.log_line(final=True)
