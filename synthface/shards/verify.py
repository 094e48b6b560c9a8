"""`synthface verify OUT`: check a finished dataset end to end.

Every shard is listed in the manifest and committed; every tar reads; each
sample has well-formed key, ``jpg``/``cls``/``json``; the image decodes at
112x112; the label matches the key's identity and lies within num_classes;
keys are unique across shards; every identity holds exactly its shard's
``images_per_id`` images (fewer only when flagged ``short_class``); counts
agree between tar, stats, sizes.json,
the wids index and dataset.json; each shard's parquet reads, with one row per
candidate and one accepted row per sample. A finalised dataset (dataset.json's
``finalise`` section, always there with ``run.inter_class: dataset``) holds no
sample of a dropped class, and no two of its classes are duplicates by the
dataset-wide rule: the shards hold exactly the classes finalising checked, and
(up to 20,000 classes) the rule recomputed from the shards' class centres finds nothing.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from synthface.errors import InputDataError
from synthface.shards.schema import SHORT_CLASS_REASON
from synthface.shards.manifest import DATASET_FILE, SIZES_FILE, WIDS_FILE, read_dataset_manifest
from synthface.shards.storage import Output
from synthface.shards.writer import (
    ALIGNED_SIZE, KEY_PATTERN, SHARD_PATTERN, committed_shards, interrupted_writes, load_centres, read_tar,
    shard_problem,
)

REQUIRED = ("cls", "jpg", "json")
# verify recomputes the dataset-wide duplicate check itself up to this many classes
RECHECK_MAX_CLASSES = 20_000


@dataclass
class VerifyReport:
    shards: int = 0
    samples: int = 0
    classes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_dataset(out: str, check_images: bool = True, max_problems: int = 200) -> VerifyReport:
    output = Output(out)
    report = VerifyReport()

    def problem(text: str) -> None:
        if len(report.problems) < max_problems:
            report.problems.append(text)

    def read_json(name: str, kind: type = dict):
        """The parsed file, or None with a problem recorded (missing, unreadable, not JSON)."""
        if not output.exists(name):
            problem(f"{name} missing")
            return None
        try:
            data = output.read_json(name)
        except InputDataError as exc:
            problem(str(exc))
            return None
        if not isinstance(data, kind):
            problem(f"{name}: expected a JSON {kind.__name__}, got {type(data).__name__}")
            return None
        return data

    def check_candidates(name: str, data: bytes, samples: int, stats: dict | None) -> None:
        """The candidate table reads, has a row per candidate and one accepted row per sample."""
        try:
            accepted = pq.read_table(io.BytesIO(data), columns=["accepted"])["accepted"]
        except (pa.ArrowException, OSError, InputDataError) as exc:
            problem(f"{name}: unreadable parquet ({str(exc).splitlines()[0][:300]})")
            return
        if stats is not None and len(accepted) != stats.get("num_candidates"):
            problem(f"{name}: {len(accepted)} candidate rows but the stats say {stats.get('num_candidates')}")
        if accepted.to_pylist().count(True) != samples:
            problem(f"{name}: {accepted.to_pylist().count(True)} accepted rows but the tar holds {samples} samples")

    if not output.exists(DATASET_FILE):
        problem(f"{DATASET_FILE} missing: not a finished synthface dataset (did generate complete?)")
        return report
    try:
        dataset = read_dataset_manifest(output)
    except InputDataError as exc:
        problem(str(exc))
        return report
    sizes = read_json(SIZES_FILE)
    wids = read_json(WIDS_FILE)
    num_classes = int(dataset.get("num_classes", 0))
    if not dataset.get("complete", False):
        problem(f"dataset is incomplete: missing shards {', '.join(dataset.get('missing_shards', []))}")

    listed = {s["name"]: s for s in dataset.get("shards", [])}
    file_sizes = output.list_sizes("shard-")
    names = output.list_names()
    present = [n for n in names if n.startswith("shard-")]
    tars = [n for n in present if n.endswith(".tar")]
    for name in present + [n for n in interrupted_writes(names) if n.startswith(".")]:
        if not SHARD_PATTERN.match(name):
            problem(f"{name}: stray file (an interrupted write?)")
    for name in sorted(set(tars) | set(listed)):
        stem = name[: -len(".tar")]
        if name not in listed:
            problem(f"{name}: present but not in {DATASET_FILE} (uncommitted or from another run)")
        if name not in tars:
            problem(f"{name}: listed in {DATASET_FILE} but missing")
            continue
        if not output.exists(f"{stem}.json"):
            problem(f"{name}: no {stem}.json commit marker")
        if not output.exists(f"{stem}.parquet"):
            problem(f"{name}: no {stem}.parquet")

    seen: dict[str, str] = {}
    labels: set[int] = set()
    wids_counts = {s.get("url"): s.get("nsamples") for s in (wids or {}).get("shardlist", []) if isinstance(s, dict)}
    for name in sorted(listed):
        if name not in tars:
            continue
        report.shards += 1
        stem = name[: -len(".tar")]
        stats = read_json(f"{stem}.json") if output.exists(f"{stem}.json") else None
        # each shard file is read once: hashed for the commit check, then parsed
        try:
            contents = {name: output.read_bytes(name)}
        except (OSError, InputDataError) as exc:
            problem(f"{name}: unreadable tar ({exc})")
            continue
        if output.exists(f"{stem}.parquet"):
            try:
                contents[f"{stem}.parquet"] = output.read_bytes(f"{stem}.parquet")
            except (OSError, InputDataError) as exc:
                problem(f"{stem}.parquet: unreadable parquet ({str(exc).splitlines()[0][:300]})")
        if stats is not None:
            damage = shard_problem(output, stats, file_sizes, dataset.get("config_hash"), contents=contents)
            if damage is not None:
                problem(f"{name}: not committed: {damage}; rerun the generate command to redo it")
        try:
            samples = read_tar(contents[name])
        except (tarfile.TarError, EOFError, OSError) as exc:
            problem(f"{name}: unreadable tar ({exc})")
            continue
        count = len(samples)
        report.samples += count
        expected = {"dataset.json": listed[name]["num_samples"]}
        if sizes is not None:
            expected[SIZES_FILE] = sizes.get(name)
        if stats is not None:
            expected[f"{stem}.json"] = stats.get("num_samples")
        if f"{stem}.parquet" in contents:
            check_candidates(f"{stem}.parquet", contents[f"{stem}.parquet"], count, stats)
        if wids is not None and (count or name in wids_counts):
            expected[WIDS_FILE] = wids_counts.get(name)
        for source, n in expected.items():
            if n != count:
                problem(f"{name}: holds {count} samples but {source} says {n}")
        class_count: dict[int, int] = {}
        flagged_short: set[int] = set()
        for key, members in sorted(samples.items()):
            where = f"{name}:{key}"
            m = KEY_PATTERN.match(key)
            if not m:
                problem(f"{where}: malformed key (expected {{id:07d}}_{{index:03d}})")
                continue
            if key in seen:
                problem(f"{where}: duplicate key (also in {seen[key]})")
            seen[key] = name
            missing = [e for e in REQUIRED if e not in members]
            if missing:
                problem(f"{where}: missing {', '.join(missing)}")
                continue
            try:
                label = int(members["cls"].decode("ascii").strip())
            except (UnicodeDecodeError, ValueError):
                problem(f"{where}: cls is not an integer")
                continue
            if not 0 <= label < num_classes:
                problem(f"{where}: label {label} outside [0, {num_classes})")
            if label != int(m.group(1)):
                problem(f"{where}: label {label} does not match the key's identity {int(m.group(1))}")
            labels.add(label)
            try:
                meta = json.loads(members["json"])
            except (UnicodeDecodeError, json.JSONDecodeError):
                problem(f"{where}: json does not parse")
                meta = {}
            class_count[label] = class_count.get(label, 0) + 1
            if SHORT_CLASS_REASON in str(meta.get("class_flag", "") if isinstance(meta, dict) else "").split(","):
                flagged_short.add(label)
            if check_images:
                try:
                    with Image.open(io.BytesIO(members["jpg"])) as img:
                        img.load()
                        if img.size != (ALIGNED_SIZE, ALIGNED_SIZE):
                            problem(f"{where}: jpg is {img.size[0]}x{img.size[1]}, expected 112x112")
                except Exception as exc:  # noqa: BLE001 - any decode failure is a problem
                    problem(f"{where}: jpg does not decode ({type(exc).__name__})")
        # exact class sizes: images_per_id each, fewer only when flagged short_class
        class_size = (stats or {}).get("images_per_id")
        for label, n in sorted(class_count.items()):
            if class_size and (n > class_size or (n < class_size and label not in flagged_short)):
                problem(f"{name}: identity {label} has {n} images; its class size is {class_size}"
                        + ("" if n > class_size else f" and it is not flagged {SHORT_CLASS_REASON}"))
    report.classes = len(labels)
    _check_finalised(output, dataset, labels, problem)
    if report.samples != dataset.get("num_images"):
        problem(f"{DATASET_FILE} says num_images={dataset.get('num_images')} but the shards hold {report.samples}")
    return report


def _check_finalised(output: Output, dataset: dict, labels: set[int], problem) -> None:
    """The finalising guarantees: dropped classes are gone; no duplicate identities remain."""
    from synthface.filtering.duplicates import find_duplicates
    from synthface.shards.rewrite import classes_fingerprint

    cfg = dataset.get("config", {})
    finalised = dataset.get("finalise")
    wants_check = cfg.get("run", {}).get("inter_class") == "dataset"
    if wants_check and dataset.get("complete") and not (finalised or {}).get("applied"):
        problem(f"{DATASET_FILE}: run.inter_class is 'dataset' but the dataset is not finalised "
                "(run `synthface finalise OUT`)")
    if not finalised:
        return
    dropped = {int(i) for i in finalised.get("dropped", {})}
    still = sorted(dropped & labels)
    if still:
        problem(f"{len(still)} dropped classes still have samples (first: {still[:5]})")
    if not (wants_check and cfg.get("filter", {}).get("inter_action", "drop") == "drop"):
        return
    committed = committed_shards(output, checksums=False)  # the shard loop above checked their bytes
    if finalised.get("checked") != classes_fingerprint(committed, cfg):
        problem("the shards' classes are not those finalising checked for duplicates (run `synthface finalise OUT`)")
    if len(labels) > RECHECK_MAX_CLASSES:
        return  # the search is quadratic: above this, trust the fingerprint of what finalising checked
    try:
        ids, centres = load_centres(output, committed)
    except InputDataError as exc:
        problem(str(exc))
        return
    if set(ids.tolist()) != labels:
        problem("the shards' class centres do not cover exactly the classes with samples")
    tau = float(cfg.get("filter", {}).get("tau_inter", 1.0))
    dups = find_duplicates(ids, centres, tau)
    for cid, dup in list(sorted(dups.items()))[:20]:
        problem(f"class {cid} duplicates class {dup.of} (centre cosine {dup.similarity:.3f} >= tau_inter {tau})")
