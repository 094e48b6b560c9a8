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

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import fsspec

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from synthface.errors import InputDataError, RunStateError
from synthface.shards.config import EXECUTION_ONLY_KEYS
from synthface.shards.storage import Output
from synthface.shards.writer import shard_name
from synthface.version import synthface_version

log = logging.getLogger("synthface.generate")

RUN_FILE = "synthface-run.json"
DATASET_FILE = "dataset.json"
SIZES_FILE = "sizes.json"
WIDS_FILE = "wids-index.json"
CARD_FILE = "README.md"
MODELS_INFO_FILE = "synthface-models.json"
FINALISE_FILE = "finalise.json"  # the dataset-wide drops (pipelines/finalise.py)
AUDIT_FILE = "audit.json"  # the last leakage audit (pipelines/audit.py)


# Where the inputs live, not what they are: the bank is checked by its sha256 and the
# model folder by its synthface-models.json, so moving either (or a `ray job submit`
# run, where paths differ) still resumes.
LOCATION_KEYS = ("models_dir", "run.bank")


def output_config(cfg_data: dict[str, Any]) -> dict[str, Any]:
    """The config without the keys that only change how the run executes or where inputs live."""
    data = json.loads(json.dumps(cfg_data))
    for key in EXECUTION_ONLY_KEYS:
        data.get("run", {}).pop(key, None)
    for dotted in LOCATION_KEYS:
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return data


def run_config_hash(cfg_data: dict[str, Any]) -> str:
    """The hash that identifies a dataset's config: resume and verify compare it."""
    return hash_json(output_config(cfg_data))


def hash_json(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(url: str) -> str:
    digest = hashlib.sha256()
    with fsspec.open(url, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def describe_models(models_dir: str, checked: dict[str, dict[str, Any]] | None = None, how: str = "size+mtime") -> dict[str, Any]:
    """What the model folder holds: its synthface-models.json and each model file's sha256.

    ``checked`` is what the run verified at start (synthface.models.integrity,
    hashed once and cached by size + mtime, so nothing is re-hashed here);
    without it (a folder with no manifest) the layout files are hashed now
    and recorded as unverified.
    """
    from synthface.models.integrity import describe_files, present_layout_files

    root = Path(models_dir)
    info: dict[str, Any] = {"dir": str(models_dir), "origin": "unknown", "files": {}, "verified": False}
    if not root.is_dir():
        info["origin"] = "missing"
        return info
    meta = root / MODELS_INFO_FILE
    if meta.is_file():
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            info["info"] = {k: v for k, v in data.items() if k != "files"}
            info["origin"] = data.get("origin", "unknown")
        except json.JSONDecodeError:
            info["origin"] = "unreadable"
    if checked is not None:
        info["files"] = {rel: e["sha256"] for rel, e in sorted(checked.items())}
        info["pinned"] = sorted(rel for rel, e in checked.items() if e.get("pinned"))
        info["verified"] = how
    else:
        info["files"] = describe_files(root, present_layout_files(root))
    return info


def models_identity(models_dir: str) -> dict[str, Any]:
    """Which models a folder holds, from its synthface-models.json (origin and part
    ids/revisions, not the time it was written); empty when there is none."""
    meta = Path(models_dir) / MODELS_INFO_FILE
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    files = info.get("files") if isinstance(info.get("files"), dict) else {}
    # the recorded hashes too: resuming with other weights would mix two models in one dataset
    return {
        "origin": info.get("origin"),
        "parts": info.get("parts"),
        "files": {rel: e.get("sha256") for rel, e in sorted(files.items()) if isinstance(e, dict)},
    }


def run_record(cfg_data: dict[str, Any], bank_url: str, num_ids: int) -> dict[str, Any]:
    return {
        "config": cfg_data,
        "config_hash": run_config_hash(cfg_data),
        "bank": {"path": bank_url, "sha256": file_sha256(bank_url), "num_ids": num_ids},
        "models": models_identity(cfg_data.get("models_dir", "")),
        "synthface_version": synthface_version(),
    }


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted config keys whose values differ, e.g. ``["run.images_per_id: 8 -> 4"]``."""
    if isinstance(old, dict) or isinstance(new, dict):
        old = old if isinstance(old, dict) else {}
        new = new if isinstance(new, dict) else {}
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def check_or_start_run(output: Output, record: dict[str, Any], restart: bool) -> bool:
    """Compare ``record`` with the run already in ``output``; True if resuming.

    Refuses (RunStateError) when the folder holds a different dataset with at
    least one committed shard, unless ``restart``, which deletes the old run's
    files first.
    """
    if output.exists(RUN_FILE):
        old = output.read_json(RUN_FILE)
        differs = [
            what
            for what, a, b in (
                # recomputed from the stored config, so records written before a key became
                # location-only still compare by what the config means
                ("config", run_config_hash(old.get("config", {})), run_config_hash(record["config"])),
                ("identity bank", old.get("bank", {}).get("sha256"), record["bank"]["sha256"]),
                ("model folder (synthface-models.json)", old.get("models", {}), record.get("models", {})),
            )
            if a != b
        ]
        if not differs and not restart:
            return True
        if differs and not restart and not output.list_names("shard-", ".json"):
            # the earlier run committed nothing (it stopped at start-up, e.g. on missing
            # weights): there is no data to protect, so the new run simply replaces it
            log.info("%s: the earlier run committed no shard; starting over with this one", output.url)
            restart = True
        if not restart:
            what = " and ".join(differs)
            changed = changed_keys(output_config(old.get("config", {})), output_config(record["config"]))
            detail = f" ({', '.join(changed[:6])}{', ...' if len(changed) > 6 else ''})" if changed else ""
            count = len(output.list_names("shard-", ".json"))
            raise RunStateError(
                f"{output.url} holds a run with a different {what}{detail} and {count} committed shard(s); "
                f"use a new --out (or the original config), or pass --restart to DELETE those shards "
                f"and start over with this config"
            )
    elif not restart and output.list_names("shard-"):
        raise RunStateError(
            f"{output.url} holds shards but no {RUN_FILE}; use a new --out, or pass --restart to "
            f"DELETE those shards and start over"
        )
    if restart:
        clear_run(output)
    output.makedirs()
    output.write_json(RUN_FILE, {**record, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return False


def clear_run(output: Output) -> None:
    """Delete the files a run writes (shards, manifest, card); nothing else."""
    for name in output.list_names("shard-"):
        output.remove(name)
    for name in (RUN_FILE, DATASET_FILE, SIZES_FILE, WIDS_FILE, CARD_FILE, "card", FINALISE_FILE, AUDIT_FILE):
        output.remove(name)


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
    }
