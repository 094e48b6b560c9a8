"""`synthface bench ...`: benchmarks (not tests). Each prints a ratio against a
baseline measured in the same run. Stage CLI modules add their commands to
``bench_app`` (e.g. ``@bench_app.command("ids")``)."""

from __future__ import annotations

import typer

bench_app = typer.Typer(help="Benchmarks: timings with a same-run baseline, never asserted in tests.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")

