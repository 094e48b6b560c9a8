"""Verification protocol, .bin reading (and refusing hostile pickles), the benchmark CLI."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import cv2
import numpy as np
import pytest

from eval.verification import evaluate_embeddings, load_bin, pair_embeddings
from synthface.errors import InputDataError, OutputError, UnsafePickleError


def _unit_pairs(distances):
    """Pairs of 2-D unit vectors whose squared L2 distances are exactly ``distances``."""
    rows = []
    for d in distances:
        angle = np.arccos(1 - d / 2)  # |a - b|^2 = 2 - 2 cos(angle)
        rows += [[1.0, 0.0], [np.cos(angle), np.sin(angle)]]
    return np.asarray(rows)


def test_protocol_known_answer():
    # 20 pairs, 10 folds of 2 consecutive pairs. Same pairs at distance 0.555, except
    # pairs 0 and 10 at 3.0 (in folds 0 and 5); different pairs at 2.005.
    issame = np.array([True, False] * 10)
    dist = np.where(issame, 0.555, 2.005)
    dist[[0, 10]] = 3.0
    r = evaluate_embeddings(_unit_pairs(dist), issame, folds=10, far=1e-3)
    # Each fold picks the first best threshold on the other folds (0.56); folds 0 and 5
    # then misclassify their outlier: fold accuracies eight 1.0 and two 0.5.
    assert r.accuracy == pytest.approx(0.9)
    assert r.accuracy_std == pytest.approx(0.2)
    assert r.threshold == pytest.approx(0.56)
    # 8 of 10 positives score above every negative: AUC 0.8, TAR at FAR 0 is 0.8.
    assert r.auc == pytest.approx(0.8)
    assert r.tar_at_far == pytest.approx(0.8)
    assert (r.pairs, r.negatives) == (20, 10)


def test_protocol_perfect_and_chance():
    issame = np.array([True, False] * 50)
    perfect = evaluate_embeddings(_unit_pairs(np.where(issame, 0.3, 1.7)), issame)
    assert (perfect.accuracy, perfect.auc, perfect.tar_at_far) == (1.0, 1.0, 1.0)
    flipped = evaluate_embeddings(_unit_pairs(np.where(issame, 1.7, 0.3)), issame)
    assert flipped.accuracy <= 0.55 and flipped.auc == 0.0  # thresholds only accept "close"


def test_pair_embeddings_adds_the_flipped_image_and_normalises():
    images = np.zeros((2, 112, 112, 3), np.uint8)
    images[:, :, :56] = 200  # bright left half

    def embed(batch):  # (mean of left half, mean of right half)
        return np.stack([batch[:, :, :56].mean(axis=(1, 2, 3)), batch[:, :, 56:].mean(axis=(1, 2, 3))], axis=1)

    with_flip = pair_embeddings(embed, images, flip=True)
    np.testing.assert_allclose(with_flip, np.full((2, 2), 2**-0.5), rtol=1e-6)
    without = pair_embeddings(embed, images, flip=False)
    np.testing.assert_allclose(without, [[1.0, 0.0]] * 2)


def _face_jpegs(n):
    rng = np.random.default_rng(0)
    return [cv2.imencode(".jpg", rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))[1] for _ in range(n)]


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("kind", ["bytes", "ndarray"])
def test_load_bin_reads_bytes_and_numpy_entries(tmp_path, kind, protocol):
    encoded = _face_jpegs(4)
    bins = [e.tobytes() if kind == "bytes" else e for e in encoded]  # e: uint8 ndarray
    path = tmp_path / "x.bin"
    path.write_bytes(pickle.dumps((bins, [True, False]), protocol=protocol))
    pairs = load_bin(path)
    assert pairs.images.shape == (4, 112, 112, 3) and pairs.images.dtype == np.uint8
    assert pairs.issame.tolist() == [True, False]
    expected = cv2.cvtColor(cv2.imdecode(encoded[1], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(pairs.images[1], expected)


class _RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_hostile_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps(([_RunsCommand(f"touch {marker}")] * 2, [True])))
    with pytest.raises(UnsafePickleError, match="refusing to load.*system"):
        load_bin(path)
    assert not marker.exists()
    # An object-dtype numpy array smuggling a callable is refused too.
    path.write_bytes(pickle.dumps((np.array([print, print], dtype=object), [True])))
    with pytest.raises(UnsafePickleError):
        load_bin(path)


# Hand-written protocol-0/2 pickles: each would run code or call a function a .bin never needs.
HOSTILE_PICKLES = {
    "builtins.eval": b"cbuiltins\neval\n(S'__import__(\"os\").system(\"touch MARKER\")'\ntR.",
    "numpy.load": b"cnumpy\nload\n(S'/etc/passwd'\ntR.",
    "getattr on an allowed class": b"cbuiltins\ngetattr\n(cnumpy\nndarray\nS'__reduce__'\ntR.",
    "a codec other than latin1": b"c_codecs\nencode\n(X\x03\x00\x00\x00abcX\x0a\x00\x00\x00zlib_codectR.",
    "nested in the pairs": b"((lp0\ncos\nsystem\n(S'touch MARKER'\ntRa(I01\nlt.",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_PICKLES))
def test_crafted_hostile_pickles_are_refused(tmp_path, name):
    marker = tmp_path / "pwned"
    path = tmp_path / "lfw.bin"
    path.write_bytes(HOSTILE_PICKLES[name].replace(b"MARKER", str(marker).encode()))
    with pytest.raises(UnsafePickleError, match="refusing to load"):
        load_bin(path)
    assert not marker.exists()


def test_bytes_pickled_by_python3_protocol_2_still_load(tmp_path):
    # protocol 2 stores bytes as _codecs.encode(text, "latin1"): the one call allowed.
    path = tmp_path / "x.bin"
    path.write_bytes(pickle.dumps(([e.tobytes() for e in _face_jpegs(4)], [True, True]), protocol=2))
    assert b"_codecs" in path.read_bytes()
    assert load_bin(path).images.shape == (4, 112, 112, 3)


def test_malformed_bins_fail_with_clear_errors(tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(b"not a pickle")
    with pytest.raises(InputDataError, match="not a verification .bin"):
        load_bin(path)
    path.write_bytes(pickle.dumps((_face_jpegs(3), [True, False])))
    with pytest.raises(InputDataError, match="3 images for 2 pairs"):
        load_bin(path)
    path.write_bytes(pickle.dumps((5, [True, False])))
    with pytest.raises(InputDataError, match=r"\(bins, issame_list\), got \(int, list\)"):
        load_bin(path)


@pytest.mark.assets
def test_real_mobilefacenet_benchmark_cli(assets, tmp_path, cli):
    """The shared ArcFace MobileFaceNet (ONNX, 0..255 input) through `synthface benchmark`."""
    out = tmp_path / "report"
    proc = cli("benchmark", "--model", assets / "models" / "mobilefacenet_arcface_128d.onnx",
               "--bins", assets / "verification", "--out", out)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    results = {r["name"]: r for r in report["results"]}
    assert set(results) == {"deepface_pairs", "small_lfw"}
    assert results["deepface_pairs"]["accuracy"] >= 0.99
    assert results["deepface_pairs"]["auc"] >= 0.99
    assert results["small_lfw"]["pairs"] == 10 and results["small_lfw"]["auc"] is None  # same-person pairs only
    markdown = (out / "report.md").read_text()
    assert "deepface_pairs" in markdown and "98.81" in markdown and "Arc2Face" in markdown
    assert "input raw" in report["model_description"]  # normalisation detected inside the graph


def test_benchmark_cli_errors_are_one_line(tmp_path, cli):
    (tmp_path / "bins").mkdir()
    proc = cli("benchmark", "--model", tmp_path / "missing.onnx", "--bins", tmp_path / "bins", "--out", tmp_path / "r")
    assert proc.returncode == 2
    assert "no .bin files" in proc.stderr and "Traceback" not in proc.stderr
    shutil.copy(__file__, tmp_path / "bins" / "lfw.bin")
    proc = cli("benchmark", "--model", tmp_path / "missing.onnx", "--bins", tmp_path / "bins", "--out", tmp_path / "r")
    assert proc.returncode == 2 and "ONNX model not found" in proc.stderr


def test_benchmark_refuses_an_unwritable_out_before_scoring(tmp_path, monkeypatch):
    from eval.benchmark import run_benchmark
    from eval.config import VerifyConfig

    (tmp_path / "bins").mkdir()
    (tmp_path / "bins" / "lfw.bin").write_bytes(pickle.dumps((_face_jpegs(4), [True, False])))
    (tmp_path / "a_file").write_text("")
    scored = []

    class Embed:  # stands in for load_embedder's result; records any scoring
        description = "stand-in"

        def __call__(self, batch):
            scored.append(len(batch))
            return np.ones((len(batch), 4))

    monkeypatch.setattr("eval.benchmark.load_embedder", lambda model, onnx_input: Embed())
    with pytest.raises(OutputError, match="cannot create the report folder"):
        run_benchmark("m.onnx", tmp_path / "bins", tmp_path / "a_file" / "report", VerifyConfig(), echo=lambda s: None)
    assert scored == []  # refused before any image was embedded


@pytest.mark.parametrize("onnx_input", ["auto", "raw"])
def test_a_corrupt_onnx_model_is_one_clear_error(tmp_path, onnx_input):
    from eval.embedders import load_embedder

    path = tmp_path / "recognizer.onnx"
    path.write_bytes(b"this is not a protobuf")
    with pytest.raises(InputDataError, match="recognizer.onnx"):
        load_embedder(path, onnx_input=onnx_input)
