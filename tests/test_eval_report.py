"""The benchmark report (md + json) from fake scores: the five-benchmark table, its
average, the published rows with their sources, and our row's training set."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from eval.embedders import training_info
from eval.report import FIVE, PUBLISHED, build_report, render_markdown, write_report
from eval.verification import VerificationResult

SETTINGS = {"flip": True, "folds": 10, "far": 1e-3}
TRAINING = {"dataset": "out/ds", "images": 691, "classes": 96, "backbone": "iresnet50", "loss": "arcface", "steps": 120}


def result(name: str, accuracy: float) -> VerificationResult:
    return VerificationResult(name, 6000, accuracy, 0.01, 1.2, 0.99, 0.9, 1e-3, 3000)


def fake_results(**acc) -> list[VerificationResult]:
    return [result(name, a) for name, a in acc.items()]


ALL_FIVE = {"lfw": 0.9912, "cfp_fp": 0.8801, "agedb_30": 0.9003, "calfw": 0.9104, "cplfw": 0.8206}


def table_row(markdown: str, starts: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(starts))
    return [c.strip() for c in line.strip("|").split("|")]


def test_all_five_give_the_average_and_md_matches_json(tmp_path):
    report = build_report("m.pt", "iresnet50", fake_results(**ALL_FIVE, deepface_pairs=0.97), SETTINGS, 1.0, TRAINING)
    five = report["five_benchmark"]
    assert five["missing"] == [] and five["scores"] == {k: round(100 * v, 2) for k, v in ALL_FIVE.items()}
    assert five["average"] == pytest.approx(100 * sum(ALL_FIVE.values()) / 5, abs=0.005)  # 90.05, not the extra bin
    json_path, md_path = write_report(report, tmp_path)
    on_disk = json.loads(json_path.read_text())
    cells = table_row(md_path.read_text(), "| **this model**")
    # columns: data, images, classes, backbone, loss, steps, five scores, avg, source
    assert cells[1:6] == ["691", "96", "iresnet50", "arcface", "120"]
    assert [float(c) for c in cells[6:11]] == [on_disk["five_benchmark"]["scores"][k] for k in FIVE]
    assert float(cells[11].strip("*")) == on_disk["five_benchmark"]["average"]
    assert "deepface_pairs" in md_path.read_text()  # other .bin files still listed in the per-file table


def test_missing_benchmark_gives_no_average_and_says_which(tmp_path):
    partial = {k: v for k, v in ALL_FIVE.items() if k != "cplfw"}
    report = build_report("m.pt", "iresnet50", fake_results(**partial), SETTINGS, 1.0, TRAINING)
    assert report["five_benchmark"]["average"] is None and report["five_benchmark"]["missing"] == ["cplfw"]
    md = render_markdown(report)
    assert "not scored here: cplfw.bin" in md
    cells = table_row(md, "| **this model**")
    assert cells[10] == "n/a" and cells[11] == "n/a"


def test_published_rows_are_complete_sourced_and_in_column_order():
    names = [p["name"] for p in PUBLISHED]
    assert names == ["Arc2Face", "HSFace10K", "VFace10K", "VIGFace-S", "CASIA-WebFace (real)"]
    for p in PUBLISHED:
        assert set(p["scores"]) == set(FIVE) and p["source"] and p["checked_in"]
        assert p["backbone"] and p["loss"] and p["images"] and p["classes"]
        # the source's average agrees with its five figures (rounding only)
        assert abs(sum(p["scores"].values()) / 5 - p["average"]) <= 0.011, p["name"]
        # a column swap would show: in every source LFW is the highest and CPLFW below CFP-FP
        assert max(p["scores"].values()) == p["scores"]["lfw"] and p["scores"]["cplfw"] < p["scores"]["cfp_fp"], p["name"]


def test_published_rows_render_with_source_and_where_checked():
    md = render_markdown(build_report("m.onnx", "ONNX", fake_results(**ALL_FIVE), SETTINGS, 1.0, None))
    for p in PUBLISHED:
        cells = table_row(md, f"| {p['name']}:")
        assert [float(c) for c in cells[6:11]] == [p["scores"][k] for k in FIVE]
        assert float(cells[11]) == p["average"] and cells[12] == p["source"]
        assert f"- {p['name']}: {p['checked_in']}." in md
    assert table_row(md, "| **this model**")[0].endswith("unknown (ONNX model: training set not recorded)")


def test_training_info_from_final_weights_and_from_a_checkpoint():
    dataset = {"root": "out/ds", "urls": 12, "num_classes": 96, "num_images": 691}
    final = {"model": {"backbone": "mobilefacenet"}, "loss": {"type": "cosface"}, "step": 40, "dataset": dataset}
    assert training_info(final) == {
        "dataset": "out/ds", "images": 691, "classes": 96, "backbone": "mobilefacenet", "loss": "cosface", "steps": 40,
    }
    assert training_info({"model": {"backbone": "iresnet50"}, "step": 3})["loss"] is None  # older weights: unknown


def test_benchmark_passes_the_models_training_set_to_the_report(tmp_path, monkeypatch):
    from test_eval_verification import _face_jpegs

    from eval.benchmark import run_benchmark
    from eval.config import VerifyConfig

    (tmp_path / "bins").mkdir()
    (tmp_path / "bins" / "lfw.bin").write_bytes(pickle.dumps((_face_jpegs(4), [True, False])))

    class Embed:
        description = "stand-in"
        training = TRAINING

        def __call__(self, batch):
            return np.random.default_rng(0).normal(size=(len(batch), 8)).astype(np.float32)

    monkeypatch.setattr("eval.benchmark.load_embedder", lambda model, onnx_input: Embed())
    report = run_benchmark("m.pt", tmp_path / "bins", tmp_path / "r", VerifyConfig(folds=2), echo=lambda s: None)
    assert report["training"] == TRAINING
    assert report["five_benchmark"]["missing"] == ["cfp_fp", "agedb_30", "calfw", "cplfw"]
    assert json.loads((tmp_path / "r" / "report.json").read_text())["training"] == TRAINING
