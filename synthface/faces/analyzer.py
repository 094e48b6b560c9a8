"""Detect, align and embed: the face analysis stage in one object.

``FaceAnalyzer`` loads the detector and recognizer once (a GPU worker keeps it
for its lifetime) and turns a batch of images into one :class:`FaceResult`
each. It never raises on a bad image: the result says why it was rejected.
Which face counts as "the" face of an image: the largest detection.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from synthface.faces.align import CROP_SIZE, estimate_transform, warp_to_template
from synthface.faces.config import FaceAnalysisConfig
from synthface.faces.detector import SCRFDDetector
from synthface.faces.head_pose import estimate_head_pose
from synthface.faces.images import image_problem
from synthface.faces.onnx_session import resolve_model_path
from synthface.faces.recognizer import ArcFaceRecognizer


@dataclass
class FaceResult:
    """What the analyzer found in one image.

    ``ok`` is False with a snake_case ``reason`` (``bad_image``, ``no_face``,
    ``align_failed``, ``embed_failed``) and a human ``detail`` when the image yields no embedding.
    """

    ok: bool
    reason: str | None = None
    det_score: float = 0.0
    bbox: np.ndarray | None = None  # float32[4] x1, y1, x2, y2 of the chosen (largest) face
    landmarks: np.ndarray | None = None  # float32[5, 2]
    num_faces: int = 0  # detections above faces.det_score_threshold after NMS
    aligned: np.ndarray | None = None  # uint8[112, 112, 3]
    embedding: np.ndarray | None = None  # float32[D], unit norm
    # area of the second-largest face over the chosen one (0 when alone): the filter's
    # "one dominant face" rule reads it
    second_face_ratio: float = 0.0
    detail: str | None = None
    # (yaw, pitch, roll) in degrees from the 5 landmarks (synthface.faces.head_pose); None without a face
    head_pose: tuple[float, float, float] | None = None


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


class FaceAnalyzer:
    def __init__(self, detector: SCRFDDetector, recognizer: ArcFaceRecognizer, cfg: FaceAnalysisConfig):
        self.detector = detector
        self.recognizer = recognizer
        self.cfg = cfg

    @classmethod
    def from_config(cls, models_dir: str | Path | None, cfg: FaceAnalysisConfig | None = None) -> "FaceAnalyzer":
        """Load both models; file names in ``cfg`` are relative to ``models_dir`` unless absolute.
        Raises MissingModelError (naming the file) when one is missing or unusable."""
        cfg = cfg or FaceAnalysisConfig()
        det_path = resolve_model_path(models_dir, cfg.detector, "faces.detector")
        rec_path = resolve_model_path(models_dir, cfg.recognizer, "faces.recognizer")
        return cls(SCRFDDetector.load(det_path, cfg), ArcFaceRecognizer.load(rec_path, cfg), cfg)

    @property
    def embedding_dim(self) -> int:
        return self.recognizer.embedding_dim

    def describe(self) -> dict:
        """Model files and settings, for sample metadata and dataset manifests."""
        return {
            "detector": str(self.detector.path),
            "detector_input": list(self.detector.input_hw),
            "recognizer": str(self.recognizer.path),
            "recognizer_normalisation": self.recognizer.normalisation,
            "embedding_dim": self.embedding_dim,
            "flip_average": self.cfg.flip_average,
            "det_score_threshold": self.cfg.det_score_threshold,
            "providers": self.detector.session.get_providers(),
        }

    def analyze(self, images: Sequence[np.ndarray]) -> list[FaceResult]:
        """One FaceResult per image, in order; bad images are rejections, not exceptions."""
        results: list[FaceResult | None] = [None] * len(images)
        usable: list[int] = []
        for i, image in enumerate(images):
            problem = image_problem(image)
            if problem is None and int(np.ptp(image)) == 0:
                problem = "image has a single colour"
            if problem is not None:
                results[i] = FaceResult(ok=False, reason="bad_image", detail=problem)
            else:
                usable.append(i)

        crops: list[np.ndarray] = []
        crop_owner: list[int] = []
        detections = self.detector.detect([np.ascontiguousarray(images[i]) for i in usable]) if usable else []
        for i, det in zip(usable, detections):
            if len(det) == 0:
                results[i] = FaceResult(ok=False, reason="no_face", detail="no detection above faces.det_score_threshold")
                continue
            areas = _area(det.boxes)
            order = np.argsort(-areas, kind="stable")
            main = int(order[0])
            second = float(areas[order[1]] / areas[main]) if len(order) > 1 and areas[main] > 0 else 0.0
            result = FaceResult(
                ok=False,
                det_score=float(det.scores[main]),
                bbox=det.boxes[main].copy(),
                landmarks=det.landmarks[main].copy(),
                num_faces=len(det),
                second_face_ratio=second,
                head_pose=estimate_head_pose(det.landmarks[main], images[i].shape[:2]),
            )
            results[i] = result
            matrix = estimate_transform(det.landmarks[main], CROP_SIZE)
            if matrix is None:
                result.reason, result.detail = "align_failed", "no similarity transform fits the 5 landmarks"
                continue
            result.aligned = warp_to_template(images[i], matrix, CROP_SIZE)
            size = self.recognizer.input_size
            # a recognizer trained on another crop size gets the same template, scaled
            crop = result.aligned if size == CROP_SIZE else warp_to_template(images[i], matrix * (size / CROP_SIZE), size)
            crops.append(crop)
            crop_owner.append(i)

        if crops:
            embeddings = self.recognizer.embed(np.stack(crops), flip_average=self.cfg.flip_average)
            for i, emb in zip(crop_owner, embeddings):
                if not np.isfinite(emb).all() or not np.any(emb):
                    results[i].reason, results[i].detail = "embed_failed", "recognizer gave a zero or non-finite embedding"
                    continue
                results[i].embedding = emb
                results[i].ok = True
        return results  # type: ignore[return-value]
