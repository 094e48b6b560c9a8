"""CLI commands of the generation stage.

- ``synthface models download|check|init-tiny``: the local model folder;
- ``synthface sample``: a few identities from a bank -> images + a contact sheet.
"""

from __future__ import annotations

from pathlib import Path

import typer



# ---------------------------------------------------------------- models
def models_download(
    to: Path = typer.Option(..., "--to", help="Model folder to fill (created if needed)."),
    lcm_lora: bool = typer.Option(False, "--lcm-lora", help="Also fetch the optional LCM-LoRA (few-step mode)."),
    revision: str = typer.Option(None, "--revision", help="Pin the FoivosPar/Arc2Face revision (branch, tag, commit)."),
    detector_repo: str = typer.Option(None, "--detector-repo", help="Hub repo holding scrfd_10g_bnkps.onnx (antelopev2 mirror)."),
    controlnet: bool = typer.Option(False, "--controlnet", help="Also fetch Arc2Face's pose ControlNet (generation.pose)."),
    exp_adapter: bool = typer.Option(False, "--exp-adapter", help="Also fetch Arc2Face's expression adapter (generation.expression)."),
) -> None:
    """Download Arc2Face, the SD 1.5 parts and the face models from the Hugging Face hub."""
    from synthface.models.hub import download

    def show(f) -> None:
        typer.echo(f"fetching {f.path}  <- {f.repo}:{f.repo_path}")

    def checked(f, entry: dict) -> None:
        how = (
            "matches the known-good sha256 shipped with synthface"
            if entry["pinned"]
            else "UNPINNED: synthface ships no known-good sha256 for this file; recorded as downloaded"
        )
        typer.echo(f"  {f.path}: {entry['size']} bytes, sha256 {entry['sha256']}, {how}")

    download(
        to, include_lcm_lora=lcm_lora, revision=revision, detector_repo=detector_repo, progress=show, checked=checked,
        include_controlnet=controlnet, include_exp_adapter=exp_adapter,
    )
    typer.echo(
        f"model folder ready: {to}; sha256 and size of every file recorded in {to}/synthface-models.json "
        f"(re-check them with `synthface models check {to} --verify`)"
    )


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def models_check(
    folder: Path = typer.Argument(..., help="Model folder."),
    verify: bool = typer.Option(
        False, "--verify", help="Re-hash every file and compare with the sha256 recorded in synthface-models.json."
    ),
) -> None:
    """List which model files are present, which are missing, and how to get them (exit 1 if any required is missing).

    Also compares the files with the sizes and hashes recorded in synthface-models.json
    (cheap size + mtime check; every file re-hashed with --verify); a differing file
    stops with a message naming it (exit 2).
    """
    from rich.console import Console

    from synthface.errors import MissingModelError
    from synthface.models.check import check, check_recorded, missing_folder_message

    report = check(folder)
    if not report.exists:
        raise MissingModelError(missing_folder_message(folder))
    Console(width=160).print(_files_table(folder, report))
    if report.missing_required:
        typer.echo(report.missing_message())
        raise typer.Exit(1)
    typer.echo(report.present_message())
    typer.echo(check_recorded(folder, report.recorded, verify))


_STATUS = {"ok": "[green]ok[/]", "missing": "[red]MISSING[/]", "absent": "[yellow]optional, absent[/]"}


def _files_table(folder: Path, report):
    from rich.table import Table

    table = Table(title=f"model folder {folder} (origin: {report.origin})", show_lines=False)
    for col in ("status", "file", "size", "sha256", "part", "how to get it"):
        table.add_column(col, overflow="fold", no_wrap=col == "file")
    for state, name, size, pin, part, how in report.rows():
        table.add_row(_STATUS[state], name, _size(size), pin, part, how)
    return table


def models_record(folder: Path = typer.Argument(..., help="Model folder.")) -> None:
    """Hash the model files now in FOLDER into its synthface-models.json.

    For a folder assembled by hand or downloaded before synthface recorded hashes:
    only run it on files you trust, since `generate` and `models check` then treat
    them as the reference.
    """
    from synthface.models.integrity import known_mismatch, record_folder

    files = record_folder(folder)
    for rel, entry in files.items():
        warning = known_mismatch(folder, rel, entry["sha256"], entry["size"])
        if warning:
            typer.echo(f"warning: {warning} (recorded anyway, as unpinned)")
    pinned = sum(1 for e in files.values() if e["pinned"])
    typer.echo(f"recorded {len(files)} file(s) in {folder}/synthface-models.json ({pinned} pinned to a known-good sha256)")


def models_init_tiny(
    folder: Path = typer.Argument(..., help="Folder to write (must be empty, absent, or an earlier tiny folder)."),
    lcm_lora: bool = typer.Option(False, "--lcm-lora", help="Also write a tiny random LCM-LoRA."),
    controlnet: bool = typer.Option(False, "--controlnet", help="Also write a tiny random pose ControlNet."),
    exp_adapter: bool = typer.Option(False, "--exp-adapter", help="Also write a tiny random expression adapter."),
) -> None:
    """Write a tiny random-weight model folder (same classes, layout and file formats as the real one)."""
    from synthface.models.check import prepare_tiny_target
    from synthface.models.tiny import init_tiny

    prepare_tiny_target(folder)
    init_tiny(folder, with_lcm_lora=lcm_lora, with_controlnet=controlnet, with_exp_adapter=exp_adapter)
    typer.echo(f"tiny random-weight model folder written: {folder}")


# ---------------------------------------------------------------- sample
def sample(
    models: Path = typer.Option(None, "--models", help="Model folder (default: models_dir of the config)."),
    bank: Path = typer.Option(..., "--bank", help="Identity bank Parquet file."),
    ids: str = typer.Option("0,1,2,3", "--ids", help="Identity ids: 0,1,2 or ranges 0-7."),
    per_id: int = typer.Option(4, "--per-id", min=1, max=100, help="Images per identity."),
    out: Path = typer.Option(..., "--out", help="Output folder for the PNGs and the contact sheet."),
    config: str = typer.Option(None, "--config", "-c", help="Factory config YAML."),
    overrides: list[str] = typer.Option(None, "--set", help="Override a key: --set generation.steps=10."),
    jitter: bool = typer.Option(True, "--jitter/--no-jitter", help="Per-image identity jitter (identity stage)."),
) -> None:
    """Generate a few identities from a bank: PNGs plus a contact sheet (identities x images)."""
    from pipelines.sample import sample as run_sample
    from synthface.cli.progress import rate_bar
    from pipelines.config import load_factory_config

    cfg = load_factory_config(config, overrides)
    with rate_bar("sampling", digits=2) as progress:
        result = run_sample(cfg, bank, ids, per_id, out, models or Path(cfg.models_dir), jitter=jitter, progress=progress)
    typer.echo(result.summary())


# ---------------------------------------------------------------- pose pool
def pose_pool(
    out: Path = typer.Argument(..., help="Folder to write the PNGs into (created)."),
    count: int = typer.Option(64, "--count", min=1, max=100000, help="Number of control images."),
    size: int = typer.Option(512, "--size", min=16, max=2048, help="Side in pixels (= generation.height and width)."),
    yaw_max: float = typer.Option(60.0, "--yaw-max", min=0, max=90, help="Yaw drawn uniformly in [-max, max] degrees."),
    pitch_max: float = typer.Option(20.0, "--pitch-max", min=0, max=90, help="Pitch range, degrees."),
    roll_max: float = typer.Option(10.0, "--roll-max", min=0, max=90, help="Roll range, degrees."),
    seed: int = typer.Option(0, "--seed", min=0),
) -> None:
    """Write stand-in normal maps of a simple 3D head at random angles (a pose pool for generation.pose).

    Carries the head's orientation only (an ellipsoid with a nose, not a face);
    for real normal maps render EMOCA fits (docs/generation.md, "Making a pose pool").
    """
    from synthface.errors import InputDataError
    from synthface.generation.pose_maps import write_pose_pool

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputDataError(f"{out}: not an empty folder; choose a new one (a pool is used as a whole)")
    paths = write_pose_pool(out, count, size, seed, yaw_max, pitch_max, roll_max)
    typer.echo(f"wrote {len(paths)} normal maps ({size}x{size}) to {out}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    models_app = typer.Typer(help="The local model folder: download, check, tiny test folder.", no_args_is_help=True)
    models_app.command("download")(models_download)
    models_app.command("check")(models_check)
    models_app.command("record")(models_record)
    models_app.command("init-tiny")(models_init_tiny)
    app.add_typer(models_app, name="models")
    app.command("sample")(sample)
    app.command("pose-pool")(pose_pool)
