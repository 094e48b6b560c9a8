"""Bad images are rejections with a reason, never crashes; bad model files are clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from synthface.errors import MissingModelError
from synthface.faces import FaceAnalysisConfig, FaceAnalyzer
from synthface.faces.images import image_problem, read_rgb
from synthface.faces.tiny import write_tiny_face_models


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_faces")
    write_tiny_face_models(folder)
    return folder


def bad_images():
    rng = np.random.default_rng(0)
    return {
        "blank": np.full((256, 256, 3), 255, np.uint8),
        "black": np.zeros((512, 512, 3), np.uint8),
        "grayscale": rng.integers(0, 256, (128, 128), dtype=np.uint8),
        "rgba": rng.integers(0, 256, (128, 128, 4), dtype=np.uint8),
        "float": rng.random((128, 128, 3)).astype(np.float32),
        "tiny": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8),
        "empty": np.zeros((0, 10, 3), np.uint8),
        "not_an_array": [[1, 2, 3]],
    }


@pytest.mark.parametrize("kind", list(bad_images()))
def test_bad_image_is_a_bad_image_rejection(tiny_dir, kind):
    analyzer = FaceAnalyzer.from_config(tiny_dir, FaceAnalysisConfig())
    good = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    results = analyzer.analyze([bad_images()[kind], good])
    assert len(results) == 2
    bad = results[0]
    assert not bad.ok and bad.reason == "bad_image" and bad.detail
    assert bad.embedding is None and bad.aligned is None
    assert results[1].ok  # one bad image does not spoil its batch


def test_odd_sizes_do_not_crash(tiny_dir):
    analyzer = FaceAnalyzer.from_config(tiny_dir, FaceAnalysisConfig())
    rng = np.random.default_rng(2)
    shapes = [(9, 9, 3), (37, 1001, 3), (1001, 37, 3), (513, 511, 3), (31, 33, 3)]
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]
    images.append(np.asfortranarray(images[3]))  # non-contiguous memory
    images.append(images[3][::2, ::3])  # a strided view
    results = analyzer.analyze(images)
    assert len(results) == len(images)
    for r in results:
        assert r.ok or r.reason in {"no_face", "align_failed", "bad_image"}
        if r.ok:
            assert r.aligned.shape == (112, 112, 3) and abs(np.linalg.norm(r.embedding) - 1) < 1e-4


def test_real_detector_rejects_noise_and_blank_with_no_face(assets):
    cfg = FaceAnalysisConfig(
        detector=str(assets / "models" / "scrfd_500m_kps.onnx"),
        recognizer=str(assets / "models" / "mobilefacenet_arcface_128d.onnx"),
    )
    analyzer = FaceAnalyzer.from_config(None, cfg)
    rng = np.random.default_rng(3)
    images = [
        rng.integers(0, 256, (512, 512, 3), dtype=np.uint8),  # noise
        rng.integers(0, 256, (300, 777, 3), dtype=np.uint8),  # odd-sized noise
        np.full((512, 512, 3), 200, np.uint8) + rng.integers(0, 2, (512, 512, 3), dtype=np.uint8),  # near-blank
        np.repeat(rng.integers(0, 256, (512, 512, 1), dtype=np.uint8), 3, axis=2),  # grey noise as RGB
    ]
    for r in analyzer.analyze(images):
        assert not r.ok and r.reason == "no_face" and r.num_faces == 0


def test_align_failure_is_a_rejection(tiny_dir, monkeypatch):
    from synthface.faces import analyzer as analyzer_module

    analyzer = FaceAnalyzer.from_config(tiny_dir, FaceAnalysisConfig())
    monkeypatch.setattr(analyzer_module, "estimate_transform", lambda *a, **k: None)
    r = analyzer.analyze([np.random.default_rng(4).integers(0, 256, (256, 256, 3), dtype=np.uint8)])[0]
    assert not r.ok and r.reason == "align_failed" and r.landmarks is not None


def test_estimate_transform_refuses_degenerate_landmarks():
    from synthface.faces.align import ARCFACE_TEMPLATE, estimate_transform

    assert estimate_transform(np.full((5, 2), 10.0)) is None
    assert estimate_transform(np.full((5, 2), np.nan)) is None
    assert estimate_transform(np.zeros((4, 2))) is None
    assert estimate_transform(ARCFACE_TEMPLATE * 3 + 7) is not None


def test_image_files_of_any_mode_are_read_as_rgb(tmp_path):
    from PIL import Image

    for mode in ("L", "RGBA", "P", "RGB", "I;16"):
        path = tmp_path / f"img_{mode.replace(';', '')}.png"
        Image.new(mode, (40, 30)).save(path)
        img = read_rgb(path)
        assert img.shape == (30, 40, 3) and img.dtype == np.uint8 and image_problem(img) is None


def test_missing_model_names_the_file_and_how_to_get_it(tmp_path):
    with pytest.raises(MissingModelError) as err:
        FaceAnalyzer.from_config(tmp_path, FaceAnalysisConfig())
    message = str(err.value)
    assert "faces.detector" in message and str(tmp_path / "scrfd_10g_bnkps.onnx") in message
    assert "synthface models download" in message


def test_corrupt_model_is_a_clear_error(tiny_dir, tmp_path):
    (tmp_path / "scrfd_10g_bnkps.onnx").write_bytes(b"\x08\x07garbage" * 100)
    (tmp_path / "arcface.onnx").write_bytes((tiny_dir / "arcface.onnx").read_bytes())
    with pytest.raises(MissingModelError, match="scrfd_10g_bnkps.onnx is not a usable ONNX model"):
        FaceAnalyzer.from_config(tmp_path, FaceAnalysisConfig())
    # a truncated download
    data = (tiny_dir / "arcface.onnx").read_bytes()
    (tmp_path / "scrfd_10g_bnkps.onnx").write_bytes((tiny_dir / "scrfd_10g_bnkps.onnx").read_bytes())
    (tmp_path / "arcface.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(MissingModelError, match="arcface.onnx is not a usable ONNX model"):
        FaceAnalyzer.from_config(tmp_path, FaceAnalysisConfig())


def test_swapped_models_are_a_clear_error(tiny_dir):
    cfg = FaceAnalysisConfig(detector="arcface.onnx", recognizer="scrfd_10g_bnkps.onnx")
    with pytest.raises(MissingModelError, match="does not look like an SCRFD detector"):
        FaceAnalyzer.from_config(tiny_dir, cfg)


def test_cli_missing_model_is_one_line_exit_2(cli, tmp_path):
    (tmp_path / "imgs").mkdir()
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "imgs" / "a.png")
    proc = cli("embed-gallery", tmp_path / "imgs", "--models", tmp_path / "nomodels", "--out", tmp_path / "g.npy")
    assert proc.returncode == 2
    assert "model file not found" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3  # one message (rich may wrap it)


def test_invalid_face_config_names_the_key():
    from synthface.errors import ConfigError
    from pipelines.config import load_factory_config

    with pytest.raises(ConfigError, match="faces.det_size"):
        load_factory_config(None, ["faces.det_size=250"])  # not a multiple of 32
    with pytest.raises(ConfigError, match="faces.recognizer_input"):
        load_factory_config(None, ["faces.recognizer_input=bgr"])


def test_embed_gallery_unwritable_out_fails_before_any_work(tmp_path, cli):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    proc = cli("embed-gallery", tmp_path, "--out", a_file / "gallery.npy")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "cannot create its folder" in proc.stderr
