"""What every benchmark shares: the device it runs on, the machine's load beside each
timing, process CPU time, and the atomic JSON result file."""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synthface.errors import ConfigError


def load_average() -> float:
    """The 1-minute load average (NaN where the OS has none): benchmarks print it,
    since timings on a shared machine mean little without it."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def load_warning(load: float | None = None, cpus: int | None = None) -> str | None:
    """A warning line when the load average is above the core count (else None): other
    processes then share the cores, and the timings (and their ratios) are unreliable."""
    load = load_average() if load is None else load
    cpus = cpus or os.cpu_count()
    if cpus and load > cpus:
        return (
            f"warning: load average {load:.1f} on {cpus} CPUs: other processes share this machine, "
            "so these timings (and ratios) are unreliable"
        )
    return None


def warn_if_loaded(echo: Callable[[str], None] = print) -> None:
    """Print :func:`load_warning` when there is one: every benchmark ends with it."""
    if warning := load_warning():
        echo(warning)


def assets_dir() -> Path:
    """The shared test assets (real models, face photos, verification .bin files):
    $SYNTHFACE_ASSETS, else ``shared/assets`` beside the checkout."""
    return Path(os.environ.get("SYNTHFACE_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets"))


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far: they help read wall times
    taken on a shared, loaded machine."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def resolve_device(name: str | None = "auto"):
    """``auto`` (or None) -> CUDA when torch sees one, else CPU: the generator's own rule,
    so a benchmark runs where production would. A bad name is a ConfigError naming --device."""
    from synthface.generation.generator import resolve_device as generator_device

    try:
        return generator_device(name)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("generation.device", "--device")) from None


def resolve_dtype(name: str | None, device):
    """``auto`` -> float16 on CUDA, float32 elsewhere (the generator's rule); returns the torch dtype."""
    from synthface.generation.generator import resolve_dtype as generator_dtype

    try:
        return generator_dtype(name, device)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("generation.dtype", "--dtype")) from None


def write_result(path: str | Path | None, result: Any) -> None:
    """Write a benchmark's result as indented JSON, atomically (a run cut short leaves the
    previous whole file, never half of one); nothing when ``path`` is None."""
    if path:
        from synthface.files import write_text_atomic

        write_text_atomic(path, json.dumps(result, indent=2, default=str))
