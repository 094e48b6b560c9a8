"""What every benchmark shares: the machine's load, printed beside each timing."""

from __future__ import annotations

import os


def load_average() -> float:
    """The 1-minute load average (NaN where the OS has none): benchmarks print it,
    since timings on a shared machine mean little without it."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
