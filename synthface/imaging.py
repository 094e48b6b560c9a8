"""Small image helpers shared by the CLI and the dataset card: PNG writing and contact sheets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from synthface.files import atomic_path

BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 RGB (or gray) array as PNG, atomically (temp file + rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG")
    return path


def contact_sheet(
    rows: Sequence[Sequence[np.ndarray | None]],
    row_labels: Sequence[str] | None = None,
    tile: int = 128,
    pad: int = 4,
    label_width: int = 72,
    *,
    background: tuple[int, int, int] = BACKGROUND,
    text: tuple[int, int, int] = TEXT,
    label_x: int | None = None,
) -> np.ndarray:
    """A grid image: one row per identity, one column per image (uint8 RGB).

    ``rows[r][c]`` is a uint8 H×W×3 image (any size, resized to ``tile``) or
    None for an empty cell (e.g. a rejected sample). Row labels are drawn on
    the left when given, ``label_x`` pixels from the edge (default ``pad``).
    The dataset card draws its sheet with ``pad=0`` on white.
    """
    if not rows:
        raise ValueError("contact_sheet needs at least one row")
    n_cols = max(len(r) for r in rows)
    if n_cols == 0:
        raise ValueError("contact_sheet needs at least one image")
    left = label_width if row_labels else 0
    width = left + pad + n_cols * (tile + pad)
    height = pad + len(rows) * (tile + pad)
    sheet = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        y = pad + r * (tile + pad)
        if row_labels:
            draw.text((pad if label_x is None else label_x, y + tile // 2 - 6), str(row_labels[r]), fill=text)
        for c, image in enumerate(row):
            if image is None:
                continue
            x = left + pad + c * (tile + pad)
            cell = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
            if cell.size != (tile, tile):
                cell = cell.resize((tile, tile), Image.Resampling.LANCZOS)
            sheet.paste(cell, (x, y))
    return np.asarray(sheet)
