"""`synthface ids ...`: sample an identity bank, summarise it; `synthface bench ids`."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from bench.runner import load_average
from synthface.cli.bench import bench_app

console = Console()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    ids_app = typer.Typer(help="Identity bank: novel identity vectors on the ArcFace hypersphere.", no_args_is_help=True)
    ids_app.command("sample")(sample)
    ids_app.command("from-images")(from_images)
    ids_app.command("stats")(stats)
    app.add_typer(ids_app, name="ids")


class _RichProgress:
    """Adapts the stage progress callback (stage, done, total) to a rich progress bar."""

    def __init__(self, progress) -> None:
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)


def _sample_with_progress(cfg, seed: int, quiet: bool = False):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from synthface.identity.bank import sample_bank

    if quiet:
        return sample_bank(cfg, seed)
    with Progress(
        TextColumn("{task.description:>11}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:
        return sample_bank(cfg, seed, progress=_RichProgress(progress))


def sample(
    config: Path = typer.Option(None, "--config", "-c", help="Factory config YAML (only `seed` and `identity:` are used)."),
    overrides: list[str] = typer.Option(None, "--set", help="Override a key, e.g. --set identity.num_identities=1000."),
    out: Path = typer.Option(..., "--out", "-o", help="Bank file to write (.parquet)."),
) -> None:
    """Sample, pack and screen identities; write the bank Parquet file."""
    from pipelines.config import load_factory_config
    from synthface.identity.bank import write_bank

    from synthface.local_dirs import ensure_dir

    cfg = load_factory_config(config, overrides)
    ensure_dir(out.parent, f"--out {out}")  # before sampling, which can take long
    bank, report = _sample_with_progress(cfg.identity, cfg.seed)
    write_bank(bank, out)
    seconds = " + ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items())
    console.print(
        f"wrote [bold]{out}[/]: {report.num_identities:,} identities, sampler [bold]{report.sampler}[/], "
        f"seed {cfg.seed}, on {report.device} ({seconds})"
    )
    sc = report.screen
    console.print(
        f"screens: rejected {sc['rejected_separation']} (separation) + {sc['rejected_novelty']} (novelty), "
        f"resampled {sc['resampled']} in {sc['rounds']} round(s)"
        + (f"; band redraws {report.band_redraws}" if report.sampler == "gallery" else "")
    )
    _print_stats(bank)


def from_images(
    images_dir: Path = typer.Argument(..., metavar="DIR", help="One folder per identity: DIR/<identity>/<images>."),
    out: Path = typer.Option(..., "--out", "-o", help="Bank file to write (.parquet)."),
    config: Path = typer.Option(None, "--config", "-c", help="Factory config YAML (`identity:` and `faces:` are used)."),
    overrides: list[str] = typer.Option(None, "--set", help="Override a key, e.g. --set identity.from_images.min_images=3."),
    models: str = typer.Option(None, "--models", help="Model folder (default: the config's models_dir)."),
    detector: str = typer.Option(None, "--detector", help="SCRFD detector .onnx file (overrides faces.detector)."),
    recognizer: str = typer.Option(None, "--recognizer", help="Recognizer .onnx file (overrides faces.recognizer)."),
) -> None:
    """Identities from images: each folder's images embedded, its vector their normalised mean.

    Skipped files and dropped identities are listed (and kept in the bank's metadata).
    """
    from synthface.cli.faces import load_face_options
    from synthface.cli.progress import count_bar
    from synthface.faces.analyzer import FaceAnalyzer
    from synthface.identity.bank import write_bank
    from synthface.identity.from_images import bank_from_images

    cfg, faces_cfg, models_dir = load_face_options(config, overrides, models, detector, recognizer)
    # renders and photos: faces can be small, so detect at identity.from_images.det_size (validated there)
    faces_cfg = faces_cfg.model_copy(update={"det_size": cfg.identity.from_images.det_size})
    analyzer = FaceAnalyzer.from_config(models_dir, faces_cfg)
    with count_bar("embedding", console) as progress:
        bank, report = bank_from_images(images_dir, analyzer, cfg.identity, cfg.seed, batch_size=faces_cfg.batch_size, progress=progress)
    write_bank(bank, out)
    for line in report.lines(out):  # plain lines (not rich): file names must not be wrapped or styled
        typer.echo(line)
    _print_stats(bank)


def _print_stats(bank) -> None:
    from synthface.identity.stats import STAT_COLUMNS, bank_stats, stats_notes, stats_rows

    st = bank_stats(bank)
    table = Table(title=f"identity bank: {st['num_identities']:,} identities ({st['sampler']}, seed {st['seed']})")
    table.add_column("cosine")
    for name in STAT_COLUMNS:
        table.add_column(name, justify="right")
    for label, cells in stats_rows(st):
        table.add_row(label, *cells)
    console.print(table)
    for line in stats_notes(st):
        console.print(line)


def stats(
    bank_path: Path = typer.Argument(..., metavar="BANK.parquet", help="An identity bank written by `ids sample`."),
    plot: Path = typer.Option(None, "--plot", help="Also write a histogram PNG here."),
) -> None:
    """Print N, the nearest-neighbour cosine distribution and gallery similarity of a bank.

    Reads only the statistics columns, never the embeddings (a 1M bank: ~30 MB, not 2 GB).
    """
    import resource

    from synthface.errors import InputDataError
    from synthface.identity.bank import read_bank_summary
    from synthface.local_dirs import ensure_dir

    if plot is not None:  # before the work
        if plot.suffix.lower() != ".png":
            raise InputDataError(f"--plot {plot}: the histogram is a PNG; give a .png file name")
        ensure_dir(plot.parent, f"--plot {plot}")
    bank = read_bank_summary(bank_path)
    _print_stats(bank)
    if plot is not None:
        from synthface.identity.stats import plot_histograms

        console.print(f"wrote {plot_histograms(bank, plot)}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    console.print(f"peak memory (max RSS of this process) {peak_mib:,.0f} MiB")


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
    import os

    from bench.ids import SAMPLERS, Job, run_in_child
    from synthface.errors import ConfigError
    from pipelines.config import load_factory_config

    try:
        ns = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--sizes: expected comma-separated integers, got {sizes!r}") from None
    if not ns or min(ns) < 2:
        raise ConfigError("--sizes: give at least one size, each >= 2")
    base = load_factory_config(config, overrides)
    out = console if console.is_terminal else Console(width=220)
    out.print(f"cpu cores {os.cpu_count()}, load average at start {load_average():.2f}", highlight=False)
    rows = []
    for n in ns:
        for label, (sampler, start) in SAMPLERS.items():
            if label == "packed-optimised" and n > optimise_up_to:
                out.print(f"N={n:,} {label}: skipped (above --optimise-up-to {optimise_up_to:,})", highlight=False)
                continue
            identity = base.identity.model_copy(update={"num_identities": n, "sampler": sampler})
            identity = identity.model_copy(update={"packed": identity.packed.model_copy(update={"start": start})})
            job = Job(n, label, identity.model_dump(mode="json"), base.seed, queries, draw_only=label == "uniform")
            r = run_in_child(job)
            r["load"] = load_average()
            rows.append(r)
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in r["stages"].items())
            out.print(
                f"N={n:,} {label}: {r['seconds']:.1f}s (cpu {r['cpu_seconds']:.1f}s; {stages}), peak {r['peak_gib']:.2f} GiB; "
                f"exact NN of {r['queries']:,} queries in {r['measure_seconds']:.1f}s: max {r['max']:.4f}, "
                f"p99.9 {r['p999']:.4f}, mean {r['mean']:.4f}; load {r['load']:.1f}",
                highlight=False,
            )

    table = Table(title="identity samplers vs uniform (baseline): time, peak memory, exact nearest-neighbour cosine of random queries")
    for col in ("N", "sampler", "time s", "cpu s", "peak GiB", "queries", "max NN", "p99.9 NN", "mean NN",
                "max gain", "p99.9 gain", "time ~ N^p"):
        table.add_column(col, justify="right")
    uniform = {r["n"]: r for r in rows if r["label"] == "uniform"}
    previous: dict[str, dict] = {}
    for r in rows:
        u = uniform.get(r["n"])
        growth = "-"
        prev = previous.get(r["label"])
        if prev is not None and prev["n"] != r["n"]:
            growth = f"p = {math.log(r['seconds'] / prev['seconds']) / math.log(r['n'] / prev['n']):.2f}"
        previous[r["label"]] = r
        table.add_row(
            f"{r['n']:,}", r["label"], f"{r['seconds']:.1f}", f"{r['cpu_seconds']:.1f}", f"{r['peak_gib']:.2f}",
            f"{r['queries']:,}", f"{r['max']:.4f}", f"{r['p999']:.4f}", f"{r['mean']:.4f}",
            "-" if u is None or u is r else f"{u['max'] - r['max']:+.4f}",
            "-" if u is None or u is r else f"{u['p999'] - r['p999']:+.4f}",
            growth,
        )
    # Piped to a file (how benchmark results are kept) rich would squeeze the
    # table into 80 columns and cut the figures to "0.19…".
    out.print(table)
    out.print(f"load average at end {load_average():.2f} (other work on the machine slows every timing)", highlight=False)
