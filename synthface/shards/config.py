"""Config of the distributed run and shard output (`run:` section)."""

from __future__ import annotations

from synthface.config import StrictModel


class RunConfig(StrictModel):
    """Shard jobs, workers, retries, output options (filled in by the generate issue)."""
