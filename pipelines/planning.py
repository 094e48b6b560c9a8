"""Shard-job planning: the bank's identities cut into fixed, contiguous blocks.

Without ``run.groups``, job ``k`` covers identities ``[k * ids_per_shard,
(k + 1) * ids_per_shard)`` (the last one may be shorter) and writes
``shard-{k:06d}``. With groups (a mixed protocol such as 20K x 50 + 40K x 5),
each group is a consecutive block of identities cut the same way, and the
numbering continues across groups; a job never straddles two groups, so it
carries one class size. The plan depends only on the bank size and the
config, so a resumed run plans the same jobs.
"""

from __future__ import annotations

from dataclasses import dataclass

from synthface.errors import ConfigError


@dataclass(frozen=True)
class ShardJob:
    index: int
    id_start: int
    id_stop: int  # exclusive
    # the job's class size and candidate cap; None: the run's (JobSettings)
    images_per_id: int | None = None
    max_candidates_per_id: int | None = None

    @property
    def num_ids(self) -> int:
        return self.id_stop - self.id_start

    def __str__(self) -> str:
        return f"shard-{self.index:06d} (ids {self.id_start}..{self.id_stop - 1})"


@dataclass(frozen=True)
class IdGroup:
    """A block of identities sharing a class size."""

    num_ids: int
    images_per_id: int | None = None
    max_candidates_per_id: int | None = None


def plan_jobs(num_ids: int | list[IdGroup], ids_per_shard: int) -> list[ShardJob]:
    """Jobs over ``num_ids`` identities, or over consecutive ``IdGroup`` blocks."""
    groups = [IdGroup(num_ids)] if isinstance(num_ids, int) else list(num_ids)
    if any(g.num_ids < 0 for g in groups) or ids_per_shard < 1:
        raise ValueError(f"bad plan: {[g.num_ids for g in groups]} ids, {ids_per_shard} per shard")
    jobs: list[ShardJob] = []
    first = 0
    for g in groups:
        stop = first + g.num_ids
        for start in range(first, stop, ids_per_shard):
            jobs.append(
                ShardJob(
                    index=len(jobs),
                    id_start=start,
                    id_stop=min(start + ids_per_shard, stop),
                    images_per_id=g.images_per_id,
                    max_candidates_per_id=g.max_candidates_per_id,
                )
            )
        first = stop
    return jobs


def run_groups(run, bank_size: int) -> list[IdGroup]:
    """The identity groups of a ``RunConfig`` on a bank of ``bank_size`` identities.

    Without ``run.groups``: one group of the first ``run.max_ids`` (or all) identities with
    the run's class size. With groups: each group's resolved size and cap; the bank must hold
    all their identities.
    """
    sizes = run.class_sizes()
    if run.groups is None:
        n, cap = sizes[0]
        return [IdGroup(min(bank_size, run.max_ids or bank_size), n, cap)]
    need = sum(g.num_ids for g in run.groups)
    if need > bank_size:
        raise ConfigError(
            f"'run.groups' asks for {need} identities but the bank '{run.bank}' holds {bank_size}"
        )
    return [IdGroup(g.num_ids, n, cap) for g, (n, cap) in zip(run.groups, sizes)]
