"""Which of a class's accepted images to keep when it has more than it needs.

A class keeps ``images_per_id`` images. By default these are its first accepted
images by index. With ``filter.yaw_target_std`` set, the class keeps the subset
whose head-yaw spread (standard deviation, degrees) comes closest to that
target, so that pose variation is spread evenly over classes instead of being
left to chance. It needs a choice to work with: pair it with
``run.oversample`` > 1 (surplus accepted images).

The choice is deterministic: lay out ``count`` ideal yaws, the normal
quantiles around the class's median yaw scaled so that their spread is exactly
the target, and give each ideal yaw (outermost first) the nearest image not
yet taken (ties: the lower index). Where the class's yaws span less than the
target asks, this keeps its most turned images; where they span more, the
ones nearest the median. Images without a yaw estimate (never accepted, as
they have no face) would be kept last.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Sequence

import numpy as np


def keep_for_class(
    accepted: Sequence[tuple[int, float | None]], count: int, yaw_target_std: float | None
) -> list[int]:
    """Indices to keep, from (index, yaw) of the accepted images in index order."""
    indices = [k for k, _ in accepted]
    if yaw_target_std is None or len(accepted) <= count:
        return indices[:count]
    with_yaw = [(k, float(y)) for k, y in accepted if y is not None and np.isfinite(y)]
    without = [k for k, y in accepted if y is None or not np.isfinite(y)]
    if len(with_yaw) <= count:
        return sorted([k for k, _ in with_yaw] + without[: count - len(with_yaw)])
    median = float(np.median([y for _, y in with_yaw]))
    offsets = np.array([NormalDist().inv_cdf((j + 0.5) / count) for j in range(count)])
    if count > 1:
        offsets *= yaw_target_std / offsets.std()
    pool = dict(with_yaw)
    chosen = []
    for offset in sorted(offsets, key=lambda o: -abs(o)):  # outermost first: they are the scarce ones
        k = min(pool, key=lambda k: (abs(pool[k] - (median + offset)), k))
        chosen.append(k)
        del pool[k]
    return sorted(chosen)
