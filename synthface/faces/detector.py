"""SCRFD face detection (insightface model format) on onnxruntime.

An SCRFD model outputs, for each feature stride, a face score, four box
distances and five landmark offsets per anchor; distances and offsets are in
units of the stride, measured from the anchor centre (the top-left corner of
its grid cell). Outputs come grouped: all scores, then all boxes, then all
landmarks. 9 outputs = strides 8/16/32 with 2 anchors per cell (the usual
packs); 15 outputs = strides 8..128 with 1 anchor. Models exported with a
fixed batch of 1 (like buffalo's ``det_500m.onnx``) are run one image at a
time; batchable exports get several images per call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from synthface.errors import MissingModelError
from synthface.faces.onnx_session import describe_dim, open_session

log = logging.getLogger(__name__)

# number of outputs -> (strides, anchors per cell, has landmarks)
_LAYOUTS = {
    6: ((8, 16, 32), 2, False),
    9: ((8, 16, 32), 2, True),
    10: ((8, 16, 32, 64, 128), 1, False),
    15: ((8, 16, 32, 64, 128), 1, True),
}


@dataclass
class Detections:
    """The faces found in one image, best score first, in that image's pixel coordinates."""

    boxes: np.ndarray  # float32[K, 4] x1, y1, x2, y2
    scores: np.ndarray  # float32[K]
    landmarks: np.ndarray  # float32[K, 5, 2] eyes (left, right as seen), nose, mouth corners

    def __len__(self) -> int:
        return len(self.scores)


def _empty() -> Detections:
    return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))


class SCRFDDetector:
    def __init__(
        self,
        session,
        det_size: int = 256,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        max_faces: int = 10,
        batch_size: int = 32,
        path: Path | None = None,
    ):
        self.session = session
        self.path = path
        inputs = session.get_inputs()
        outputs = session.get_outputs()
        where = path or "detector"
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise MissingModelError(f"{where} does not look like an SCRFD detector: expected one [N,3,H,W] input")
        if len(outputs) not in _LAYOUTS:
            raise MissingModelError(
                f"{where} does not look like an SCRFD detector: expected 6, 9, 10 or 15 outputs, got {len(outputs)}"
            )
        self.strides, self.num_anchors, has_kps = _LAYOUTS[len(outputs)]
        if not has_kps:
            raise MissingModelError(f"{where} is an SCRFD detector without landmarks; alignment needs a *_kps model")
        self.input_name = inputs[0].name
        self.output_names = self._grouped_output_names(outputs)
        batch, _, height, width = inputs[0].shape
        self.fixed_batch = describe_dim(batch)
        fixed_h, fixed_w = describe_dim(height), describe_dim(width)
        # A model exported at a fixed size dictates it; otherwise the configured square.
        self.input_hw = (fixed_h, fixed_w) if fixed_h and fixed_w else (det_size, det_size)
        if self.input_hw != (det_size, det_size):
            log.warning("%s has a fixed input of %sx%s px; faces.det_size=%s is ignored", where, fixed_w, fixed_h, det_size)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_faces = max_faces
        self.batch_size = 1 if self.fixed_batch == 1 else batch_size
        self._centres: dict[tuple[int, int, int], np.ndarray] = {}

    @staticmethod
    def _grouped_output_names(outputs) -> list[str]:
        """Output names as scores, boxes, landmarks (each by stride). insightface exports already
        come in that order; an export ordered per stride is regrouped by its channel counts."""
        channels = [o.shape[-1] if o.shape else None for o in outputs]
        if all(isinstance(c, int) for c in channels) and set(channels) == {1, 4, 10}:
            return [o.name for c in (1, 4, 10) for o, oc in zip(outputs, channels) if oc == c]
        return [o.name for o in outputs]

    @classmethod
    def load(cls, path: Path, cfg) -> "SCRFDDetector":
        session = open_session(path, cfg.device, cfg.threads, what="face detector")
        return cls(
            session,
            det_size=cfg.det_size,
            score_threshold=cfg.det_score_threshold,
            nms_threshold=cfg.nms_threshold,
            max_faces=cfg.max_faces,
            batch_size=cfg.batch_size,
            path=path,
        )

    # -- preprocessing -------------------------------------------------------------------------
    def _letterbox(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Resize keeping aspect into the input canvas (top-left, zero padding); return canvas, scale."""
        in_h, in_w = self.input_hw
        h, w = image.shape[:2]
        scale = min(in_h / h, in_w / w)
        new_w, new_h = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR  # area averaging avoids aliasing on big photos
        resized = cv2.resize(image, (new_w, new_h), interpolation=interp)
        canvas = np.zeros((in_h, in_w, 3), np.uint8)
        canvas[:new_h, :new_w] = resized
        return canvas, scale

    def _anchor_centres(self, stride: int) -> np.ndarray:
        in_h, in_w = self.input_hw
        key = (in_h, in_w, stride)
        if key not in self._centres:
            gh, gw = in_h // stride, in_w // stride
            ys, xs = np.mgrid[:gh, :gw]
            centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
            # each cell's anchors are consecutive in the outputs
            self._centres[key] = np.repeat(centres, self.num_anchors, axis=0)
        return self._centres[key]

    # -- inference -----------------------------------------------------------------------------
    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        """Detect faces in uint8 RGB images (any sizes); one :class:`Detections` per image."""
        results: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            canvases, scales = zip(*(self._letterbox(img) for img in chunk))
            blob = np.stack(canvases).astype(np.float32)
            blob = ((blob - 127.5) / 128.0).transpose(0, 3, 1, 2)  # SCRFD: RGB, (x-127.5)/128, NCHW
            outputs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(blob)})
            n = len(chunk)
            # batched exports give [N, K, C]; batch-1 exports give [K, C]: fold both into [N, K, C]
            outputs = [np.asarray(o, np.float32).reshape(n, -1, o.shape[-1]) for o in outputs]
            for i in range(n):
                results.append(self._decode([o[i] for o in outputs], scales[i]))
        return results

    def _decode(self, outputs: list[np.ndarray], scale: float) -> Detections:
        fmc = len(self.strides)
        boxes_all, scores_all, kps_all = [], [], []
        for level, stride in enumerate(self.strides):
            scores = outputs[level][:, 0]
            centres = self._anchor_centres(stride)
            if len(centres) != len(scores):
                raise MissingModelError(
                    f"{self.path or 'detector'}: stride {stride} output has {len(scores)} anchors, expected "
                    f"{len(centres)} for input {self.input_hw}; is this an SCRFD model?"
                )
            keep = np.flatnonzero(scores >= self.score_threshold)
            if keep.size == 0:
                continue
            dist = outputs[fmc + level][keep] * stride
            c = centres[keep]
            boxes_all.append(np.concatenate([c - dist[:, :2], c + dist[:, 2:4]], axis=1))
            offsets = outputs[2 * fmc + level][keep].reshape(-1, 5, 2) * stride
            kps_all.append(c[:, None, :] + offsets)
            scores_all.append(scores[keep])
        if not scores_all:
            return _empty()
        boxes = np.concatenate(boxes_all) / scale
        kps = np.concatenate(kps_all) / scale
        scores = np.concatenate(scores_all)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        finite = np.isfinite(xywh).all(axis=1) & np.isfinite(kps).reshape(len(kps), -1).all(axis=1)
        idx = np.flatnonzero(finite)
        kept = cv2.dnn.NMSBoxes(xywh[idx].tolist(), scores[idx].tolist(), self.score_threshold, self.nms_threshold)
        kept = idx[np.asarray(kept, dtype=np.int64).reshape(-1)]
        kept = kept[np.argsort(-scores[kept], kind="stable")][: self.max_faces]
        return Detections(boxes[kept].astype(np.float32), scores[kept].astype(np.float32), kps[kept].astype(np.float32))
