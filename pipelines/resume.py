"""Resume bookkeeping of `synthface generate`: the run record and the same-dataset check.

``synthface-run.json`` is written when a run starts. It records what defines the
output (the config minus execution-only and location keys, its hash, the bank's
sha256, the model files' hashes), so a rerun on the same folder can tell "resume"
from "a different dataset" and refuse the latter unless ``--restart``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any


from pipelines.config import EXECUTION_ONLY_KEYS
from synthface.config import changed_keys, hash_json
from synthface.errors import RunStateError
from synthface.files import sha256_file
from synthface.models.layout import MANIFEST
from synthface.shards.manifest import (
    AUDIT_FILE,
    CARD_FILE,
    DATASET_FILE,
    FINALISE_FILE,
    RUN_FILE,
    SIZES_FILE,
    WIDS_FILE,
)
from synthface.shards.storage import Output
from synthface.version import synthface_version

log = logging.getLogger("synthface.generate")


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


def models_identity(models_dir: str) -> dict[str, Any]:
    """Which models a folder holds, from its synthface-models.json (origin and part
    ids/revisions, not the time it was written); empty when there is none."""
    meta = Path(models_dir) / MANIFEST
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


def run_record(cfg_data: dict[str, Any], bank_url: str, num_ids: int, inputs: dict[str, str] | None = None) -> dict[str, Any]:
    """What defines the run's output. ``inputs``: content hashes of the other input files
    (the keys of INPUT_NAMES: control pools, reference images)."""
    return {
        "config": cfg_data,
        "config_hash": run_config_hash(cfg_data),
        "bank": {"path": bank_url, "sha256": sha256_file(bank_url), "num_ids": num_ids},
        "models": models_identity(cfg_data.get("models_dir", "")),
        "inputs": dict(inputs or {}),
        "synthface_version": synthface_version(),
    }


# the content hashes a run record keeps under "inputs", and what each one covers
INPUT_NAMES = {
    "expression_pool_sha256": "expression pool (generation.expression.pool) content",
    "pose_pool_sha256": "pose pool (generation.pose.pool) content",
    "reference_images_sha256": "reference images (the bank's image folder: names and sizes)",
}


def _input_changes(old: dict[str, Any], record: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(what, old hash, new hash) per input file set the old record hashed. A hash the old
    record lacks is not compared: it was written before that input was hashed (turning a
    pool or reference mode on or off changes the config hash anyway)."""
    before, now = old.get("inputs") or {}, record.get("inputs", {})
    return [(INPUT_NAMES.get(key, key), value, now.get(key)) for key, value in sorted(before.items())]


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
                *_input_changes(old, record),
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
