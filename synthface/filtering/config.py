"""Config of the ID-similarity filter (`filter:` section)."""

from __future__ import annotations

from synthface.config import StrictModel


class FilterConfig(StrictModel):
    """Thresholds of the filter (filled in by the face issue)."""
