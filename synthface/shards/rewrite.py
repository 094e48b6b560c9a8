"""Removing whole classes from a committed shard (finalising: duplicates, leaks).

:func:`drop_classes` is a pure function of the shard's files and the classes to drop:
the tar loses those classes' samples (the rest is rewritten exactly as the writer
writes it), the parquet keeps every candidate row but marks the dropped classes'
rows as not accepted with the drop reason, and the stats are recounted from the new
parquet. Applying it to its own output changes nothing, so a finalising step killed
between two files and rerun ends with the same bytes as one that was not killed.
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from synthface.shards.writer import KEY_PATTERN, file_record, read_tar, tar_bytes


def drop_classes(
    tar: bytes, parquet: bytes, stats: dict[str, Any], drops: dict[int, str]
) -> tuple[bytes, bytes, dict[str, Any]]:
    """(tar, parquet, stats) of the shard without the classes in ``drops`` ({id: reason})."""
    samples = read_tar(tar)
    kept = {key: members for key, members in samples.items() if int(KEY_PATTERN.match(key).group(1)) not in drops}
    new_tar = tar if len(kept) == len(samples) else tar_bytes(kept)

    table = pq.read_table(io.BytesIO(parquet))
    rows = table.to_pylist()
    for row in rows:
        reason = drops.get(int(row["id"]))
        if reason is None:
            continue
        if row["accepted"]:
            row["accepted"], row["reason"] = False, reason
        row["class_kept"], row["class_reason"] = False, reason
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), buf)

    # recount what the shard job counted, from the rows (the other stats stay as they were)
    reasons = Counter(r["reason"] or "accepted" for r in rows)
    class_of: dict[int, tuple[bool, str | None]] = {}
    for r in rows:
        class_of[int(r["id"])] = (bool(r["class_kept"]), r["class_reason"])
    shard_drops = {str(i): reason for i, reason in sorted(drops.items()) if i in class_of}
    new_stats = dict(stats)
    new_stats.update(
        num_samples=len(kept),
        labels=sorted({int(KEY_PATTERN.match(k).group(1)) for k in kept}),
        reasons=dict(sorted(reasons.items())),
        class_reasons=dict(sorted(Counter(reason for ok, reason in class_of.values() if not ok).items())),
        num_classes_kept=sum(1 for ok, _ in class_of.values() if ok),
        acceptance_rate=(reasons["accepted"] / len(rows)) if rows else 0.0,
    )
    if shard_drops:
        new_stats["finalise_dropped"] = shard_drops
    new_parquet = buf.getvalue()
    if "files" in stats:  # stats that record their files' size and sha256 must match the new ones
        new_stats["files"] = {**stats["files"], "tar": file_record(new_tar), "parquet": file_record(new_parquet)}
    return new_tar, new_parquet, new_stats


def classes_fingerprint(committed: dict[int, dict[str, Any]], cfg: dict[str, Any]) -> str:
    """What the dataset-wide duplicate decision depends on: the classes of each shard (their
    centres follow from the shard, deterministically) and the settings of the rule. Finalising
    records it when it has checked; verify compares."""
    from synthface.config import hash_json

    return hash_json(
        {
            "labels": {str(k): committed[k].get("labels", []) for k in sorted(committed)},
            "tau_inter": cfg["filter"]["tau_inter"],
            "inter_action": cfg["filter"].get("inter_action"),
            "inter_class": cfg["run"].get("inter_class"),
        }
    )
