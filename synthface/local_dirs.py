"""Creating a local output folder with one clear error (a regular file in the way, no
permission, a full disk) instead of an OSError traceback."""

from __future__ import annotations

from pathlib import Path

from synthface.errors import OutputError


def ensure_dir(path: str | Path, what: str) -> Path:
    """``mkdir -p path``; OutputError naming ``what`` (e.g. "--out run1") when it cannot be made."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{what}: {path} exists and is not a folder") from None
    except OSError as exc:  # a file where a parent folder should be, no permission, disk full
        raise OutputError(f"{what}: cannot create the folder {path} ({exc.strerror or exc})") from None
    return path
