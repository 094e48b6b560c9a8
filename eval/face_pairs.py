"""A recognizer on labelled pairs of real photos, and the filter on candidate sets of them
(`synthface face-pairs`): the numbers the filter defaults are read from (docs/faces.md).

Inputs are CSV files naming photos of one folder: pairs ``image_a,image_b,same`` (0/1) and,
optionally, labels ``image,identity``. Only file names are used. The statistics are those of
:mod:`synthface.filtering.evaluate`; the result is plain JSON (NaN -> null).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from synthface.errors import InputDataError


def read_csv(path: Path, columns: tuple[str, ...]) -> list[dict]:
    """The rows of a UTF-8 CSV with (at least) ``columns``; any problem is one InputDataError."""
    if not path.is_file():
        raise InputDataError(f"file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputDataError(f"{path}: not a UTF-8 CSV file ({exc})") from None
    if not rows:
        raise InputDataError(f"{path}: no rows (expected a header {','.join(columns)} and one row per entry)")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise InputDataError(f"{path}: missing column(s) {', '.join(missing)} (expected {','.join(columns)})")
    return rows


def read_pairs(path: Path) -> list[tuple[str, str, bool]]:
    """(file name a, file name b, same person) per row of a pairs CSV."""

    def same_flag(value: str | None, row: int) -> bool:
        if (value or "").strip() not in ("0", "1"):
            raise InputDataError(f"{path}: row {row}: 'same' must be 0 or 1, got {value!r}")
        return value.strip() == "1"

    return [
        (Path(r["image_a"] or "").name, Path(r["image_b"] or "").name, same_flag(r["same"], i + 2))
        for i, r in enumerate(read_csv(path, ("image_a", "image_b", "same")))
    ]


def read_labels(path: Path) -> dict[str, int]:
    """File name -> integer class, from an ``image,identity`` CSV: identity labels may be any
    text (names, ids); the statistics need integer classes (in order of first appearance)."""
    rows = read_csv(path, ("image", "identity"))
    codes = {label: k for k, label in enumerate(dict.fromkeys(str(r["identity"]).strip() for r in rows))}
    return {Path(r["image"] or "").name: codes[str(r["identity"]).strip()] for r in rows}


def json_safe(value):
    """Plain JSON: NaN and infinities (a statistic of no pairs of a kind) become null."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def face_pairs_report(
    images_dir: Path, pairs: Path, identities: Path | None, filter_cfg, faces_cfg, models_dir, *, finder_cfg=None
) -> dict:
    """Pair AUC and threshold band, accuracy at ``filter_cfg.tau_target`` and, with ``identities``,
    the filter's acceptance on candidate sets of the photos; plain JSON.

    ``finder_cfg`` given: each photo's face is first found with it and reframed like a
    generated 512-px image (ArcFace framing) before the analysis with ``faces_cfg``.
    """
    from synthface.faces.align import generated_like
    from synthface.faces.analyzer import FaceAnalyzer
    from synthface.faces.images import read_rgb
    from synthface.filtering.evaluate import candidate_set_stats, centre_stats, pair_stats

    analyzer = FaceAnalyzer.from_config(models_dir, faces_cfg)
    pair_list = read_pairs(pairs)
    labels = read_labels(identities) if identities is not None else {}
    names = sorted({n for a, b, _ in pair_list for n in (a, b)} | set(labels))
    images = [read_rgb(images_dir / n) for n in names]
    if finder_cfg is not None:
        found = FaceAnalyzer.from_config(models_dir, finder_cfg).analyze(images)
        images = [generated_like(img, r.landmarks)[0] if r.landmarks is not None else img for img, r in zip(images, found)]
    results = dict(zip(names, analyzer.analyze(images)))
    failed = {n: r.reason for n, r in results.items() if not r.ok}
    usable = [(a, b, s) for a, b, s in pair_list if a not in failed and b not in failed]
    sims = np.array([float(results[a].embedding @ results[b].embedding) for a, b, _ in usable])
    same = np.array([s for *_, s in usable])
    out = {
        "models": analyzer.describe(),
        "framing": "generated-like 512 px" if finder_cfg is not None else "photos as they are",
        "images": len(names),
        "faces_found": len(names) - len(failed),
        "failed": failed,
        "pairs": pair_stats(sims, same, threshold=filter_cfg.tau_target),
    }
    if labels:
        named = [n for n in names if n in labels]
        res = [results[n] for n in named]
        lab = [labels[n] for n in named]
        out["candidate_sets_centre_only"] = candidate_set_stats(res, lab, filter_cfg.model_copy(update={"use_target": False})).as_dict()
        out["candidate_sets_with_target"] = candidate_set_stats(res, lab, filter_cfg, with_target=True).as_dict()
        ok = [i for i, r in enumerate(res) if r.ok]
        out["class_centres"] = centre_stats(np.stack([res[i].embedding for i in ok]), [lab[i] for i in ok])
    return json_safe(out)
