"""`synthface bench ...`: benchmarks (not tests). Each prints a ratio against a
baseline measured in the same run, and the load average beside its timings.

Every command here parses its options and calls one function of the top-level
``bench`` package, where the measuring and the tables live. ``bench`` (and the
stages it times) is imported inside the commands: it pulls in torch, ray or
onnxruntime, and ``synthface --help`` must stay fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from synthface.cli.faces import _config_opt, _det_opt, _models_opt, _rec_opt, _set_opt
from synthface.errors import ConfigError

bench_app = typer.Typer(help="Benchmarks: timings with a same-run baseline, never asserted in tests.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")


@bench_app.command("ids")
def bench_ids(
    sizes: str = typer.Option("1000,10000,100000", "--sizes", help="Comma-separated bank sizes N."),
    config: Path = typer.Option(None, "--config", "-c", help="Factory config YAML (the `identity:` section is used)."),
    overrides: list[str] = typer.Option(None, "--set", help="Override a key, e.g. --set identity.packed.steps=50."),
    queries: int = typer.Option(20_000, "--queries", min=1, help="Random rows whose exact nearest neighbour (against all N) measures separation."),
    optimise_up_to: int = typer.Option(
        100_000, "--optimise-up-to", min=0,
        help="Largest N for the optimised packed sampler (its neighbour passes cost N^2: hours at 1M on a CPU).",
    ),
) -> None:
    """Uniform vs packed identity banks: time, peak memory and exact separation for each N.

    Rows: `uniform` (the baseline: the draw alone), `packed-optimised`
    (packed.start uniform: a whole `ids sample` minus the file write) and
    `packed-code` (packed.start code, same). Each runs in a fresh process.
    Separation: the exact nearest neighbour of the same random queries against
    all N, for every sampler; gains are uniform's figure minus the sampler's.
    """
    from synthface.config import parse_list  # here: pydantic + yaml load slowly, and --help must not wait
    from rich.console import Console

    from bench.ids import ids_bench
    from pipelines.config import load_factory_config

    ns = parse_list(sizes, "--sizes", int, minimum=2)
    if not ns:
        raise ConfigError("--sizes: give at least one size, each >= 2")
    console = Console()
    # Piped to a file (how benchmark results are kept) rich would squeeze the
    # table into 80 columns and cut the figures to "0.19…".
    out = console if console.is_terminal else Console(width=220)
    ids_bench(load_factory_config(config, overrides), ns, queries, optimise_up_to, out)


@bench_app.command("faces")
def bench_faces(
    images_dir: Path = typer.Option(None, "--images", help="Photos to build generated-like 512-px faces from (default: the shared assets' faces)."),
    models: str = _models_opt,
    detector: str = _det_opt,
    recognizer: str = _rec_opt,
    det_sizes: str = typer.Option("128,256,640", "--det-sizes", help="Detector sizes to time; 640 is the baseline."),
    limit: int = typer.Option(61, "--limit", help="Use at most this many photos."),
    repeat: int = typer.Option(3, "--repeat", help="Timed passes per row (best is reported)."),
    config: str = _config_opt,
    overrides: list[str] = _set_opt,
) -> None:
    """Images/s through detect + align + embed on generated-like 512-px faces, per detector size.

    CPU rows always; CUDA rows too when onnxruntime-gpu sees a GPU. Baseline: 640-px detection,
    measured in the same run."""
    from synthface.config import parse_list  # here: pydantic + yaml load slowly, and --help must not wait
    from bench.faces import BASELINE_DET_SIZE, faces_bench
    from synthface.cli.faces import load_face_options

    sizes = parse_list(det_sizes, "--det-sizes", int, minimum=1)
    _, faces_cfg, models_dir = load_face_options(config, overrides, models, detector, recognizer, BASELINE_DET_SIZE)
    faces_bench(images_dir, faces_cfg, models_dir, sizes, limit, repeat)


@bench_app.command("generate")
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
    threads: int = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's choice)."),
) -> None:
    """Time generation: the Arc2Face reference pipeline (A) against our generator (B).

    Prints images/s, ms/image (wall and CPU), peak GPU memory, TFLOP/s and B/A, one row per
    batch size and per perf switch, and output-changing switches apart; writes
    the same as JSON. Warm-up (torch.compile included) is reported separately.
    `--tiny --device cpu --parts sweep --batch-sizes 1,8` times the tiny generator per batch size.
    """
    from synthface.config import parse_list  # here: pydantic + yaml load slowly, and --help must not wait
    from rich.console import Console

    from bench.generation import BenchOptions, default_json_path, run_generation_bench
    from bench.report import render

    arch = "tiny" if tiny else "full"
    json_out = json_out or default_json_path(arch, device)
    batches = parse_list(batch_sizes, "--batch-sizes", int, minimum=1)
    opts = BenchOptions(
        arch=arch, device=device, dtype=dtype, steps=steps, guidance=guidance, size=size,
        batch_sizes=tuple(batches) if batches else None, images=images, parts=tuple(parse_list(parts, "--parts") or ()),
        switches=tuple(parse_list(switches, "--switches") or ()) or None, outputs=tuple(parse_list(outputs, "--outputs") or ()),
        fewer_steps=fewer_steps, models_dir=str(models) if models else None, work_dir=str(work_dir) if work_dir else None,
        overrides=tuple(overrides or ()), seed=seed, json_path=str(json_out), threads=threads,
    )
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a log file gets the whole table
    result = run_generation_bench(opts, log=lambda msg: console.print(msg, highlight=False, markup=False))
    for item in render(result):
        console.print(item)
    console.print(f"result written to {json_out}", highlight=False)


@bench_app.command("train")
def bench_train(
    backbones: str = typer.Option("mobilefacenet,iresnet50", help="Comma-separated backbones; the first is the baseline."),
    batch_size: int = typer.Option(None, min=1, help="Images per step (default 32; --reader-only: 128, the training default)."),
    steps: int = typer.Option(5, min=1, help="Timed steps per backbone."),
    warmup: int = typer.Option(2, min=0, help="Untimed steps first."),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda if available)."),
    amp: bool = typer.Option(True, help="float16 autocast on CUDA (also measures fp32 for the ratio)."),
    json_out: str = typer.Option(None, "--json", help="Also write the results to this JSON file."),
    reader_only: bool = typer.Option(
        False, "--reader-only", help="Measure the training data reader instead (decode + augment + batch), with bare JPEG decoding as the baseline."
    ),
    data: str = typer.Option(None, "--data", help="--reader-only: a dataset root; default: a temporary pattern dataset."),
    faces: bool = typer.Option(
        False, "--faces", help="--reader-only: a temporary dataset of real aligned face crops (the shared assets' .bin files)."
    ),
    workers: str = typer.Option("0,1,2", "--workers", help="--reader-only: comma-separated loader worker counts (0: in this process)."),
    batches: int = typer.Option(None, min=1, help="--reader-only: timed batches per worker count (default: 10,000 images' worth)."),
    shuffle_buffer: int = typer.Option(1000, min=0, help="--reader-only: shuffle buffer (steady state; the fill is a transient)."),
    rounds: int = typer.Option(3, min=1, help="--reader-only: repeat decode + loader measurements; medians are reported."),
) -> None:
    """Training images/s (forward + margin loss + backward + SGD) per backbone, with ratios to the first."""
    from synthface.config import parse_list  # here: pydantic + yaml load slowly, and --help must not wait
    if reader_only:
        from bench.train import reader_bench

        counts = parse_list(workers, "--workers", int, minimum=0)
        reader_bench(data, counts, batch_size or 128, batches, shuffle_buffer, echo=typer.echo, json_path=json_out, faces=faces,
                     rounds=rounds)
        return
    from bench.train import train_bench

    train_bench(parse_list(backbones, "--backbones"), batch_size or 32, steps, warmup, device, amp, echo=typer.echo, json_path=json_out)


@bench_app.command("orchestration")
def bench_orchestration(
    workers: str = typer.Option("1,2,4,8", help="Worker counts to measure."),
    shards_per_worker: int = typer.Option(4, help="Shard jobs per worker in each measurement."),
    ids_per_shard: int = typer.Option(4),
    images_per_id: int = typer.Option(8),
    sleep_ms: float = typer.Option(25.0, help="Fake generation time per image."),
) -> None:
    """Orchestration efficiency: a sleeping fake generator, images/s against ideal per worker count."""
    from synthface.config import parse_list  # here: pydantic + yaml load slowly, and --help must not wait
    from bench.orchestration import orchestration_bench
    from synthface.cli.dataset import _setup_logging

    counts = parse_list(workers, "--workers", int, minimum=1)
    if not counts:
        raise ConfigError("--workers: give at least one worker count")
    _setup_logging()
    orchestration_bench(counts, shards_per_worker, ids_per_shard, images_per_id, sleep_ms / 1000.0)


@bench_app.command("overlap")
def bench_overlap(
    models: str = typer.Option(None, "--models", help="Model folder (default: a fresh tiny one)."),
    size: int = typer.Option(64, help="Image side in px."),
    steps: int = typer.Option(4, help="Denoising steps."),
    batch_size: int = typer.Option(8, help="run.batch_size = generation.batch_size."),
    ids: int = typer.Option(4, help="Identities per shard job."),
    images_per_id: int = typer.Option(8),
    jobs: int = typer.Option(2, help="Shard jobs per measurement."),
    repeats: int = typer.Option(3, help="Measurements per setting (median), after one warm-up round."),
    sleep_ms: float = typer.Option(0.0, help="The GPU stand-in's time per image (0 = the measured analysis time per image)."),
    threads: int = typer.Option(1, help="torch threads of the tiny generator."),
    full_image: bool = typer.Option(False, help="Also encode the full image (run.write_full_image)."),
) -> None:
    """run.overlap off vs on in one worker loop: images/s of each and their ratio, with the load average."""
    from bench.orchestration import overlap_bench

    overlap_bench(models, size, steps, batch_size, ids, images_per_id, jobs, repeats, sleep_ms, threads, full_image)


@bench_app.command("shard-writer")
def bench_shard_writer(
    images: int = typer.Option(2000, help="Aligned crops to write."),
    quality: int = typer.Option(95, help="JPEG quality."),
) -> None:
    """Shard writer throughput (images/s on one core), against raw JPEG encoding as the baseline."""
    from bench.orchestration import shard_writer_bench

    shard_writer_bench(images, quality)


@bench_app.command("finalise")
def bench_finalise(
    sizes: str = typer.Option("20000,100000,1000000", help="Numbers of class centres."),
    dim: int = typer.Option(512, help="Centre dimension."),
    duplicates: float = typer.Option(0.001, help="Fraction of classes planted as duplicates of earlier ones."),
    tau: float = typer.Option(0.6, help="filter.tau_inter."),
    brute_force_max: int = typer.Option(20000, help="Also run numpy N x N brute force up to this N."),
    exact_max: int = typer.Option(200000, help="Also run the exact search up to this N where finalising sketches (the recall baseline)."),
    threads: int = typer.Option(2, help="torch and faiss threads."),
) -> None:
    """Finalising at scale: time and peak memory of the dataset-wide duplicate decision, and its
    recall against brute force and against the planted duplicates."""
    from synthface.config import parse_list  # here: pydantic + yaml load slowly, and --help must not wait
    from bench.finalise import finalise_bench

    finalise_bench(
        parse_list(sizes, "--sizes", int, minimum=2) or [], dim, duplicates, tau, brute_force_max, threads, exact_max
    )
