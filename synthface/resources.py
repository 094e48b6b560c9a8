"""Memory checks made before a large allocation, so that a small input that
declares a huge size (an id range, an image count, an identity count) ends in
one message instead of the kernel's OOM killer."""

from __future__ import annotations

from synthface.errors import InputDataError

# leave room for everything else the process holds
USABLE_FRACTION = 0.8


def available_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def require_memory(nbytes: int, what: str, error: type[Exception] = InputDataError) -> None:
    """Raise ``error`` naming ``what`` when ``nbytes`` will not fit in the memory available now."""
    free = available_bytes()
    if nbytes > USABLE_FRACTION * free:
        raise error(f"{what} needs about {gib(nbytes)} of memory, but only {gib(free)} is available")
