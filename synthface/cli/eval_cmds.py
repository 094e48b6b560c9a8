"""CLI commands of the downstream FR side (`eval/`): `train`, `benchmark` (`bench train` is in cli/bench.py).

The `eval` package is imported inside the commands: it pulls in torch, and
`synthface --help` must stay fast.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add `train` and `benchmark` to the top-level app."""
    app.command("train")(train)
    app.command("benchmark")(benchmark)


def train(
    config: str = typer.Option(None, "--config", "-c", help="Training config YAML (e.g. configs/benchmark.yaml)."),
    data: str = typer.Option(..., "--data", help="Dataset root (holds dataset.json + shards), local or fsspec URL, or a brace pattern of shard URLs."),
    out: str = typer.Option(..., "--out", help="Run folder: checkpoints, logs, final backbone.pt. Re-running resumes."),
    overrides: list[str] = typer.Option(None, "--set", help="Override a key: --set optim.epochs=2."),
) -> None:
    """Train a face-recognition backbone on the shards (multi-GPU: `torchrun --nproc_per_node N -m synthface train ...`)."""
    from eval.config import load_eval_config
    from eval.train import train as run_training

    cfg = load_eval_config(config, overrides)
    run_training(cfg, data, out, echo=lambda line: typer.echo(line))


def benchmark(
    model: str = typer.Option(..., "--model", help="A run folder from `synthface train`, a .pt checkpoint, or an .onnx recognizer."),
    bins: str = typer.Option(..., "--bins", help="Folder of insightface verification .bin files (lfw.bin, cfp_fp.bin, agedb_30.bin, ...)."),
    out: str = typer.Option(..., "--out", help="Report folder (report.md, report.json)."),
    config: str = typer.Option(None, "--config", "-c", help="Config YAML; its `verify:` section is used."),
    overrides: list[str] = typer.Option(None, "--set", help="Override a key: --set verify.onnx_input=raw."),
) -> None:
    """Score a model on every verification .bin in a folder (insightface protocol) and write a report."""
    from eval.benchmark import run_benchmark
    from eval.config import load_eval_config

    cfg = load_eval_config(config, overrides)
    run_benchmark(model, bins, out, cfg.verify, echo=lambda line: typer.echo(line))
