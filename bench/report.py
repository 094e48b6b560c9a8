"""Rich tables for the generation benchmark's result dict."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from bench.runner import load_warning


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def rows_table(title: str, rows: list[dict[str, Any]], caption: str | None = None) -> Table:
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    table.add_column("row", justify="left", no_wrap=True)
    for name, justify in (
        ("batch", "right"),
        ("dtype", "left"),
        ("steps/passes", "left"),
        ("img/s", "right"),
        ("ms/img", "right"),
        ("cpu ms/img", "right"),
        ("warm-up s", "right"),
        ("peak GiB", "right"),
        ("TFLOP/s", "right"),
        ("vs A", "right"),
    ):
        table.add_column(name, justify=justify)
    for row in rows:
        if row.get("error"):
            table.add_row(row["name"], str(row["batch_size"]), row["dtype"], "", "[red]failed[/]", row["error"][:60], "", "", "", "", "")
            continue
        table.add_row(
            row["name"],
            str(row["batch_size"]),
            row["dtype"].replace("float", "fp").replace("bfp16", "bf16"),
            f"{row['steps']}/{row['unet_passes_per_image']:g}",
            _num(row["images_per_s"], ".3g"),
            _num(row["ms_per_image"], ".4g"),
            _num(row.get("cpu_ms_per_image"), ".4g"),
            _num(row["warmup_s"], ".3g"),
            _num(row["peak_mem_gib"], ".2f"),
            _num(row["tflops_per_s"], ".3g"),
            _num(row["vs_reference"], ".2f") + ("x" if row["vs_reference"] is not None else ""),
        )
    return table


def render(result: dict[str, Any]) -> list[Table | str]:
    """The tables and summary lines for one run of ``synthface bench generate``."""
    settings, flops, summary = result["settings"], result["flops"], result["summary"]
    machine = result["machine"]
    where = machine.get("gpu") or f"CPU ({machine.get('host_cpus')} cores)"
    basis = flops.get("basis", "nominal")
    if basis == "nominal":
        flop_note = (
            f"TFLOP/s on the issue's count: {flops.get('nominal_unet_pass_tflop', 0):.3g} TFLOP per UNet pass, "
            f"{flops.get('nominal_vae_decode_tflop', 0):.3g} per VAE decode at {settings['size']}px "
            f"(FlopCounterMode counts {flops.get('unet_pass_tflop', float('nan')):.3g} / {flops.get('vae_decode_tflop', float('nan')):.3g})"
        )
    else:
        flop_note = (
            f"TFLOP/s on counted FLOPs (FlopCounterMode): {flops.get('unet_pass_tflop', 0):.3g} TFLOP per UNet pass, "
            f"{flops.get('vae_decode_tflop', 0):.3g} per VAE decode at {settings['size']}px"
        )
    same = [r for r in result["rows"] if r["group"] != "output-changing"]
    changed = [r for r in result["rows"] if r["group"] == "output-changing"]
    head = (
        f"bench generate: {settings['arch']} architecture, {settings['weights']} weights, {settings['size']}px, "
        f"{settings['scheduler']} {settings['steps']} steps, guidance {settings['guidance']:g}, on {where}"
    )
    out: list[Table | str] = [head]
    load, cpus = machine.get("load_avg_1min"), machine.get("host_cpus")
    warning = load_warning(load, cpus) if load is not None and cpus else None
    if warning:
        out.append(warning.replace("warning:", "[bold yellow]warning:[/]", 1))
    out.append(
        rows_table(
            "Same output (up to float rounding): A = reference pipeline, B = our generator",
            same,
            caption="warm-up = first call of the shape (compile included), excluded from img/s. " + flop_note,
        )
    )
    if changed:
        out.append(rows_table("OUTPUT-CHANGING switches (speed only; never part of B/A)", changed))
    if summary.get("b_over_a") is not None:
        out.append(
            f"B/A = {summary['b_over_a']:.2f}x at B's best batch size {summary['best_batch_size']} "
            f"({summary['best_images_per_s']:.3g} vs {summary['reference_images_per_s']:.3g} images/s, same run)"
            + (f"; {summary['b_over_a_same_batch']:.2f}x at batch 4" if summary.get("b_over_a_same_batch") is not None else "")
        )
    if summary.get("reference_mode_cost_vs_plain") is not None:
        out.append(
            f"reference mode (img2img): {summary['reference_mode_cost_vs_plain']:.2f}x the time per image of plain "
            "generation at the same batch size (same run)"
        )
    if summary.get("first_images_s") is not None:
        out.append(f"first batch of B out {summary['first_images_s']:.1f} s after loading began (load + warm-up/compile)")
    return out
