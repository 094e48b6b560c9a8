"""``synthface benchmark``: score a model on every verification ``.bin`` in a folder."""

from __future__ import annotations

import time
from pathlib import Path

from eval.config import VerifyConfig
from eval.embedders import load_embedder
from eval.report import build_report, write_report
from eval.verification import load_bin, verify
from synthface.errors import InputDataError, OutputError

# The usual insightface set first, in this order; anything else after, sorted.
STANDARD_ORDER = ("lfw", "cfp_fp", "cfp_ff", "agedb_30", "calfw", "cplfw", "vgg2_fp")


def find_bins(bins_dir: str | Path) -> list[Path]:
    bins_dir = Path(bins_dir)
    if not bins_dir.is_dir():
        raise InputDataError(f"bins folder not found: {bins_dir}")
    found = sorted(bins_dir.glob("*.bin"))
    if not found:
        raise InputDataError(f"no .bin files in {bins_dir} (expected lfw.bin, cfp_fp.bin, agedb_30.bin, ...)")
    rank = {name: i for i, name in enumerate(STANDARD_ORDER)}
    return sorted(found, key=lambda p: (rank.get(p.stem, len(rank)), p.stem))


def run_benchmark(model: str, bins_dir: str | Path, out_dir: str | Path, cfg: VerifyConfig, echo=print) -> dict:
    t0 = time.perf_counter()
    bins = find_bins(bins_dir)
    embed = load_embedder(model, onnx_input=cfg.onnx_input)
    try:  # before scoring (minutes on a CPU), not after
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"--out {out_dir}: cannot create the report folder ({exc.strerror or exc})") from None
    echo(f"scoring {embed.description} on {len(bins)} file(s) in {bins_dir}")
    results = []
    for path in bins:
        pairs = load_bin(path)
        result = verify(embed, pairs, batch_size=cfg.batch_size, flip=cfg.flip, folds=cfg.folds, far=cfg.far)
        tar = "n/a" if result.tar_at_far is None else f"{100 * result.tar_at_far:.2f}%"
        echo(
            f"{result.name}: {result.pairs} pairs, accuracy {100 * result.accuracy:.2f} ± "
            f"{100 * result.accuracy_std:.2f}%, TAR@FAR={cfg.far:g} {tar}, "
            f"AUC {'n/a' if result.auc is None else f'{result.auc:.4f}'}"
        )
        results.append(result)
    report = build_report(
        str(model), embed.description, results, cfg.model_dump(), time.perf_counter() - t0,
        training=getattr(embed, "training", None),
    )
    try:
        json_path, md_path = write_report(report, out_dir)
    except OSError as exc:
        raise OutputError(f"--out {out_dir}: cannot write the report ({exc.strerror or exc})") from None
    echo(f"report: {md_path} and {json_path}")
    return report
