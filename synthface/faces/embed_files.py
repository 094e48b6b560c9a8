"""Embedding image files with the face analyzer: one report row per file.

Shared by ``synthface embed-gallery`` (a folder of photos -> a gallery) and
``synthface ids from-images`` (a folder per identity -> an identity bank).
Files are read and analysed in chunks of ``batch_size``; a file that cannot be
read or holds no usable face is a failed row (with the reason), never an
exception, so one bad file does not stop a long run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthface.errors import InputDataError
from synthface.faces.images import read_rgb

# progress(done, total)
Progress = Callable[[int, int], None]


@dataclass
class EmbeddedFile:
    """What became of one image file."""

    path: Path
    embedding: np.ndarray | None  # float32[D], unit norm; None when the file failed
    reason: str = ""  # "" when ok; unreadable, bad_image, no_face, align_failed, embed_failed
    detail: str = ""
    det_score: float = 0.0
    num_faces: int = 0

    @property
    def ok(self) -> bool:
        return self.embedding is not None


def embed_files(analyzer, paths: Sequence[Path], batch_size: int = 32, progress: Progress | None = None) -> list[EmbeddedFile]:
    """One :class:`EmbeddedFile` per path, in order (the largest face of each image is used)."""
    rows: list[EmbeddedFile] = []
    chunk = max(1, int(batch_size))
    for start in range(0, len(paths), chunk):
        batch_paths = list(paths[start : start + chunk])
        images, readable, unreadable = [], [], {}
        for p in batch_paths:
            try:
                images.append(read_rgb(p))
                readable.append(p)
            except InputDataError as exc:
                unreadable[p] = str(exc)
        analyzed = dict(zip(readable, analyzer.analyze(images) if images else []))
        for p in batch_paths:
            if p in unreadable:
                rows.append(EmbeddedFile(p, None, "unreadable", unreadable[p]))
                continue
            r = analyzed[p]
            if r.ok:
                detail = f"{r.num_faces} faces, used the largest" if r.num_faces > 1 else ""
                rows.append(EmbeddedFile(p, np.asarray(r.embedding, np.float32), "", detail, float(r.det_score), int(r.num_faces)))
            else:
                rows.append(EmbeddedFile(p, None, r.reason or "failed", r.detail or "", float(r.det_score), int(r.num_faces)))
        if progress:
            progress(start + len(batch_paths), len(paths))
    return rows
