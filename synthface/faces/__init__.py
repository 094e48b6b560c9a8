"""Face analysis stage: SCRFD detection, 5-point alignment, ArcFace embedding.

``from synthface.faces import FaceAnalyzer, FaceResult``. Imports are lazy so
that reading the config (``synthface.faces.config``) does not pull in OpenCV
and onnxruntime.
"""

from __future__ import annotations

_EXPORTS = {
    "FaceAnalyzer": "synthface.faces.analyzer",
    "FaceResult": "synthface.faces.analyzer",
    "FaceAnalysisConfig": "synthface.faces.config",
    "SCRFDDetector": "synthface.faces.detector",
    "ArcFaceRecognizer": "synthface.faces.recognizer",
    "ARCFACE_TEMPLATE": "synthface.faces.align",
    "align_face": "synthface.faces.align",
    "write_tiny_face_models": "synthface.faces.tiny",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'synthface.faces' has no attribute {name!r}")
