"""Config of the generation stage (`generation:` section)."""

from __future__ import annotations

from synthface.config import StrictModel


class GenerationConfig(StrictModel):
    """Arc2Face sampling settings (filled in by the generation issue)."""
