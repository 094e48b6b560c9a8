"""Five-point similarity alignment to the ArcFace 112x112 template.

ArcFace-family recognizers were trained on crops made this way, so an
embedding is only meaningful for a crop aligned to the same template.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

CROP_SIZE = 112

# Where the eyes (left, right as seen), nose tip and mouth corners sit in a
# 112x112 ArcFace training crop (the standard insightface reference points).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def template_for(size: int = CROP_SIZE) -> np.ndarray:
    """The template scaled to a ``size`` x ``size`` crop."""
    return ARCFACE_TEMPLATE * (size / CROP_SIZE)


def estimate_transform(landmarks: np.ndarray, size: int = CROP_SIZE) -> np.ndarray | None:
    """The 2x3 similarity matrix mapping ``landmarks`` (5x2, image px) onto the template, or
    None when it cannot be estimated (non-finite or degenerate points)."""
    src = np.asarray(landmarks, dtype=np.float64)
    if src.shape != (5, 2) or not np.isfinite(src).all():
        return None
    if np.ptp(src, axis=0).max() < 1e-3:  # all points on top of each other
        return None
    dst = template_for(size).astype(np.float64)
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        tform = SimilarityTransform.from_estimate(src, dst)
        if not tform:
            return None
    else:  # older scikit-image
        tform = SimilarityTransform()
        if not tform.estimate(src, dst):
            return None
    matrix = np.asarray(tform.params[:2], dtype=np.float64)
    if not np.isfinite(matrix).all() or not (1e-4 < tform.scale < 1e4):
        return None
    return matrix


def warp_to_template(image: np.ndarray, matrix: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Apply a 2x3 matrix from :func:`estimate_transform`; pixels from outside the image are black."""
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = CROP_SIZE) -> np.ndarray | None:
    """The aligned ``size`` x ``size`` crop, or None when the transform cannot be estimated."""
    matrix = estimate_transform(landmarks, size)
    if matrix is None:
        return None
    return warp_to_template(image, matrix, size)


GENERATED_SIZE = 512  # Arc2Face's output side


def generated_like(image: np.ndarray, landmarks: np.ndarray, size: int = GENERATED_SIZE) -> tuple[np.ndarray, np.ndarray] | None:
    """``image`` warped to a ``size``-px ArcFace-framed face (how Arc2Face frames its outputs),
    and where its landmarks land; None when the transform cannot be estimated."""
    matrix = estimate_transform(landmarks, CROP_SIZE)
    if matrix is None:
        return None
    matrix = matrix * (size / CROP_SIZE)
    return warp_to_template(image, matrix, size), transform_points(landmarks, matrix).astype(np.float32)
