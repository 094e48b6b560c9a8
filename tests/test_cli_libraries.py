"""The library functions the thin CLI commands call, tested directly (no subprocess).

The commands themselves are tested as a user runs them in test_generation_cli.py,
test_faces_assets.py, test_identity_cli.py and test_fault_sweep.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from synthface.errors import InputDataError, OutputError


# ---------------------------------------------------------------- faces.gallery
def _files():
    from synthface.faces.embed_files import EmbeddedFile

    unit = np.eye(4, dtype=np.float32)
    return [
        EmbeddedFile(Path("a.jpg"), unit[0], "", "", 0.91234, 1),
        EmbeddedFile(Path("b.jpg"), None, "unreadable", "not an image"),
        EmbeddedFile(Path("c.jpg"), None, "no_face", "", 0.1, 0),
        EmbeddedFile(Path("d.jpg"), unit[1], "", "2 faces, used the largest", 0.8, 2),
    ]


def test_gallery_report_rows_number_the_embedded_files_in_order():
    from synthface.faces.gallery import report_rows

    rows = report_rows(_files())
    assert [r["row"] for r in rows] == [0, -1, -1, 1]
    assert [r["status"] for r in rows] == ["ok", "failed", "failed", "ok"]
    assert rows[0]["det_score"] == 0.9123 and rows[3]["num_faces"] == 2
    assert "det_score" not in rows[1]  # an unreadable file was never analysed
    assert rows[2]["reason"] == "no_face"


def test_write_gallery_writes_npy_and_csv_without_temp_files(tmp_path):
    from synthface.faces.gallery import REPORT_FIELDS, report_rows, write_gallery

    files = _files()
    gallery = np.stack([f.embedding for f in files if f.ok])
    out = tmp_path / "g.npy"
    (tmp_path / "g.csv").write_text("old report")
    report = write_gallery(out, gallery, report_rows(files))
    assert report == tmp_path / "g.csv"
    np.testing.assert_array_equal(np.load(out), gallery)
    with open(report, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == REPORT_FIELDS and [r["image"] for r in rows] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.csv", "g.npy"]


def test_write_gallery_into_a_file_is_one_output_error(tmp_path):
    from synthface.faces.gallery import write_gallery

    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        write_gallery(tmp_path / "a-file" / "g.npy", np.zeros((1, 4), np.float32), [])


def test_prepare_out_checks_the_suffix_and_creates_the_folder(tmp_path):
    from synthface.faces.gallery import prepare_out

    with pytest.raises(InputDataError, match=r"must be a \.npy file"):
        prepare_out(tmp_path / "g.txt")
    assert prepare_out(tmp_path / "new" / "g.npy") == tmp_path / "new" / "g.csv"
    assert (tmp_path / "new").is_dir()


# ---------------------------------------------------------------- eval.face_pairs
def test_read_pairs_keeps_file_names_and_checks_the_same_flag(tmp_path):
    from eval.face_pairs import read_pairs

    good = tmp_path / "p.csv"
    good.write_text("image_a,image_b,same\nx/a.jpg,b.jpg,1\nc.jpg,d.jpg, 0\n")
    assert read_pairs(good) == [("a.jpg", "b.jpg", True), ("c.jpg", "d.jpg", False)]
    bad = tmp_path / "bad.csv"
    bad.write_text("image_a,image_b,same\na.jpg,b.jpg,1\na.jpg,c.jpg,yes\n")
    with pytest.raises(InputDataError, match="row 3: 'same' must be 0 or 1"):
        read_pairs(bad)
    (tmp_path / "cols.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputDataError, match="missing column"):
        read_pairs(tmp_path / "cols.csv")
    with pytest.raises(InputDataError, match="file not found"):
        read_pairs(tmp_path / "none.csv")


def test_read_labels_codes_identities_in_order_of_first_appearance(tmp_path):
    from eval.face_pairs import read_labels

    path = tmp_path / "ids.csv"
    path.write_text("image,identity\na.jpg,bob\nb.jpg, alice\nc/c.jpg,bob\n")
    assert read_labels(path) == {"a.jpg": 0, "b.jpg": 1, "c.jpg": 0}


def test_json_safe_turns_non_finite_numbers_into_null():
    from eval.face_pairs import json_safe

    value = {"auc": float("nan"), "x": np.float32(0.5), "band": (np.inf, 1.0), "a": np.array([1, 2])}
    safe = json_safe(value)
    assert safe == {"auc": None, "x": 0.5, "band": [None, 1.0], "a": [1, 2]}
    json.dumps(safe, allow_nan=False)


# ---------------------------------------------------------------- models.check
def test_folder_report_rows_and_messages_of_an_empty_folder(tmp_path):
    from synthface.models.check import check, check_recorded
    from synthface.models.layout import MODEL_FILES

    report = check(tmp_path)
    rows = report.rows()
    assert len(rows) == len(MODEL_FILES)
    states = {name: state for state, name, *_ in rows}
    assert states["arcface.onnx"] == "missing"
    assert {s for f, s in zip(MODEL_FILES, (r[0] for r in rows)) if not f.required} == {"absent"}
    assert all(pin == "-" and size is None and how for _, _, size, pin, _, how in rows)
    assert report.missing_message().startswith(f"{len(report.missing_required)} required file(s) missing")
    assert f"--to {tmp_path}" in report.missing_message()
    present = report.present_message()
    assert "LCM-LoRA absent" in present and f"models download --to {tmp_path} --lcm-lora" in present
    assert "synthface models record" in check_recorded(tmp_path, {}, verify=False)


# ---------------------------------------------------------------- identity
def test_stats_rows_and_notes():
    from synthface.identity.stats import stats_notes, stats_rows

    summary = {"min": 0.1, "median": 0.2, "mean": 0.25, "p99": 0.3, "max": 0.35}
    st = {"nn_cosine": summary, "max_gallery_cosine": None, "gallery": None, "nn_angle_min_degrees": 69.5,
          "screen": {"rejected_separation": 1, "rejected_novelty": 2, "resampled": 3}}
    assert stats_rows(st) == [
        ("nearest neighbour in bank", ["0.1000", "0.2000", "0.2500", "0.3000", "0.3500"]),
        ("max to gallery", ["-"] * 5),
    ]
    st.update(max_gallery_cosine=summary, gallery="/x/gallery.npy", nn_angle_min_degrees=None, screen=None)
    assert stats_rows(st)[1][0] == "max to gallery (gallery.npy)"
    assert stats_notes(st) == []


def test_images_report_lines():
    from synthface.identity.from_images import ImagesReport, Skip

    report = ImagesReport(3, 10, 8, 2, 128, [Skip("a/x.jpg", "no_face")], [Skip("b", "too_few_images", "1 < 2")],
                          {"rejected_separation": 0, "rejected_novelty": 1})
    lines = report.lines("bank.parquet")
    assert lines[0] == "  skipped a/x.jpg: no_face" and lines[1] == "  dropped identity b: too_few_images (1 < 2)"
    assert lines[2].startswith("wrote bank.parquet: 2 identities from 3 folders (8/10 images embedded, 128-d)")
    assert lines[3].startswith("note: 128-d vectors")


# ---------------------------------------------------------------- pipelines
def test_read_bank_vectors_picks_ids_and_names_absent_ones(tmp_path):
    from pipelines.sample import read_bank_vectors
    from synthface.identity.bank import read_bank, sample_bank, write_bank
    from synthface.identity.config import IdentityConfig

    bank, _ = sample_bank(IdentityConfig(num_identities=5, sampler="uniform"), seed=3)
    path = write_bank(bank, tmp_path / "bank.parquet")
    vectors = read_bank_vectors(path, [3, 0])
    np.testing.assert_array_equal(vectors[3], read_bank(path).embeddings[3])
    assert list(vectors) == [3, 0] and vectors[0].dtype == np.float32
    with pytest.raises(InputDataError, match=r"no identities with ids \[7\]"):
        read_bank_vectors(path, [0, 7])


def test_sample_result_summary():
    from pipelines.sample import SampleResult

    r = SampleResult(Path("o"), [0, 1], 4, 0.5, {"scheduler": "lcm"}, 4, True, None)
    assert r.summary() == "wrote 4 images of 2 identities and contact_sheet.png to o (0.500 s/image, lcm x4 steps, jitter on)"
    r.reference_strength, r.jitter = 0.6, False
    assert r.summary().endswith("jitter off, reference strength 0.6)")


def test_generate_result_summary():
    from pipelines.generate import GenerateResult

    r = GenerateResult("out", 2, 1, 1, retries=3,
                       dataset={"num_images": 10, "num_classes": 2, "shards": [{}, {}], "acceptance_rate": 0.5})
    assert r.summary() == "out: 10 images of 2 identities in 2 shards (acceptance 50.0%; 1 shards resumed, 1 generated, 3 retries)"
    assert GenerateResult("o", 0, 0, 0).summary().startswith("o: 0 images of 0 identities in 0 shards")


def test_prepare_tiny_target_refuses_a_folder_that_may_hold_real_weights(tmp_path):
    from synthface.errors import RunStateError
    from synthface.models.check import prepare_tiny_target
    from synthface.models.layout import MANIFEST

    prepare_tiny_target(tmp_path / "new" / "models")
    assert (tmp_path / "new" / "models").is_dir()
    real = tmp_path / "real"
    real.mkdir()
    (real / "unet.safetensors").write_bytes(b"w")
    with pytest.raises(RunStateError, match="refusing"):
        prepare_tiny_target(real)
    (real / MANIFEST).write_text(json.dumps({"origin": "tiny-random"}))
    prepare_tiny_target(real)  # an earlier tiny folder may be rewritten
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(RunStateError, match="cannot create the model folder"):
        prepare_tiny_target(tmp_path / "a-file" / "models")
