"""`synthface ids ...`: sample an identity bank, summarise it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

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
