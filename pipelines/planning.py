"""Shard-job planning: the bank's identities cut into fixed, contiguous blocks.

Job ``k`` covers identities ``[k * ids_per_shard, (k + 1) * ids_per_shard)``
(the last one may be shorter) and writes ``shard-{k:06d}``. The plan depends
only on the bank size and the config, so a resumed run plans the same jobs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShardJob:
    index: int
    id_start: int
    id_stop: int  # exclusive

    @property
    def num_ids(self) -> int:
        return self.id_stop - self.id_start

    def __str__(self) -> str:
        return f"shard-{self.index:06d} (ids {self.id_start}..{self.id_stop - 1})"


def plan_jobs(num_ids: int, ids_per_shard: int) -> list[ShardJob]:
    if num_ids < 0 or ids_per_shard < 1:
        raise ValueError(f"bad plan: {num_ids} ids, {ids_per_shard} per shard")
    return [
        ShardJob(index=k, id_start=start, id_stop=min(start + ids_per_shard, num_ids))
        for k, start in enumerate(range(0, num_ids, ids_per_shard))
    ]
