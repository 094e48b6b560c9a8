"""Turning a model into ``embed(uint8 NHWC RGB batch) -> float32 [B, D]``.

Two kinds of model are scored: our training runs (a run folder, or a
``.pt`` checkpoint written by ``synthface train``) and insightface-format ONNX
recognizers run with onnxruntime. ONNX recognizers differ in where the input
normalisation lives: some expect ``(x - 127.5) / 127.5``, others (like the
MobileFaceNet in the shared assets) take 0..255 and normalise inside the
graph. ``auto`` looks at the graph (a heuristic in the spirit of insightface's
model zoo, which looks for Sub and Mul among the first nodes): if the first op
on the input is a Sub/Mul/Div/Add, the input is raw pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthface.errors import InputDataError, MissingModelError

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


def onnx_input_is_raw(path: str | Path) -> bool | None:
    """True if the graph normalises its input itself (first op on it is Sub/Mul/Div/Add).

    None when the ``onnx`` package is not installed (then say which convention).
    """
    try:
        import onnx
    except ImportError:
        return None
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # protobuf DecodeError and friends: not an ONNX file
        raise InputDataError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    initializers = {i.name for i in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    first = next((n for n in graph.node if inputs and inputs[0] in n.input), None)
    return first is not None and first.op_type in ("Sub", "Mul", "Div", "Add")


class OnnxEmbedder:
    def __init__(self, path: str | Path, input_mode: str = "auto"):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise MissingModelError(f"ONNX model not found: {path}")
        if input_mode == "auto":
            raw = onnx_input_is_raw(path)
            if raw is None:
                raise InputDataError(
                    f"{path}: cannot inspect the graph (the 'onnx' package is not installed); "
                    "set verify.onnx_input to 'raw' (0..255 input) or 'normalized' ((x-127.5)/127.5)"
                )
            input_mode = "raw" if raw else "normalized"
        self.input_mode = input_mode
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt graphs
            raise InputDataError(f"{path}: onnxruntime cannot load it ({type(exc).__name__}: {exc})") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        if len(shape) != 4 or shape[1] != 3:
            raise InputDataError(f"{path}: expected an NCHW RGB image input, got shape {shape}")
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.size = (shape[2], shape[3]) if all(isinstance(s, int) for s in shape[2:]) else None
        outputs = self.session.get_outputs()
        if len(outputs) != 1 or (outputs[0].shape is not None and len(outputs[0].shape) != 2):
            raise InputDataError(
                f"{path}: not a face recognizer: expected one [N, D] embedding output, got {len(outputs)} "
                f"output(s) (a face detector?)"
            )
        self.output_name = outputs[0].name
        self.description = f"ONNX {path.name} (input {input_mode})"
        self.training = None  # not trained here: its training set is not recorded

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if self.size is not None and images.shape[1:3] != self.size:
            import cv2

            images = np.stack([cv2.resize(im, (self.size[1], self.size[0])) for im in images])
        x = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)
        if self.input_mode == "normalized":
            x = (x - 127.5) / 127.5
        if self.fixed_batch == 1:
            return np.concatenate([self.session.run([self.output_name], {self.input_name: x[i : i + 1]})[0] for i in range(len(x))])
        return self.session.run([self.output_name], {self.input_name: x})[0]


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
