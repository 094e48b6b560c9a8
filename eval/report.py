"""The benchmark report: report.json (machine-readable) and report.md (people).

Our scores sit beside published figures for context. Those come from models
trained on full-size datasets on GPUs; a quick CPU run on the demo dataset is
a smoke test of the pipeline, not a comparable number.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

# Published 10-fold verification accuracies (%), for context only.
PUBLISHED = [
    {
        "training_data": "Arc2Face synthetic, 0.5M images",
        "lfw": 98.81,
        "cfp_fp": 91.87,
        "agedb_30": 90.18,
        "source": "Papantoniou et al., Arc2Face: A Foundation Model for ID-Consistent Human Faces, ECCV 2024 (arXiv:2403.11641)",
    },
    {
        "training_data": "CASIA-WebFace (real), 0.5M images",
        "lfw": 99.38,
        "cfp_fp": 96.91,
        "agedb_30": 94.50,
        "source": "as reported in the same Arc2Face paper (ECCV 2024), its real-data reference row",
    },
]
PUBLISHED_COLUMNS = ("lfw", "cfp_fp", "agedb_30")


def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}"


def build_report(model: str, description: str, results: list, settings: dict, seconds: float) -> dict:
    return {
        "model": model,
        "model_description": description,
        "protocol": {
            "flip": settings["flip"],
            "folds": settings["folds"],
            "distance": "squared L2 of unit embeddings (image + flipped image, summed, L2-normalised)",
            "thresholds": "0.00..3.99 step 0.01, chosen on the other folds",
            "far": settings["far"],
        },
        "results": [r.as_dict() for r in results],
        "published": PUBLISHED,
        "seconds": round(seconds, 2),
        "host": platform.node(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def render_markdown(report: dict) -> str:
    far = report["protocol"]["far"]
    lines = [
        "# Face verification report",
        "",
        f"Model: `{report['model']}` ({report['model_description']})",
        "",
        "Protocol (insightface): each image and its horizontal flip are embedded, summed and L2-normalised; "
        "pairs are scored by squared L2 distance; accuracy is the mean ± std over "
        f"{report['protocol']['folds']} folds, each fold's threshold chosen on the other folds. "
        f"TAR@FAR={far:g} and ROC AUC use all pairs (n/a where a file holds only one kind of pair).",
        "",
        f"| benchmark | pairs | accuracy (%) | TAR@FAR={far:g} (%) | ROC AUC | threshold |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        acc = f"{100 * r['accuracy']:.2f} ± {100 * r['accuracy_std']:.2f}"
        tar = _pct(r["tar_at_far"])
        if r["tar_at_far"] is not None and r["negatives"] * far < 1:
            tar += f" (coarse: {r['negatives']} negatives)"
        auc = "n/a" if r["auc"] is None else f"{r['auc']:.4f}"
        lines.append(f"| {r['name']} | {r['pairs']} | {acc} | {tar} | {auc} | {r['threshold']:.3f} |")
    lines += [
        "",
        "## Published figures, for context",
        "",
        "10-fold accuracy (%) of FR models trained on the full datasets on GPUs (see the source for backbone, "
        "loss and schedule); not comparable with a quick CPU run on a demo dataset.",
        "",
        "| training data | LFW | CFP-FP | AgeDB-30 | source |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for p in report["published"]:
        lines.append(f"| {p['training_data']} | {p['lfw']:.2f} | {p['cfp_fp']:.2f} | {p['agedb_30']:.2f} | {p['source']} |")
    lines += ["", f"Scored in {report['seconds']:.1f} s on {report['host']}, {report['created']}.", ""]
    return "\n".join(lines)


def write_report(report: dict, out_dir: str | Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(report), encoding="utf-8")
    return json_path, md_path
