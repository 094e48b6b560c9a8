"""GPU speed switches for the generator (filled in by the throughput issue).

``PerfConfig`` is the ``generation.perf`` config section; the generator calls
:func:`optimize_modules` once after loading its models.
"""

from __future__ import annotations

from synthface.config import StrictModel


class PerfConfig(StrictModel):
    """Speed switches that do not change the output (beyond float rounding)."""


def optimize_modules(unet, vae, text_encoder, cfg: PerfConfig, device) -> None:
    """Apply the switches in ``cfg`` to the loaded modules, in place."""
    return None
