"""The `synthface` command line: the composition root of the stages.

Each command group lives in its own module with a ``register(app)`` function.
Heavy libraries (torch, diffusers, ray, onnxruntime) are imported inside the
commands, so ``synthface --help`` stays fast.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from synthface.cli import bench, dataset, eval_cmds, faces, generation, ids
from synthface.errors import SynthfaceError

app = typer.Typer(
    name="synthface",
    help=(
        "Synthetic face-recognition dataset factory.\n\n"
        "Samples novel identities on the ArcFace hypersphere, generates many images per "
        "identity with Arc2Face, keeps those that match their identity, and writes "
        "WebDataset shards; then trains and benchmarks an FR model on them."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def version() -> None:
    """Print the synthface version."""
    from synthface.version import synthface_version

    typer.echo(synthface_version())


def show_config(
    config: str = typer.Option(None, "--config", "-c", help="Factory config YAML."),
    overrides: list[str] = typer.Option(None, "--set", help="Override a key: --set generation.steps=10."),
) -> None:
    """Validate a factory config (with overrides) and print it in full, defaults included."""
    import yaml

    from pipelines.config import load_factory_config

    cfg = load_factory_config(config, overrides)
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).rstrip())


app.command("version")(version)
app.command("config")(show_config)
for module in (ids, generation, faces, dataset, eval_cmds, bench):
    module.register(app)

_err = Console(stderr=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one message and a non-zero exit."""
    try:
        app(args=argv, prog_name="synthface")
    except SynthfaceError as exc:
        _err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _err.print("[bold red]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
