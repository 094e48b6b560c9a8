"""Config of the identity bank stage (`identity:` section)."""

from __future__ import annotations

from synthface.config import StrictModel


class JitterConfig(StrictModel):
    """Intra-class condition jitter (filled in by the identity issue)."""


class IdentityConfig(StrictModel):
    """How identities are sampled and screened (filled in by the identity issue)."""
