"""The installed synthface version, as recorded in the files synthface writes (banks, model folders, datasets)."""

from __future__ import annotations


def synthface_version() -> str:
    """The installed package's version; "unknown" when running from a source tree that is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("synthface")
    except PackageNotFoundError:
        return "unknown"
