"""One run per output folder: an exclusive lock file at the output root.

``synthface generate`` holds ``synthface-run.lock`` in OUT for its whole run,
so a second driver on the same OUT (same config or another, with or without
``--restart``) is refused instead of redoing or mixing shards.

The lock is a small JSON file created exclusively: ``O_CREAT | O_EXCL`` on a
local or shared disk, a conditional PUT (``If-None-Match: *``, fsspec's
``mode="create"``) on S3. It names its holder (host, pid, the process's start
time) and carries a heartbeat the holder rewrites every ``heartbeat_s``.

A lock left by a driver that was killed is recognised as stale and taken
over: on the same host when its process is gone (or the pid now belongs to a
younger process), from another host when its heartbeat is older than
``lease_s``. Otherwise the refusal says who holds it and how to clear it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from synthface.errors import OutputError, RunStateError
from synthface.shards.storage import Output

log = logging.getLogger("synthface.generate")

LOCK_FILE = "synthface-run.lock"
LEASE_S = 300.0  # a lock from another host is stale after this long without a heartbeat
HEARTBEAT_S = 30.0


def _process_start(pid: int) -> float | None:
    """The start time of a live process, None when there is none with that pid."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # alive, owned by someone else
        return -1.0


class OutputLock:
    """The exclusive lock on one output folder; use as a context manager."""

    def __init__(
        self,
        output: Output,
        lease_s: float = LEASE_S,
        heartbeat_s: float = HEARTBEAT_S,
        command: str = "synthface generate",
    ):
        self.output = output
        self.command = command  # named in the refusal another run gets
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False

    # ------------------------------------------------------------------ record
    def _record(self) -> dict[str, Any]:
        import psutil

        return {
            "token": self.token,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_started": psutil.Process().create_time(),
            "started": getattr(self, "_started", None) or time.time(),
            "heartbeat": time.time(),
            "lease_s": self.lease_s,
            "command": self.command,
        }

    def _encode(self) -> bytes:
        record = self._record()
        self._started = record["started"]
        return (json.dumps(record, indent=2) + "\n").encode("utf-8")

    @property
    def url(self) -> str:
        return self.output.url_of(LOCK_FILE)

    def _read(self) -> dict[str, Any] | None:
        """The current lock record; None when there is no lock; {} when it is unreadable."""
        try:
            data = self.output.fs.cat_file(self.output.path(LOCK_FILE))
        except FileNotFoundError:
            return None
        try:
            record = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {}
        return record if isinstance(record, dict) else {}

    # ------------------------------------------------------------------ create
    def _create(self) -> bool:
        """Create the lock file exclusively; False if it already exists."""
        data = self._encode()
        path = self.output.path(LOCK_FILE)
        try:
            if self.output.is_local:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                try:
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            else:
                self.output.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        except OSError as exc:
            raise OutputError(f"cannot create the run lock {self.url}: {exc.strerror or exc}") from None
        return True

    def stale_reason(self, record: dict[str, Any]) -> str | None:
        """Why a lock record belongs to a run that is gone; None when its holder may be alive."""
        if not record:
            return "the lock file is unreadable"
        age = time.time() - float(record.get("heartbeat", 0))
        if record.get("host") == socket.gethostname():
            started = _process_start(int(record.get("pid", -1)))
            if started is None:
                return f"process {record.get('pid')} on this host is gone"
            if started > 0 and abs(started - float(record.get("pid_started", 0))) > 1.0:
                return f"pid {record.get('pid')} now belongs to another process"
            return None
        if age > float(record.get("lease_s", self.lease_s)):
            return f"no heartbeat for {age:.0f} s (lease {float(record.get('lease_s', self.lease_s)):.0f} s)"
        return None

    def _describe(self, record: dict[str, Any]) -> str:
        started = record.get("started")
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(started))) if started else "?"
        beat = time.time() - float(record.get("heartbeat", 0))
        return f"host {record.get('host')}, pid {record.get('pid')}, started {when}, last heartbeat {beat:.0f} s ago"

    def acquire(self) -> None:
        self.output.makedirs()
        for _ in range(3):
            if self._create():
                self._confirm()
                self.held = True
                self._start_heartbeat()
                return
            record = self._read()
            if record is None:
                continue  # released in between: try again
            reason = self.stale_reason(record)
            if reason is None:
                raise RunStateError(
                    f"{self.output.url} is in use by another `synthface generate` ({self._describe(record)}); "
                    f"wait for it to finish. If that run is gone (killed on another machine), delete "
                    f"{self.url} and rerun: its committed shards are kept"
                )
            log.warning("%s: taking over a stale lock (%s; %s)", self.output.url, reason, self._describe(record))
            self.output.remove(LOCK_FILE)
        raise RunStateError(f"could not take the run lock {self.url}: other drivers keep taking it; try again")

    def _confirm(self) -> None:
        """On object stores two drivers breaking one stale lock could both create it; the later
        write wins, so read back and give up if ours is not the one there."""
        if self.output.is_local:
            return
        record = self._read()
        if not record or record.get("token") != self.token:
            raise RunStateError(f"{self.output.url}: another driver took the run lock {self.url} at the same time")

    # ------------------------------------------------------------------ heartbeat
    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="synthface-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                record = self._read()
                if not record or record.get("token") != self.token:
                    log.error("%s: the run lock %s was removed or taken by another driver", self.output.url, self.url)
                    return
                self.output.write_bytes(LOCK_FILE, self._encode())
            except Exception as exc:  # noqa: BLE001 - a missed heartbeat is retried at the next one
                log.warning("%s: could not refresh the run lock (%s)", self.output.url, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if not self.held:
            return
        self.held = False
        try:
            record = self._read()
            if record and record.get("token") == self.token:
                self.output.remove(LOCK_FILE)
        except Exception as exc:  # noqa: BLE001 - the next run sees a stale lock and takes it over
            log.warning("%s: could not remove the run lock %s (%s)", self.output.url, self.url, exc)

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
