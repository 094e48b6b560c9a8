"""Turning a model into ``embed(uint8 NHWC RGB batch) -> float32 [B, D]``.

Two kinds of model are scored: our training runs (a run folder, or a
``.pt`` checkpoint written by ``synthface train``) and insightface-format ONNX
recognizers run with onnxruntime. ONNX recognizers differ in where the input
normalisation lives: some expect ``(x - 127.5) / 127.5``, others (like the
MobileFaceNet in the shared assets) take 0..255 and normalise inside the
graph. They are read exactly as the face stage reads its recognizer
(``synthface.faces.recognizer``): ``auto`` is its ``detect_normalisation``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthface.errors import InputDataError, MissingModelError
from synthface.faces.onnx_session import open_session
from synthface.faces.recognizer import ArcFaceRecognizer, detect_normalisation

FINAL_WEIGHTS = "backbone.pt"  # written by the trainer when a run finishes
CHECKPOINT = "checkpoint.pt"  # latest resumable state


class TorchEmbedder:
    def __init__(self, backbone, device=None, description: str = "", training: dict | None = None):
        import torch

        self.torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.backbone = backbone.to(self.device).eval()
        self.description = description
        self.training = training  # what it was trained on (training_info), for the report

    def __call__(self, images: np.ndarray) -> np.ndarray:
        from eval.backbones import normalize_images

        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(self.device)
        with torch.inference_mode():
            return self.backbone(normalize_images(x)).float().cpu().numpy()


def backbone_from_checkpoint(path: str | Path, map_location="cpu"):
    """(backbone module, meta dict) from a ``backbone.pt`` or ``checkpoint.pt`` of ours."""
    import torch

    from eval.backbones import build_backbone

    path = Path(path)
    try:
        # weights_only: plain tensors and containers, never arbitrary objects.
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise InputDataError(f"{path}: not a synthface checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or "backbone" not in state or "model" not in state:
        raise InputDataError(f"{path}: not a synthface checkpoint (no 'backbone'/'model' entries)")
    model = state["model"]
    backbone = build_backbone(model["backbone"], embedding_size=model["embedding_size"])
    backbone.load_state_dict(state["backbone"])
    meta = {k: v for k, v in state.items() if k in ("model", "step", "epoch", "dataset", "loss")}
    if "loss" not in meta and isinstance(state.get("config"), dict):  # checkpoint.pt keeps the whole config
        meta["loss"] = state["config"].get("loss")
    return backbone, meta


def training_info(meta: dict) -> dict:
    """The training run behind a checkpoint, as the report shows it (None where not recorded)."""
    dataset = meta.get("dataset") or {}
    loss = meta.get("loss") or {}
    return {
        "dataset": dataset.get("root"),
        "images": dataset.get("num_images"),
        "classes": dataset.get("num_classes"),
        "backbone": (meta.get("model") or {}).get("backbone"),
        "loss": loss.get("type"),
        "steps": meta.get("step"),
    }


ONNX_HINT = "give a complete insightface-format recognizer .onnx file (e.g. a fresh download)"


class OnnxEmbedder:
    """An ONNX recognizer read the face stage's way (one normalisation rule, one error
    class for a file that is not a usable recognizer); images are resized to its input."""

    def __init__(self, path: str | Path, input_mode: str = "auto"):
        path = Path(path)
        if not path.is_file():
            raise MissingModelError(f"ONNX model not found: {path}")
        session = open_session(path, "auto", what="ONNX recognizer", hint=ONNX_HINT)
        if input_mode == "auto":
            normalisation = detect_normalisation(path, setting="verify.onnx_input to 'raw' or 'normalized'")
        else:
            normalisation = "raw" if input_mode == "raw" else "pm1"
        # batch_size=None: each call's images in one session call (one at a time for a fixed batch of 1)
        self.recognizer = ArcFaceRecognizer(session, normalisation, batch_size=None, path=path)
        self.input_mode = "raw" if normalisation == "raw" else "normalized"
        self.size = (self.recognizer.input_size, self.recognizer.input_size)
        self.description = f"ONNX {path.name} (input {self.input_mode})"
        self.training = None  # not trained here: its training set is not recorded

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if images.shape[1:3] != self.size:
            import cv2

            images = np.stack([cv2.resize(im, (self.size[1], self.size[0])) for im in images])
        return self.recognizer.forward(images)


def load_embedder(model: str | Path, onnx_input: str = "auto", device=None):
    """An embedder for a run folder, a ``.pt`` checkpoint of ours, or an ``.onnx`` recognizer."""
    path = Path(model)
    if path.suffix.lower() == ".onnx":
        return OnnxEmbedder(path, onnx_input)
    if path.is_dir():
        candidates = [path / FINAL_WEIGHTS, path / CHECKPOINT]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise MissingModelError(
                f"{path}: no {FINAL_WEIGHTS} or {CHECKPOINT}; train one with `synthface train --out {path}`"
            )
        path = found
    elif not path.is_file():
        raise MissingModelError(f"model not found: {path} (a run folder, a .pt checkpoint or an .onnx file)")
    backbone, meta = backbone_from_checkpoint(path)
    m = meta["model"]
    return TorchEmbedder(
        backbone, device, description=f"{m['backbone']} ({path}, step {meta.get('step')})", training=training_info(meta)
    )
