"""Atomic local file writes (the one temp-file-and-rename) and the one file sha256.

A reader (or a resumed run) sees either the old file or the whole new one, never a
half-written file, even when the process is killed mid-write. S3 writes are atomic
per object and go through ``synthface.shards.storage.Output``, which uses this for
its local side.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temp path in ``path``'s folder; on success it replaces ``path``, on error it is removed.

    The caller writes the temp path with any library (``pq.write_table``, ``PIL.save``, ``open``).
    ``fsync=True`` flushes the file to disk before the rename (committed shard files).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_file(path)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _new_temp_file(path: Path) -> Path:
    """Create an empty ``.{name}.{random}.tmp`` beside ``path``.

    Not ``tempfile.mkstemp``: it creates mode 0600 files, and the renamed result (a shard,
    a bank) would then be unreadable to other users; mode 0666 here is reduced by the
    umask like any ``open(path, "w")``.
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # another writer's temp file: draw another name
            continue


def write_bytes_atomic(path: str | Path, data: bytes, *, fsync: bool = False) -> Path:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str, *, fsync: bool = False) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync)


def write_json_atomic(path: str | Path, data: Any, *, indent: int = 2, sort_keys: bool = False) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")


def sha256_file(path_or_url: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, read in chunks: a local path or any fsspec URL (e.g. an s3:// bank)."""
    import fsspec

    digest = hashlib.sha256()
    with fsspec.open(str(path_or_url), "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def files_sha256(folder: str | Path, names: list[str], contents: bool = True) -> str:
    """One sha256 over ``names`` (local files relative to ``folder``, in the given order) and
    each file's bytes, or only its size with ``contents=False`` (a stat per file instead of a
    read: for folders too large to read at every start). Unreadable files raise OSError."""
    digest = hashlib.sha256()
    for name in names:
        path = Path(folder) / name
        if contents:
            with path.open("rb") as f:
                what = hashlib.file_digest(f, "sha256").hexdigest()
        else:
            what = str(path.stat().st_size)
        digest.update(f"{name}\0{what}\0".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()
