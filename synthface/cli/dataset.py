"""CLI commands: `generate` (the distributed factory run), `verify`, `card`."""

from __future__ import annotations

import typer


def _setup_logging() -> None:
    import logging
    import sys

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
    )


def generate(
    config: str = typer.Option(..., "--config", "-c", help="Factory config YAML (e.g. configs/demo.yaml)."),
    overrides: list[str] = typer.Option(None, "--set", help="Override a key: --set run.workers=4."),
    out: str = typer.Option(..., "--out", "-o", help="Output folder or fsspec URL (s3://bucket/run)."),
    bank: str = typer.Option(None, "--bank", help="Identity bank Parquet (overrides run.bank)."),
    ray_address: str = typer.Option(
        None, "--ray-address", help="Join a Ray cluster ('auto' or ray://host:port); default: embedded Ray."
    ),
    restart: bool = typer.Option(
        False, "--restart", "--overwrite", help="Delete a previous run in OUT (even with another config) and start over."
    ),
    verify: bool = typer.Option(
        False, "--verify", help="Re-hash every model file against synthface-models.json (default: size + mtime check)."
    ),
) -> None:
    """Generate a dataset: bank identities -> images -> filter -> WebDataset shards in OUT.

    Rerunning the same command resumes: committed shards are kept, the rest redone.
    """
    _setup_logging()
    from pipelines.generate import ensure_complete
    from pipelines.generate import generate as run_generate
    from pipelines.config import load_factory_config

    cfg = load_factory_config(config, list(overrides or []) + ([f"run.bank={bank}"] if bank else []))
    result = run_generate(cfg, out, ray_address=ray_address, restart=restart, verify_models=verify)
    typer.echo(result.summary())
    ensure_complete(result)


def verify(
    out: str = typer.Argument(..., help="Dataset folder or fsspec URL."),
    no_images: bool = typer.Option(False, "--no-images", help="Skip decoding every image."),
) -> None:
    """Check a dataset: shards readable, counts agree, keys unique, labels valid, images 112x112."""
    from synthface.shards.verify import verify_dataset

    report = verify_dataset(out, check_images=not no_images)
    for line in report.problems:
        typer.echo(f"problem: {line}", err=True)
    if report.ok:
        typer.echo(f"ok: {report.shards} shards, {report.samples} samples, {report.classes} identities with images")
        return
    typer.echo(f"FAILED: {len(report.problems)} problem(s) in {out}", err=True)
    raise typer.Exit(1)


def finalise(out: str = typer.Argument(..., help="Dataset folder or fsspec URL.")) -> None:
    """Apply the dataset-wide decisions (duplicate identities across shards) to a complete dataset.

    `generate` runs it at the end with run.inter_class 'dataset'; running it again changes nothing.
    """
    _setup_logging()
    from pipelines.finalise import finalise as run_finalise
    from synthface.shards.lock import OutputLock
    from synthface.shards.storage import Output

    output = Output(out)
    with OutputLock(output, command="synthface finalise"):  # it rewrites shards: no generate beside it
        result = run_finalise(output)
    typer.echo(
        f"{out}: {len(result.new)} classes dropped now, {len(result.dropped)} in all; "
        f"{len(result.shards_rewritten)} shards rewritten"
    )


def audit(
    out: str = typer.Argument(..., help="Dataset folder or fsspec URL."),
    bins: str = typer.Option(None, "--bins", help="Folder of verification .bin files (LFW, CFP-FP, AgeDB-30, ...)."),
    gallery: str = typer.Option(None, "--gallery", help="Real-face embeddings .npy (synthface embed-gallery)."),
    threshold: float = typer.Option(None, "--threshold", help="Cosine at which an identity counts as a real face "
                                    "(default: the run's filter.tau_target)."),
    drop: bool = typer.Option(False, "--drop", help="Remove the matched identities from the shards (finalising)."),
    models: str = typer.Option(None, "--models", help="Model folder (default: the dataset config's models_dir)."),
) -> None:
    """Leakage audit: generated identities within a threshold of a benchmark or gallery face."""
    _setup_logging()
    from pipelines.audit import audit as run_audit

    result = run_audit(out, bins_dir=bins, gallery=gallery, threshold=threshold, drop=drop, models_dir=models)
    for name, s in result.sources.items():
        typer.echo(f"{name}: {s['identities_matched']} identities within cos {result.threshold} of "
                   f"{s['faces_matched']} of its {s['faces']} faces (max {s['max_similarity']})")
    for m in result.matches[:10]:
        typer.echo(f"  identity {m['id']} ~ {m['source']} face {m['face']}: {m['similarity']:.3f}")
    if result.dropped:
        typer.echo(f"dropped {len(result.dropped)} identities (reason benchmark_leak)")


def card(out: str = typer.Argument(..., help="Dataset folder or fsspec URL.")) -> None:
    """Rebuild the dataset card (README.md + card/*.png) from dataset.json and the shards."""
    from synthface.shards.card import write_card

    typer.echo(write_card(out))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.command("generate")(generate)
    app.command("verify")(verify)
    app.command("finalise")(finalise)
    app.command("audit")(audit)
    app.command("card")(card)
