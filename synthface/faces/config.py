"""Config of the face analysis stage (`faces:` section).

Model files are named relative to the model folder (``models_dir``) unless
given as absolute paths, so one config works on any machine that has run
``synthface models download``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from synthface.config import StrictModel


class FaceAnalysisConfig(StrictModel):
    """Detector, alignment and recognizer settings."""

    detector: str = Field(
        "scrfd_10g_bnkps.onnx",
        description="SCRFD detector ONNX file (insightface format, 5 landmarks); relative to models_dir or absolute.",
    )
    recognizer: str = Field(
        "arcface.onnx",
        description="ArcFace-family recognizer ONNX file; relative to models_dir or absolute.",
    )
    det_size: int = Field(
        256,
        ge=32,
        le=2048,
        multiple_of=32,
        description=(
            "Side of the square detector input (px, multiple of 32). Images are resized to fit, "
            "keeping aspect. 256 suits tight 512-px generated faces (see docs/faces.md); use 640 for photos "
            "where the face is small. Ignored when the model has a fixed input size."
        ),
    )
    det_score_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Detections scoring below this are not faces at all."
    )
    nms_threshold: float = Field(0.4, gt=0.0, le=1.0, description="IoU above which overlapping detections are merged.")
    max_faces: int = Field(
        10, ge=1, le=1000, description="Keep at most this many detections per image (by score) after NMS."
    )
    recognizer_input: Literal["auto", "raw", "pm1"] = Field(
        "auto",
        description=(
            "Pixel normalisation the recognizer expects: 'raw' = RGB 0..255 (the model normalises inside its "
            "graph, like the shared MobileFaceNet), 'pm1' = (x-127.5)/127.5 (arcface.onnx, glintr100, w600k), "
            "'auto' = 'raw' when the graph normalises its input itself (Sub/Mul/Div/Add on it among its first nodes), "
            "else 'pm1'."
        ),
    )
    flip_average: bool = Field(
        False, description="Average the embeddings of the crop and its mirror image (2x recognizer cost)."
    )
    batch_size: int = Field(32, ge=1, le=4096, description="Crops per recognizer call (and images per detector call when the detector takes batches).")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="onnxruntime device: 'auto' = CUDA when onnxruntime-gpu sees a GPU, else CPU."
    )
    threads: int = Field(0, ge=0, le=256, description="CPU threads per onnxruntime session (0 = onnxruntime's default).")
