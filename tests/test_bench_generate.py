"""`synthface bench generate` on the CPU with the tiny config: structure, never speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.generation import nominal_tflop, unet_passes

REPO_ROOT = Path(__file__).resolve().parents[1]

def run_bench(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`synthface bench generate ARGS`, run as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "synthface", "bench", "generate", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_flop_model_matches_the_issue():
    # 25 steps with guidance: 50 UNet passes; 0.84 each + 2.5 for the VAE at 512².
    assert unet_passes(25, 3.0) == 50
    assert unet_passes(25, 1.0) == 25
    assert unet_passes(25, 3.0, 0.5) == 38  # guidance on the first ceil(12.5) = 13 steps
    assert nominal_tflop(50, 512, 512) == pytest.approx(44.5)
    assert nominal_tflop(50, 1024, 1024) == pytest.approx(4 * 44.5)


def test_full_architecture_is_sd15_sized_and_counts_the_issue_flops():
    """The random 'full' folder has the real sizes: SD 1.5 UNet, SD VAE, CLIP ViT-L/14 text tower."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from bench.generation import count_flops
    from bench.random_models import CLIP_L14_TEXT, SD15_UNET, SD15_VAE

    with torch.device("meta"):  # shapes only: no memory, no compute
        unet = UNet2DConditionModel(**SD15_UNET).eval()
        vae = AutoencoderKL(**SD15_VAE).eval()
        text = CLIPTextModel(CLIPTextConfig(**CLIP_L14_TEXT))
    # Published parameter counts of SD 1.5's UNet and VAE and CLIP ViT-L/14's text tower.
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    assert sum(p.numel() for p in text.parameters()) == 123_060_480
    flops = count_flops(unet, vae, 512, 512, 768, "meta", torch.float32)
    assert flops["unet_pass_tflop"] == pytest.approx(0.84, rel=0.1)
    assert flops["vae_decode_tflop"] == pytest.approx(2.5, rel=0.1)


def test_tiny_benchmark_runs_end_to_end_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_bench(
        "--tiny", "--device", "cpu", "--size", "64", "--steps", "2", "--images", "2",
        "--batch-sizes", "1,2", "--switches", "channels_last", "--outputs", "steps,lcm,reference", "--fewer-steps", "1",
        "--work-dir", tmp_path, "--json", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "B/A =" in proc.stdout and "OUTPUT-CHANGING" in proc.stdout
    result = json.loads(out.read_text())

    rows = {r["name"]: r for r in result["rows"]}
    groups = [r["group"] for r in result["rows"]]
    assert groups.count("reference") == 1
    assert [r["batch_size"] for r in result["rows"] if r["group"] == "generator"] == [1, 2]
    assert "channels_last=on" in rows  # CPU default is off, so the row turns it on
    assert {"steps=1", "lcm (LCM-LoRA)"} <= set(rows)
    for row in result["rows"]:
        assert row["error"] is None, row
        for key in ("images_per_s", "ms_per_image", "seconds", "warmup_s", "tflop_per_image", "tflops_per_s"):
            assert row[key] > 0, (row["name"], key)
        assert len(row["call_s"]) == -(-2 // row["batch_size"])  # whole calls covering --images
        assert row["peak_mem_gib"] is None  # no GPU memory to report on a CPU

    ref = next(r for r in result["rows"] if r["group"] == "reference")
    assert ref["batch_size"] == 4 and ref["images"] == 4  # one identity, num_images_per_prompt=4
    assert ref["unet_passes_per_image"] == 4  # 2 steps with guidance
    # Output-changing settings really reach the generator.
    assert rows["steps=1"]["steps"] == 1 and rows["steps=1"]["unet_passes_per_image"] == 2
    assert rows["lcm (LCM-LoRA)"]["guidance"] == 1.0
    assert rows["lcm (LCM-LoRA)"]["unet_passes_per_image"] == rows["lcm (LCM-LoRA)"]["steps"]
    # reference mode runs the last int(2 x 0.6) = 1 step (with guidance: 2 passes), plus a VAE encode
    assert rows["reference (img2img, strength 0.6)"]["steps"] == 1
    assert rows["reference (img2img, strength 0.6)"]["unet_passes_per_image"] == 2
    assert result["summary"]["reference_mode_cost_vs_plain"] > 0 and "reference mode (img2img)" in proc.stdout
    assert rows["channels_last=on"]["perf"]["channels_last"] is True
    assert rows["B: generator b1"]["perf"]["channels_last"] is False

    # B/A comes from this run's rows; output-changing rows never enter it.
    summary = result["summary"]
    sweep = [r for r in result["rows"] if r["group"] == "generator"]
    best = max(sweep, key=lambda r: r["images_per_s"])
    assert summary["best_batch_size"] == best["batch_size"]
    assert summary["b_over_a"] == pytest.approx(best["images_per_s"] / ref["images_per_s"])
    assert summary["b_over_a_same_batch"] is None  # no batch-4 row in this sweep
    for row in result["rows"]:
        if row is not ref:
            assert row["vs_reference"] == pytest.approx(row["images_per_s"] / ref["images_per_s"])
    assert result["flops"]["basis"] == "counted" and result["flops"]["unet_pass_tflop"] > 0
    assert result["settings"]["arch"] == "tiny" and result["machine"]["device"] == "cpu"


def test_bad_options_give_one_line_and_exit_2(tmp_path):
    proc = run_bench("--tiny", "--parts", "reference,warp", "--json", tmp_path / "x.json", timeout=120)
    assert proc.returncode == 2
    assert "unknown part" in proc.stderr and "warp" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_bench("--tiny", "--batch-sizes", "4,x", "--json", tmp_path / "x.json", timeout=120)
    assert proc.returncode == 2 and "--batch-sizes" in proc.stderr


def test_compiled_rows_and_the_warm_cache_row(tmp_path):
    # dynamo's 'eager' backend exercises the compile path without a C++ build.
    out = tmp_path / "bench.json"
    proc = run_bench(
        "--tiny", "--device", "cpu", "--size", "64", "--steps", "1", "--images", "1", "--batch-sizes", "1",
        "--parts", "sweep,cache", "--set", "generation.perf.compile=true", "--set", "generation.perf.compile_backend=eager",
        "--set", f"generation.perf.compile_cache_dir={tmp_path / 'cache'}", "--work-dir", tmp_path, "--json", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["group"] for r in result["rows"]] == ["generator", "compile-cache"]
    for row in result["rows"]:
        assert row["error"] is None and row["perf"]["compile"] is True and row["images_per_s"] > 0
    assert result["summary"]["b_over_a"] is None  # no reference row, so no ratio is made up
    assert result["summary"]["first_images_s"] >= result["rows"][0]["warmup_s"]


def test_switch_rows_flip_after_the_users_overrides():
    from bench.generation import BenchOptions, GenerationBenchmark, generation_config

    bench = GenerationBenchmark(
        BenchOptions(arch="tiny", device="cpu", overrides=("generation.perf.channels_last=true",), switches=("channels_last", "attention"))
    )
    base = bench.base_data()
    rows = {name: changes for name, changes, _ in bench.switch_variants(base)}
    assert set(rows) == {"channels_last=off", "attention=classic"}  # on (by override), so the row turns it off
    cfg = generation_config(base, bench.opts.overrides, rows["channels_last=off"])
    assert cfg.perf.channels_last is False and cfg.steps == 25 and cfg.height == 128
    cfg = generation_config(base, bench.opts.overrides, rows["attention=classic"])
    assert cfg.perf.channels_last is True and cfg.perf.attention == "classic"
    with pytest.raises(Exception, match="generation"):
        generation_config(base, ["faces.det_size=320"])


def test_controls_part_times_each_control_against_plain_in_the_same_run(tmp_path, tiny_models):
    """`--parts controls`: plain, expression, pose and both, at one batch size, on a folder with the control weights."""
    import torch

    from bench.generation import BenchOptions, GenerationBenchmark

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bench = GenerationBenchmark(
            BenchOptions(arch="tiny", device="cpu", size=64, steps=1, images=1, batch_sizes=(1,), parts=("controls",),
                         models_dir=str(tiny_models), json_path=str(tmp_path / "b.json")),
            log=lambda _: None,
        )
        result = bench.run()
    finally:
        torch.set_num_threads(threads)
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["control: none (baseline)", "control: expression adapter", "control: pose ControlNet",
                          "control: expression + pose"]
    for name, row in rows.items():
        assert row["error"] is None and row["ms_per_image"] > 0, row
        if name != "control: none (baseline)":
            assert "x plain ms/image" in row["note"]
