"""Checking images before they reach the models, and reading image files.

The analyzer's contract is uint8 RGB ``H x W x 3``. Anything else (grey
``H x W``, RGBA, float, empty) is turned away as ``bad_image`` with a detail,
never converted silently: in the pipeline such an array means a bug upstream.
Files read from disk (galleries) are converted to RGB, as a user expects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthface.errors import InputDataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MIN_SIDE = 8  # smaller than this cannot hold a detectable face at any scale


def image_problem(image) -> str | None:
    """Why ``image`` is not a usable uint8 RGB ``H x W x 3`` array, or None when it is."""
    if not isinstance(image, np.ndarray):
        return f"expected a numpy array, got {type(image).__name__}"
    if image.dtype != np.uint8:
        return f"expected uint8 pixels, got {image.dtype}"
    if image.ndim == 2:
        return f"expected H x W x 3 RGB, got a single-channel (grey) image of shape {image.shape}"
    if image.ndim != 3 or image.shape[2] != 3:
        return f"expected H x W x 3 RGB, got shape {image.shape}"
    if min(image.shape[:2]) < MIN_SIDE:
        return f"image {image.shape[1]}x{image.shape[0]} is smaller than {MIN_SIDE} px on a side"
    return None


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (sorted by name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputDataError(f"image folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB (grey, palette and alpha images are converted;
    EXIF rotation applied). Raises InputDataError when it cannot be decoded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise InputDataError(f"cannot read image {path}: {exc}") from None
