"""ArcFace-family face recognizers (insightface-format ONNX) on onnxruntime.

Reads from the model itself what it can: the input layout (NCHW or NHWC), crop
size, a fixed batch of 1, and the embedding size. What a model file does not
state is its pixel normalisation; the two conventions in use are

- ``pm1``: RGB scaled to [-1, 1] as (x - 127.5) / 127.5 (Arc2Face's
  ``arcface.onnx``, antelopev2 ``glintr100.onnx``, buffalo ``w600k_*.onnx``);
- ``raw``: RGB 0..255, the graph normalises itself with leading Sub/Mul nodes
  (the 128-d MobileFaceNet in the shared test assets).

``auto`` tells them apart by those leading nodes (:func:`detect_normalisation`,
the one rule for the face stage and the benchmark's ONNX models). Embeddings
come out L2-normalised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthface.errors import UnusableModelError
from synthface.faces.onnx_session import describe_dim, open_session


# Ops that, applied straight to the image input, mean the graph normalises its own pixels.
NORMALISING_OPS = ("Sub", "Mul", "Div", "Add")


def detect_normalisation(path: Path, setting: str = "faces.recognizer_input to 'raw' or 'pm1'") -> str:
    """'raw' when the graph normalises its own input, else 'pm1'.

    Raw when one of its first 8 nodes applies Sub/Mul/Div/Add to the image input, or when
    Sub and Mul are both among them (insightface's test: an NHWC model may transpose first).
    The image input is the first graph input that is not an initializer (older exports list
    their weights as inputs too). e.g. MobileFaceNet: data -> Sub(mean) -> Mul(1/std) -> Conv;
    arcface.onnx starts with a Conv. ``setting`` names the option that states the convention
    instead (in the error for a graph that cannot be read).
    """
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # protobuf DecodeError and friends: not an ONNX file
        raise UnusableModelError(
            f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc}); to use it anyway set {setting}"
        ) from None
    weights = {i.name for i in graph.initializer}
    image_input = next((i.name for i in graph.input if i.name not in weights), None)
    head = graph.node[:8]
    feeds_arithmetic = any(n.op_type in NORMALISING_OPS and image_input in n.input for n in head)
    return "raw" if feeds_arithmetic or {"Sub", "Mul"} <= {n.op_type for n in head} else "pm1"


class ArcFaceRecognizer:
    """An insightface-format recognizer; ``batch_size=None`` runs each call's crops in one
    session call (the benchmark's batches), else in chunks of ``batch_size``."""

    def __init__(self, session, normalisation: str, batch_size: int | None = 32, path: Path | None = None):
        if normalisation not in ("raw", "pm1"):
            raise ValueError(f"normalisation must be 'raw' or 'pm1', got {normalisation!r}")
        self.session = session
        self.path = path
        self.normalisation = normalisation
        where = path or "recognizer"
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise UnusableModelError(f"{where} does not look like a face recognizer: expected one 4-D image input")
        if len(outputs) != 1 or (outputs[0].shape is not None and len(outputs[0].shape) != 2):
            raise UnusableModelError(
                f"{where} does not look like a face recognizer: expected one [N, D] embedding output, got "
                f"{len(outputs)} output(s) (a face detector?)"
            )
        shape = list(inputs[0].shape)
        if shape[1] == 3:
            self.layout = "NCHW"
            height, width = shape[2], shape[3]
        elif shape[3] == 3:
            self.layout = "NHWC"
            height, width = shape[1], shape[2]
        else:
            raise UnusableModelError(f"{where}: cannot tell the channel axis of input shape {shape}")
        height, width = describe_dim(height) or 112, describe_dim(width) or 112
        if height != width:
            raise UnusableModelError(f"{where}: expected a square crop input, got {height}x{width}")
        self.input_size = height
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        self.fixed_batch = describe_dim(shape[0])
        self.batch_size = 1 if self.fixed_batch == 1 else batch_size
        dim = describe_dim(outputs[0].shape[-1]) if outputs[0].shape else None
        if dim is None:  # symbolic output size: ask the model once
            dim = self._run(np.zeros((1, self.input_size, self.input_size, 3), np.uint8)).shape[-1]
        self.embedding_dim = int(dim)

    @classmethod
    def load(cls, path: Path, cfg) -> "ArcFaceRecognizer":
        session = open_session(path, cfg.device, cfg.threads, what="face recognizer")
        norm = cfg.recognizer_input if cfg.recognizer_input != "auto" else detect_normalisation(path)
        return cls(session, norm, batch_size=cfg.batch_size, path=path)

    def _run(self, crops: np.ndarray) -> np.ndarray:
        x = crops.astype(np.float32)
        if self.normalisation == "pm1":
            x = (x - 127.5) / 127.5
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        out = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x)})[0]
        return np.asarray(out, np.float32).reshape(len(crops), -1)

    def forward(self, crops: np.ndarray) -> np.ndarray:
        """The model's embeddings float32[N, D] of uint8 RGB crops [N, S, S, 3], not normalised."""
        return self._chunked(crops, self._run)

    def _chunked(self, crops: np.ndarray, run) -> np.ndarray:
        step = self.batch_size or max(len(crops), 1)
        out = np.zeros((len(crops), self.embedding_dim), np.float32)
        for start in range(0, len(crops), step):
            out[start : start + step] = run(crops[start : start + step])
        return out

    def embed(self, crops: np.ndarray, flip_average: bool = False) -> np.ndarray:
        """L2-normalised embeddings float32[N, D] of aligned uint8 RGB crops [N, S, S, 3]."""
        crops = np.asarray(crops, np.uint8)
        if crops.ndim != 4 or crops.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"expected crops [N,{self.input_size},{self.input_size},3], got {crops.shape}")
        if flip_average:
            out = self._chunked(crops, lambda chunk: self._run(chunk) + self._run(chunk[:, :, ::-1]))
        else:
            out = self.forward(crops)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)
