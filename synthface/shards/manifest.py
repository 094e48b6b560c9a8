"""The dataset manifest at the output root, and the run record used for resume.

- ``synthface-run.json``: written when a run starts. It records what defines
  the output (config minus execution-only keys, its hash, the bank's hash), so
  a rerun on the same folder can tell "resume" from "a different dataset".
- ``dataset.json``: config, seed, model ids and file hashes, config hash,
  num_classes, num_images, per-shard counts.
- ``sizes.json``: shard file name -> number of samples (as open_clip reads it).
- ``wids-index.json``: a wids shard index (``wids.ShardListDataset`` opens it).
"""

from __future__ import annotations

import logging
from typing import Any


from pydantic import BaseModel, ConfigDict, Field, ValidationError

from synthface.errors import InputDataError
from synthface.shards.storage import Output
from synthface.shards.writer import shard_name
from synthface.version import synthface_version

log = logging.getLogger("synthface.generate")

RUN_FILE = "synthface-run.json"
DATASET_FILE = "dataset.json"
SIZES_FILE = "sizes.json"
WIDS_FILE = "wids-index.json"
CARD_FILE = "README.md"
FINALISE_FILE = "finalise.json"  # the dataset-wide drops (pipelines/finalise.py)
AUDIT_FILE = "audit.json"  # the last leakage audit (pipelines/audit.py)


class _ShardEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=r"^shard-\d{6}\.tar$")
    num_samples: int = Field(ge=0)
    num_candidates: int = Field(0, ge=0)


class _DatasetManifest(BaseModel):
    """The fields of dataset.json that verify and card read (others are kept, unchecked)."""

    model_config = ConfigDict(extra="allow")
    config: dict[str, Any] = {}
    config_hash: str = ""
    complete: bool = False
    missing_shards: list[str] = []
    num_classes: int = Field(0, ge=0)
    num_images: int = Field(0, ge=0)
    num_candidates: int = Field(0, ge=0)
    reasons: dict[str, int] = {}
    class_reasons: dict[str, int] = {}
    models: dict[str, Any] = {}
    shards: list[_ShardEntry] = []


def read_dataset_manifest(output: Output) -> dict[str, Any]:
    """dataset.json, checked: InputDataError naming the file and the first bad key otherwise."""
    data = output.read_json(DATASET_FILE)
    if not isinstance(data, dict):
        raise InputDataError(f"{output.url_of(DATASET_FILE)}: expected a JSON object, got {type(data).__name__}")
    try:
        checked = _DatasetManifest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InputDataError(f"{output.url_of(DATASET_FILE)}: '{where}': {err['msg']}") from None
    return {**data, **checked.model_dump(include=set(_DatasetManifest.model_fields))}


def write_dataset_manifest(
    output: Output,
    record: dict[str, Any],
    committed: dict[int, dict[str, Any]],
    num_shards: int,
    failed: dict[int, str],
    models: dict[str, Any],
) -> dict[str, Any]:
    """Write dataset.json, sizes.json and the wids index from the committed shards."""
    shards = [committed[k] for k in sorted(committed)]
    sizes = {f"{s['shard']}.tar": int(s["num_samples"]) for s in shards}
    missing = [shard_name(k) for k in range(num_shards) if k not in committed]
    totals: dict[str, dict[str, int]] = {"reasons": {}, "class_reasons": {}, "class_flags": {}}
    for s in shards:
        for what, counts in totals.items():
            for r, n in s.get(what, {}).items():
                counts[r] = counts.get(r, 0) + int(n)
    reasons, class_reasons = totals["reasons"], totals["class_reasons"]
    num_images = sum(sizes.values())
    num_candidates = sum(int(s["num_candidates"]) for s in shards)
    cfg = record["config"]
    dataset = {
        "format": "synthface-webdataset",
        "format_version": 1,
        "synthface_version": synthface_version(),
        "complete": not missing,
        "missing_shards": missing,
        "failed_shards": {shard_name(k): v for k, v in sorted(failed.items())},
        "seed": cfg["seed"],
        "config": cfg,
        "config_hash": record["config_hash"],
        "bank": record["bank"],
        "models": models,
        # Labels are identity ids: every planned identity is a class, including
        # the (few) whose images were all filtered out.
        "num_classes": record["bank"]["num_ids"],
        "num_classes_nonempty": sum(len(s.get("labels", [])) for s in shards),
        "num_images": num_images,
        "num_candidates": num_candidates,
        "acceptance_rate": (num_images / num_candidates) if num_candidates else 0.0,
        # what a kept image cost: candidates generated (all rounds, all classes) per image written
        "candidates_per_image": (num_candidates / num_images) if num_images else None,
        "topup_candidates": sum(int(s.get("topup_candidates", 0)) for s in shards),
        "reasons": dict(sorted(reasons.items())),
        "class_reasons": dict(sorted(class_reasons.items())),
        "class_flags": dict(sorted(totals["class_flags"].items())),
        "sample": {"key": "{id:07d}_{index:03d}", "jpg": "aligned 112x112 RGB", "cls": "identity id", "json": "metadata"},
        "shards": [
            {
                "name": f"{s['shard']}.tar",
                "num_samples": int(s["num_samples"]),
                "num_candidates": int(s["num_candidates"]),
                "ids": [int(s["id_start"]), int(s["id_stop"])],
                "images_per_id": s.get("images_per_id"),
            }
            for s in shards
        ],
    }
    if output.exists(FINALISE_FILE):
        dataset["finalise"] = finalise_summary(output.read_json(FINALISE_FILE))
    output.write_json(SIZES_FILE, sizes)
    output.write_json(
        WIDS_FILE,
        {
            "__kind__": "wids-shard-index-v1",
            "wids_version": 1,
            "name": "synthface",
            # relative URLs: wids resolves them against the index's own location
            "shardlist": [{"url": name, "nsamples": n} for name, n in sizes.items() if n > 0],
        },
    )
    output.write_json(DATASET_FILE, dataset)
    return dataset


def finalise_summary(plan: dict[str, Any]) -> dict[str, Any]:
    """dataset.json's ``finalise`` section: the plan finalise.json holds, with counts per reason."""
    counts: dict[str, int] = {}
    for drop in plan.get("drops", {}).values():
        counts[drop["reason"]] = counts.get(drop["reason"], 0) + 1
    return {
        "applied": bool(plan.get("applied")),
        "inter_class": plan.get("inter_class"),
        "tau_inter": plan.get("tau_inter"),
        "num_dropped": len(plan.get("drops", {})),
        "dropped_by_reason": dict(sorted(counts.items())),
        "dropped": plan.get("drops", {}),
        "flagged": plan.get("flagged", {}),
        "checked": plan.get("checked"),  # fingerprint of the classes the duplicate rule last checked
        "search": plan.get("search"),  # exact, or sketch with its miss bound (synthface/filtering/duplicates.py)
    }
