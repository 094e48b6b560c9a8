"""CLI commands of the downstream FR side (`eval/`): `train`, `benchmark`, `bench train`.

The `eval` package is imported inside the commands: it pulls in torch, and
`synthface --help` must stay fast.
"""

from __future__ import annotations

import typer

from synthface.cli.bench import bench_app


def register(app: typer.Typer) -> None:
    """Add `train` and `benchmark` to the top-level app (`bench train` is on `bench_app`)."""
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


@bench_app.command("train")
def bench_train(
    backbones: str = typer.Option("mobilefacenet,iresnet50", help="Comma-separated backbones; the first is the baseline."),
    batch_size: int = typer.Option(32, min=1, help="Images per step."),
    steps: int = typer.Option(5, min=1, help="Timed steps per backbone."),
    warmup: int = typer.Option(2, min=0, help="Untimed steps first."),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda if available)."),
    amp: bool = typer.Option(True, help="float16 autocast on CUDA (also measures fp32 for the ratio)."),
    json_out: str = typer.Option(None, "--json", help="Also write the results to this JSON file."),
) -> None:
    """Training images/s (forward + margin loss + backward + SGD) per backbone, with ratios to the first."""
    import json

    import torch

    from eval.backbones import BACKBONES
    from eval.throughput import measure
    from synthface.errors import ConfigError

    names = [b.strip() for b in backbones.split(",") if b.strip()]
    unknown = [b for b in names if b not in BACKBONES]
    if not names or unknown:
        raise ConfigError(f"--backbones: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(BACKBONES)}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible")
    runs = []
    for name in names:
        variants = [False, True] if device == "cuda" and amp else [False]
        for use_amp in variants:
            r = measure(name, batch_size, steps, warmup, device, use_amp)
            runs.append(r)
    base = runs[0]["images_per_s"]
    typer.echo(f"training throughput on {device} (batch {batch_size}, {steps} timed steps, torch threads {runs[0]['threads']}):")
    for r in runs:
        r["ratio_to_baseline"] = round(r["images_per_s"] / base, 3)
        label = f"{r['backbone']}{' amp' if r['amp'] else ''}"
        typer.echo(f"  {label:<22} {r['images_per_s']:>9.1f} images/s   x{r['ratio_to_baseline']:.3f} vs {runs[0]['backbone']}")
    if json_out:
        with open(json_out, "w", encoding="utf-8") as f:
            json.dump({"device": device, "runs": runs}, f, indent=2)
