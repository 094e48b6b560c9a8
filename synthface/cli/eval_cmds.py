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
    reader_only: bool = typer.Option(
        False, "--reader-only", help="Measure the training data reader instead (decode + augment + batch), with bare JPEG decoding as the baseline."
    ),
    data: str = typer.Option(None, "--data", help="--reader-only: a dataset root; default: a temporary pattern dataset."),
    workers: str = typer.Option("1,2", "--workers", help="--reader-only: comma-separated DataLoader worker counts."),
    batches: int = typer.Option(40, min=1, help="--reader-only: timed batches per worker count."),
    shuffle_buffer: int = typer.Option(1000, min=0, help="--reader-only: shuffle buffer (steady state; the fill is a transient)."),
) -> None:
    """Training images/s (forward + margin loss + backward + SGD) per backbone, with ratios to the first."""
    import json

    if reader_only:
        result = _bench_reader(data, workers, batch_size, batches, shuffle_buffer)
        if json_out:
            with open(json_out, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=2)
        return

    import torch

    from eval.backbones import BACKBONES
    from bench.train import measure
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


def _bench_reader(data: str | None, workers: str, batch_size: int, batches: int, shuffle_buffer: int) -> dict:
    """`bench train --reader-only`: the DataLoader's images per CPU-second (per core) and per
    wall-second, for each worker count, against bare decoding of the same JPEG bytes."""
    import os
    import tempfile

    from eval.config import DataConfig
    from eval.data import resolve_dataset
    from bench.train import measure_decode, measure_reader, read_jpegs
    from bench.runner import load_average
    from synthface.errors import ConfigError

    try:
        counts = [int(w) for w in workers.split(",") if w.strip()]
    except ValueError:
        raise ConfigError(f"--workers: expected comma-separated integers, got {workers!r}") from None
    if not counts or min(counts) < 0:
        raise ConfigError("--workers: give worker counts >= 0")
    tmp = None
    if data is None:
        from eval.toydata import write_pattern_dataset

        tmp = tempfile.TemporaryDirectory(prefix="synthface-reader-")
        data = str(write_pattern_dataset(os.path.join(tmp.name, "ds"), num_classes=100, images_per_class=40, shards=4))
        typer.echo(f"dataset: temporary pattern dataset, 4,000 JPEGs of 112x112 in 4 shards ({data})")
    spec = resolve_dataset(data)
    cfg = DataConfig(batch_size=batch_size, shuffle_buffer=shuffle_buffer)
    typer.echo(
        f"cpu cores {os.cpu_count()}, load average at start {load_average():.2f}; batch {batch_size}, "
        f"augmentation: flip {cfg.flip}, colour jitter {cfg.color_jitter}, greyscale {cfg.grayscale_prob}; shuffle buffer {shuffle_buffer}"
    )
    jpegs = read_jpegs(spec, 2000)
    decode = measure_decode(jpegs)
    base = decode["simplejpeg"]["per_cpu_s"]
    typer.echo(f"bare decoding of {len(jpegs):,} JPEGs from the shards (mean {sum(map(len, jpegs)) / len(jpegs):,.0f} bytes), one process:")
    for name, r in decode.items():
        typer.echo(f"  {name:<12} {r['per_cpu_s']:>8.0f} images per CPU-second  {r['per_wall_s']:>8.0f} per wall-second")
    runs = []
    for w in counts:
        r = measure_reader(spec, cfg, w, batches)
        r["ratio_to_decode"] = r["per_cpu_s"] / base
        r["load"] = load_average()
        runs.append(r)
        typer.echo(
            f"reader, {w} worker(s): {r['per_cpu_s']:>8.0f} images per CPU-second (all loader processes) = "
            f"{r['ratio_to_decode']:.2f} x bare simplejpeg decoding; {r['per_wall_s']:.0f} images per wall-second "
            f"({r['per_wall_s_per_worker']:.0f} per worker); load {r['load']:.1f}"
        )
    typer.echo(f"load average at end {load_average():.2f}: per CPU-second figures hold under load better than per wall-second ones")
    if tmp is not None:
        tmp.cleanup()
    return {"decode": decode, "reader": runs}
