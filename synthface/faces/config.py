"""Config of the face analysis stage (`faces:` section)."""

from __future__ import annotations

from synthface.config import StrictModel


class FaceAnalysisConfig(StrictModel):
    """Detector / alignment / recognizer settings (filled in by the face issue)."""
