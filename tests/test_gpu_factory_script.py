"""scripts/gpu_factory.py, the prepared GPU run of issue 17, in its CPU dry-run mode (--tiny):
every step runs and the JSON holds what part 2 reads (generator-only vs factory images/s,
first commit, memory), here with the in-process runner and the tiny models."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_factory", REPO / "scripts" / "gpu_factory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(600)
def test_dry_run_writes_every_step(tmp_path, tiny_models, one_torch_thread):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    (work / "models").symlink_to(tiny_models)  # the models step is init_tiny (covered by its own tests)
    rc = load_script().main(
        ["--tiny", "--runner", "inprocess", "--steps", "env,bank,generator,factory",
         "--out", str(out), "--work", str(work), "--perf", "channels_last=false"]
    )
    data = json.loads((out / "factory-gpu.json").read_text())
    assert rc == 0, json.dumps(data, default=str)[-3000:]
    steps = data["steps"]
    assert set(steps) == {"env", "bank", "generator", "factory"}
    assert steps["env"]["modules"]["torch"] and "available" in steps["env"]["onnxruntime"]
    assert steps["generator"]["rc"] == 0 and steps["generator"]["images_per_s"] > 0
    assert "generation.perf.channels_last=false" in steps["generator"]["cmd"]
    for mode in ("overlap_off", "overlap_on"):
        run = steps["factory"][mode]
        assert run["rc"] == 0 and run["runner"] == "inprocess" and run["overlap"] == (mode == "overlap_on")
        assert run["shards"] == 2 and run["candidates"] == 8 == run["accepted"]  # the filter passes everything
        assert run["first_commit_s"] > 0 and run["steady_images_per_s"] > 0
        assert run["sampling"]["host_rss_peak_mib"] > 0 and run["sampling"]["samples"] > 0
        summary = data["summary"][mode]
        assert summary["factory_over_generator"] == pytest.approx(run["steady_images_per_s"] / steps["generator"]["images_per_s"])
    assert "analyze_wait_s" in steps["factory"]["overlap_on"]["timings_s_sum"]
    assert "analyze_wait_s" not in steps["factory"]["overlap_off"]["timings_s_sum"]


def test_unknown_step_is_refused(tmp_path, capsys):
    assert load_script().main(["--tiny", "--steps", "env,warp", "--out", str(tmp_path), "--work", str(tmp_path)]) == 2
    assert "unknown step(s) ['warp']" in capsys.readouterr().err
