"""`python -m synthface.bench generate ...`: the generation benchmark without the full CLI.

Same command as `synthface bench generate`; this entry imports only what the
benchmark needs, so it runs on a bare GPU image that lacks the other stages'
dependencies (ray, webdataset, onnxruntime).
"""

from __future__ import annotations

import sys

import typer

from synthface.cli.bench_generate import bench_generate
from synthface.errors import SynthfaceError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.command("generate")(bench_generate)


@app.callback()
def _group() -> None:
    """Benchmarks (timings with a same-run baseline)."""


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="python -m synthface.bench")
    except SynthfaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
