"""Config of the ID-similarity filter (`filter:` section).

The defaults are measured on the real test assets (docs/faces.md gives the
numbers and how to re-measure them for another recognizer).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from synthface.config import Cosine, StrictModel


class FilterConfig(StrictModel):
    """Which candidate images and classes become training data."""

    det_score_min: float = Field(
        0.6, ge=0.0, le=1.0, description="Reject an image whose face scores below this (low_det_score)."
    )
    max_second_face_ratio: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description=(
            "One dominant face: reject an image (multiple_faces) when its second-largest face has more than "
            "this fraction of the main face's area. 0 rejects any second face."
        ),
    )
    use_target: bool = Field(
        True,
        description=(
            "The recognizer embeds into the identity bank's space (true for Arc2Face's arcface.onnx), so "
            "tau_target applies. Set false for any other recognizer: the class is then judged by its centre only."
        ),
    )
    tau_target: Cosine = Field(
        0.4, description="Minimum cosine similarity to the target identity (low_target_sim)."
    )
    tau_intra: Cosine = Field(
        0.5,
        description="Minimum cosine similarity to the class centre, computed without the image itself (low_intra_sim).",
    )
    centre: Literal["medoid", "mean"] = Field(
        "mean", description="Class centre: normalised mean of the accepted embeddings, or their medoid."
    )
    min_images: int = Field(
        5, ge=1, le=100000, description="A class is kept only with at least this many accepted images (class_too_small)."
    )
    tau_inter: Cosine = Field(
        0.6,
        description="Two classes whose centres are at least this similar are the same person (inter_class_duplicate).",
    )
    inter_action: Literal["flag", "drop"] = Field(
        "drop", description="What to do with the later class of a too-similar pair: drop it, or keep it flagged."
    )
    yaw_target_std: float | None = Field(
        None,
        ge=1.0,
        le=90.0,
        description=(
            "Balance pose: a class with more accepted images than run.images_per_id keeps those whose head-yaw "
            "spread (std, degrees) is closest to this; needs run.oversample > 1 to have a choice. "
            "null: keep the first ones by index."
        ),
    )
    max_iterations: int = Field(
        5, ge=1, le=100, description="Rounds of re-estimating the class centre from the images it accepted."
    )
