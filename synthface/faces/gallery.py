"""A gallery of real-face embeddings from a folder of photos (`synthface embed-gallery`).

The gallery is ``float32 [M, D]`` unit rows in a ``.npy`` file (novelty screening and the
packing prior read it); beside it a ``.csv`` report has one row per image: its gallery row
or why it failed. Both are written atomically, and only when at least one face was embedded.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthface.errors import InputDataError, OutputError
from synthface.faces.embed_files import EmbeddedFile, Progress, embed_files
from synthface.files import atomic_path

REPORT_FIELDS = ["image", "row", "status", "reason", "det_score", "num_faces", "detail"]


@dataclass
class GalleryResult:
    out: Path
    report_path: Path
    images: int  # image files in the folder
    shape: tuple[int, int]  # of the gallery written
    failed: int

    def summary(self) -> str:
        rows, dim = self.shape
        return (
            f"embedded {rows}/{self.images} images -> {self.out} ({rows} x {dim} float32); "
            f"{self.failed} failed; per-image report {self.report_path}"
        )


def prepare_out(out: Path) -> Path:
    """Check ``out`` (a .npy) and create its folder, before any long work; returns the report's path."""
    if out.suffix != ".npy":
        raise InputDataError(f"--out must be a .npy file (the report goes beside it as .csv), got {out}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"--out {out}: cannot create its folder ({exc.strerror or exc})") from None
    return out.with_suffix(".csv")


def report_rows(files: list[EmbeddedFile]) -> list[dict]:
    """One report row per file, in file order; ``row`` is the file's gallery row (-1: failed)."""
    rows, embedded = [], 0
    for f in files:
        row = {"image": f.path.name, "row": -1}
        if f.reason != "unreadable":  # an unreadable file was never analysed
            row.update(det_score=round(f.det_score, 4), num_faces=f.num_faces)
        if f.ok:
            row.update(row=embedded, status="ok", reason="", detail=f.detail)
            embedded += 1
        else:
            row.update(status="failed", reason=f.reason, detail=f.detail)
        rows.append(row)
    return rows


def write_gallery(out: Path, gallery: np.ndarray, rows: list[dict]) -> Path:
    """The gallery .npy and its .csv report, each replaced atomically; returns the report's path."""
    report_path = out.with_suffix(".csv")
    try:
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:
            np.save(fh, gallery)  # a file object: np.save would add .npy to the temp name
        with atomic_path(report_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=REPORT_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:  # disk full, no permission, a folder in the way
        raise OutputError(f"cannot write {out} / {report_path.name}: {exc.strerror or exc}") from None
    return report_path


def embed_gallery(
    images_dir: Path, out: Path, models_dir, faces_cfg, *,
    progress: Progress | None = None, on_failed: Callable[[dict], None] | None = None,
) -> GalleryResult:
    """Embed every image of ``images_dir`` (the largest face of each) into the gallery ``out``.

    Images that fail are skipped (``on_failed(row)`` is called for each, in file order);
    no embedded image at all is an InputDataError and nothing is written.
    """
    from synthface.faces.analyzer import FaceAnalyzer
    from synthface.faces.images import list_images

    paths = list_images(images_dir)
    if not paths:
        raise InputDataError(f"no images (.jpg, .png, ...) in {images_dir}")
    analyzer = FaceAnalyzer.from_config(models_dir, faces_cfg)
    files = embed_files(analyzer, paths, faces_cfg.batch_size, progress)
    rows = report_rows(files)
    failed = [r for r in rows if r["status"] != "ok"]
    for r in failed if on_failed else ():
        on_failed(r)
    embeddings = [f.embedding for f in files if f.ok]
    if not embeddings:
        raise InputDataError(f"no face could be embedded from the {len(paths)} images in {images_dir}; nothing written")
    gallery = np.stack(embeddings).astype(np.float32)
    report_path = write_gallery(out, gallery, rows)
    return GalleryResult(out, report_path, len(paths), gallery.shape, len(failed))
