"""`synthface bench generate`: generation throughput, reference pipeline (A) vs our generator (B).

Wired in by ``register(app)``, which adds the command to the ``bench`` group.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from synthface.errors import ConfigError


def _ints(text: str | None, option: str) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{option}: expected positive integers, got {text!r}")
    return values


def _names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(x.strip() for x in text.split(",") if x.strip())


def bench_generate(
    tiny: bool = typer.Option(False, "--tiny", help="Tiny random architecture (the CPU test config) instead of full-size SD 1.5."),
    models: Path = typer.Option(None, "--models", help="Use this model folder (e.g. real weights) instead of random ones."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu, cuda, cuda:N."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (fp16 on CUDA, fp32 on CPU), float32, float16, bfloat16."),
    steps: int = typer.Option(25, "--steps", min=1, help="Denoising steps (A and B)."),
    guidance: float = typer.Option(3.0, "--guidance", min=1.0, help="Guidance scale (A and B)."),
    size: int = typer.Option(None, "--size", min=64, help="Image side in px (default 512 full, 128 tiny)."),
    batch_sizes: str = typer.Option(None, "--batch-sizes", help="B's batch-size sweep, e.g. 4,8,16,32."),
    images: int = typer.Option(32, "--images", min=1, help="Timed images per row (whole calls)."),
    parts: str = typer.Option(
        "reference,sweep,cache,dtype,switches,output", "--parts",
        help="Which parts: reference,sweep,cache,dtype,switches,output; add controls for the expression adapter / pose ControlNet vs plain.",
    ),
    switches: str = typer.Option(None, "--switches", help="Perf switches to toggle (default: all that apply here)."),
    outputs: str = typer.Option(
        "steps,guidance_fraction,no_guidance,lcm,reference", "--outputs",
        help="Output-changing rows: steps,guidance_fraction,no_guidance,lcm,reference (img2img from an identity image).",
    ),
    fewer_steps: int = typer.Option(15, "--fewer-steps", min=1, help="Steps of the 'fewer steps' row."),
    overrides: list[str] = typer.Option(None, "--set", help="generation.* override for every B row, e.g. generation.perf.compile_mode=default."),
    work_dir: Path = typer.Option(None, "--work-dir", help="Keep the random model folder here (reused by later runs)."),
    json_out: Path = typer.Option(None, "--json", help="Write the result here (default runs/bench/generate-<arch>-<device>-<time>.json)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Time generation: the Arc2Face reference pipeline (A) against our generator (B).

    Prints images/s, ms/image, peak GPU memory, TFLOP/s and B/A, one row per
    batch size and per perf switch, and output-changing switches apart; writes
    the same as JSON. Warm-up (torch.compile included) is reported separately.
    """
    from rich.console import Console

    from bench.generation import BenchOptions, GenerationBenchmark
    from bench.report import render

    arch = "tiny" if tiny else "full"
    if json_out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        json_out = Path("runs") / "bench" / f"generate-{arch}-{device.replace(':', '')}-{stamp}.json"
    opts = BenchOptions(
        arch=arch,
        device=device,
        dtype=dtype,
        steps=steps,
        guidance=guidance,
        size=size,
        batch_sizes=_ints(batch_sizes, "--batch-sizes"),
        images=images,
        parts=_names(parts) or (),
        switches=_names(switches),
        outputs=_names(outputs) or (),
        fewer_steps=fewer_steps,
        models_dir=str(models) if models else None,
        work_dir=str(work_dir) if work_dir else None,
        overrides=tuple(overrides or ()),
        seed=seed,
        json_path=str(json_out),
    )
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a log file gets the whole table
    bench = GenerationBenchmark(opts, log=lambda msg: console.print(msg, highlight=False, markup=False))
    try:
        result = bench.run()
    finally:
        bench.close()
    for item in render(result):
        console.print(item)
    console.print(f"result written to {json_out}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `generate` to the `bench` command group (the root app is not touched)."""
    from synthface.cli.bench import bench_app

    if any(cmd.callback is bench_generate for cmd in bench_app.registered_commands):
        return  # registering twice would list the command twice
    bench_app.command("generate")(bench_generate)
