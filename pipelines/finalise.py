"""Finalising a dataset: dataset-wide decisions applied after every shard has committed.

Today two kinds of decision drop whole classes: duplicate identities across shards
(``run.inter_class: dataset``; the rule is in synthface/filtering/duplicates.py) and
identities the leakage audit found close to a benchmark or gallery face (``synthface
audit --drop``). Both go through :func:`finalise`, which

1. reads every shard's class centres (``shard-NNNNNN.centres.parquet``, written by the
   shard job), so no image is read to decide;
2. writes the plan, ``finalise.json`` (every dropped class with its reason), before
   touching any shard;
3. rewrites only the shards holding a dropped class, each file atomically, tar then
   parquet then the stats last (see synthface/shards/rewrite.py);
4. marks the plan applied and rewrites dataset.json (with a ``finalise`` section),
   sizes.json and the wids index.

A kill at any point and a rerun give the same bytes as an uninterrupted run: a plan
that is not marked applied is applied again as it stands (the shard rewrite is
idempotent, and a shard counts as rewritten once its stats no longer list a dropped
class), and only then is anything new decided. Rerunning a finished finalise decides
nothing new (the kept classes are pairwise below the threshold) and writes the same
bytes again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from synthface.errors import RunStateError
from synthface.filtering.duplicates import DUPLICATE_REASON, choose_search, find_duplicates, search_record
from synthface.shards.manifest import DATASET_FILE, FINALISE_FILE, RUN_FILE, write_dataset_manifest
from synthface.shards.rewrite import classes_fingerprint, drop_classes
from synthface.shards.storage import Output
from synthface.shards.writer import SHARD_PATTERN, file_record, load_centres

log = logging.getLogger("synthface.finalise")

LEAK_REASON = "benchmark_leak"


@dataclass
class FinaliseResult:
    dropped: dict[int, dict[str, Any]] = field(default_factory=dict)  # all drops so far
    new: dict[int, dict[str, Any]] = field(default_factory=dict)  # decided in this call
    shards_rewritten: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _shard_stats(output: Output) -> dict[int, dict[str, Any]]:
    """Every shard's stats as written, without checking its files against them: a shard
    killed mid-rewrite has a new tar beside its old stats, and finishing the rewrite is
    exactly what makes them agree again."""
    out = {}
    for name in output.list_names("shard-", ".json"):
        m = SHARD_PATTERN.match(name)
        if m:
            out[int(m.group(1))] = output.read_json(name)
    return out


def _read_plan(output: Output) -> dict[str, Any] | None:
    return output.read_json(FINALISE_FILE) if output.exists(FINALISE_FILE) else None


def _apply(output: Output, plan: dict[str, Any], committed: dict[int, dict[str, Any]]) -> list[str]:
    """Rewrite the shards that still hold a class the plan drops; returns their names."""
    drops = {int(i): d["reason"] for i, d in plan["drops"].items()}
    rewritten = []
    for index in sorted(committed):
        stats = committed[index]
        if not drops.keys() & set(int(x) for x in stats.get("labels", [])):
            continue  # nothing of it is dropped, or it was rewritten already (its stats go last)
        stem = stats["shard"]
        tar, parquet, new_stats = drop_classes(
            output.read_bytes(f"{stem}.tar"), output.read_bytes(f"{stem}.parquet"), stats, drops
        )
        output.write_bytes(f"{stem}.tar", tar)
        output.write_bytes(f"{stem}.parquet", parquet)
        # the commit marker records the rewritten files, or resume would redo the shard
        new_stats = {**new_stats, "files": {"tar": file_record(tar), "parquet": file_record(parquet)}}
        output.write_json(f"{stem}.json", new_stats)  # last: the shard is consistent again
        committed[index] = new_stats
        rewritten.append(stem)
    return rewritten


def finalise(out: str | Output, extra_drops: dict[int, dict[str, Any]] | None = None) -> FinaliseResult:
    """Decide and apply the dataset-wide drops of a complete dataset (see the module doc).

    ``extra_drops``: {class id: {"reason": ..., ...details}} decided elsewhere (the audit).
    """
    output = out if isinstance(out, Output) else Output(out)
    if not output.exists(DATASET_FILE) or not output.exists(RUN_FILE):
        raise RunStateError(f"{output.url}: no {DATASET_FILE}; finalise runs on a dataset `synthface generate` wrote")
    dataset = output.read_json(DATASET_FILE)
    if not dataset.get("complete"):
        raise RunStateError(
            f"{output.url} is incomplete (missing {', '.join(dataset.get('missing_shards', []))}); "
            "finalise runs after every shard has committed: rerun generate first"
        )
    record = output.read_json(RUN_FILE)
    cfg = record["config"]
    tau = float(cfg["filter"]["tau_inter"])
    result = FinaliseResult()
    committed = _shard_stats(output)

    plan = _read_plan(output)
    if plan is not None:
        if not plan.get("applied"):
            log.info("%s: finishing an interrupted finalise (%d classes to drop)", output.url, len(plan["drops"]))
        # also re-applies the plan to a shard redone since (deleted, or failed its checks on resume)
        result.shards_rewritten += _apply(output, plan, committed)
        plan["applied"] = True

    t = time.perf_counter()
    new: dict[int, dict[str, Any]] = {}
    search = (plan or {}).get("search")  # how the duplicate search ran (kept when it is skipped)
    flagged: dict[int, dict[str, Any]] = {int(i): d for i, d in (plan or {}).get("flagged", {}).items()}
    # the search over all centres is the whole cost: skip it when the classes are those already checked
    unchanged = plan is not None and plan.get("checked") == classes_fingerprint(committed, cfg)
    if cfg["run"].get("inter_class") == "dataset" and not unchanged:
        flagged = {}
        ids, centres = load_centres(output, committed)
        result.seconds["load_centres_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        # filter.inter_action decides, as inside a shard job: drop the later class, or keep it flagged
        found = new if cfg["filter"].get("inter_action", "drop") == "drop" else flagged
        method = choose_search(len(ids), tau)
        search = search_record(method, tau)
        for cid, dup in find_duplicates(ids, centres, tau, search=method).items():
            found[cid] = {"reason": DUPLICATE_REASON, "duplicate_of": dup.of, "similarity": round(dup.similarity, 6)}
        result.seconds["duplicates_s"] = round(time.perf_counter() - t, 3)
    done = {int(i) for i in (plan or {}).get("drops", {})}
    for cid, info in sorted((extra_drops or {}).items()):
        if cid not in new:
            new[int(cid)] = dict(info)
    new = {cid: info for cid, info in sorted(new.items()) if cid not in done}

    if plan is None or new:
        drops = {int(i): d for i, d in (plan or {}).get("drops", {}).items()}
        drops.update(new)
        plan = {
            "format_version": 1,
            "inter_class": cfg["run"].get("inter_class"),
            "tau_inter": tau,
            "applied": False,
            "drops": {str(i): drops[i] for i in sorted(drops)},
        }
        output.write_json(FINALISE_FILE, plan)  # the plan first: a rerun finishes it as written
        t = time.perf_counter()
        result.shards_rewritten += _apply(output, plan, committed)
        result.seconds["rewrite_s"] = round(time.perf_counter() - t, 3)
        plan["applied"] = True
    plan["flagged"] = {str(i): flagged[i] for i in sorted(flagged)}  # kept in the data, listed
    plan["checked"] = classes_fingerprint(committed, cfg)
    if search:
        plan["search"] = search
    output.write_json(FINALISE_FILE, plan)
    write_dataset_manifest(
        output, record, committed, len(dataset["shards"]) + len(dataset.get("missing_shards", [])), {},
        dataset["models"],
    )
    result.dropped = {int(i): d for i, d in plan["drops"].items()}
    result.new = new
    if new:
        log.info("%s: dropped %d classes, rewrote %d shards", output.url, len(new), len(result.shards_rewritten))
    return result
