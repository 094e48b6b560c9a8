"""The tiny random face models load and run through the production loaders."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from synthface.faces import FaceAnalysisConfig, FaceAnalyzer
from synthface.faces.detector import SCRFDDetector
from synthface.faces.recognizer import ArcFaceRecognizer
from synthface.faces.tiny import DETECTOR_FILE, RECOGNIZER_FILE, build_tiny_detector, build_tiny_recognizer, write_tiny_face_models


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_faces")
    paths = write_tiny_face_models(folder)
    assert paths == {"detector": folder / DETECTOR_FILE, "recognizer": folder / RECOGNIZER_FILE}
    return folder


def test_tiny_models_have_the_production_signatures(tiny_dir):
    det = onnx.load(str(tiny_dir / "scrfd_10g_bnkps.onnx"))
    assert len(det.graph.output) == 9
    assert [o.type.tensor_type.shape.dim[-1].dim_value for o in det.graph.output] == [1, 1, 1, 4, 4, 4, 10, 10, 10]
    rec = onnx.load(str(tiny_dir / "arcface.onnx"))
    dims = rec.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, 112, 112]
    assert rec.graph.output[0].type.tensor_type.shape.dim[-1].dim_value == 512


def test_tiny_models_run_through_the_analyzer(tiny_dir):
    analyzer = FaceAnalyzer.from_config(tiny_dir, FaceAnalysisConfig())
    assert analyzer.embedding_dim == 512
    assert analyzer.detector.fixed_batch is None and analyzer.detector.batch_size > 1  # batchable export
    assert analyzer.recognizer.normalisation == "pm1"  # like arcface.onnx: normalised outside the graph
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(5)]
    results = analyzer.analyze(images)
    for r in results:
        assert r.ok and r.num_faces == 1 and r.det_score > 0.9
        # one plausible face: centred, about 2/3 of the image wide, eyes above the mouth
        cx, cy = (r.bbox[0] + r.bbox[2]) / 2, (r.bbox[1] + r.bbox[3]) / 2
        assert abs(cx - 256) < 30 and abs(cy - 256) < 40 and 250 < r.bbox[2] - r.bbox[0] < 420
        assert r.landmarks[0, 0] < r.landmarks[1, 0] and r.landmarks[:2, 1].max() < r.landmarks[3:, 1].min()
        assert abs(np.linalg.norm(r.embedding) - 1) < 1e-5
    embeddings = np.stack([r.embedding for r in results])
    assert np.abs(embeddings @ embeddings.T - np.eye(5)).max() < 0.9  # the embedding depends on the image


def test_results_do_not_depend_on_batch_composition(tiny_dir):
    analyzer = FaceAnalyzer.from_config(tiny_dir, FaceAnalysisConfig())
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(3)]
    together = analyzer.analyze(images)
    alone = analyzer.analyze([images[2]])[0]
    np.testing.assert_allclose(alone.embedding, together[2].embedding, atol=1e-5)
    np.testing.assert_allclose(alone.landmarks, together[2].landmarks, atol=1e-3)


def test_tiny_models_are_deterministic(tmp_path):
    write_tiny_face_models(tmp_path / "a")
    write_tiny_face_models(tmp_path / "b")
    for name in ("scrfd_10g_bnkps.onnx", "arcface.onnx"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_batch_1_export_gives_the_same_detections(tmp_path):
    onnx.save(build_tiny_detector(fixed_batch_1=True), str(tmp_path / "b1.onnx"))
    onnx.save(build_tiny_detector(), str(tmp_path / "bn.onnx"))
    cfg = FaceAnalysisConfig()
    one, many = SCRFDDetector.load(tmp_path / "b1.onnx", cfg), SCRFDDetector.load(tmp_path / "bn.onnx", cfg)
    assert one.fixed_batch == 1 and one.batch_size == 1
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (300 + 40 * i, 400, 3), dtype=np.uint8) for i in range(3)]
    for a, b in zip(one.detect(images), many.detect(images)):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("inside", [False, True])
def test_recognizer_reads_layout_and_normalisation_from_the_model(tmp_path, layout, inside):
    onnx.save(build_tiny_recognizer(), str(tmp_path / "ref.onnx"))
    onnx.save(build_tiny_recognizer(layout=layout, normalise_inside=inside), str(tmp_path / "var.onnx"))
    cfg = FaceAnalysisConfig()
    ref, var = ArcFaceRecognizer.load(tmp_path / "ref.onnx", cfg), ArcFaceRecognizer.load(tmp_path / "var.onnx", cfg)
    assert var.layout == layout and var.normalisation == ("raw" if inside else "pm1")
    crops = np.random.default_rng(3).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    np.testing.assert_allclose(var.embed(crops), ref.embed(crops), atol=1e-5)
    # forcing the wrong convention changes the result: the setting is not decorative
    wrong = ArcFaceRecognizer.load(tmp_path / "var.onnx", cfg.model_copy(update={"recognizer_input": "pm1" if inside else "raw"}))
    assert np.abs(wrong.embed(crops) - ref.embed(crops)).max() > 1e-3


def test_flip_average_is_symmetric(tiny_dir):
    rec = ArcFaceRecognizer.load(tiny_dir / "arcface.onnx", FaceAnalysisConfig())
    crops = np.random.default_rng(4).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    a = rec.embed(crops, flip_average=True)
    b = rec.embed(crops[:, :, ::-1], flip_average=True)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.abs(a - rec.embed(crops)).max() > 1e-3


def test_outputs_ordered_per_stride_are_regrouped(tmp_path):
    model = build_tiny_detector()
    outputs = list(model.graph.output)
    per_stride = [outputs[level + 3 * kind] for level in range(3) for kind in range(3)]  # s8: score, box, kps; s16: ...
    del model.graph.output[:]
    model.graph.output.extend(per_stride)
    onnx.save(model, str(tmp_path / "per_stride.onnx"))
    onnx.save(build_tiny_detector(), str(tmp_path / "grouped.onnx"))
    cfg = FaceAnalysisConfig()
    a, b = SCRFDDetector.load(tmp_path / "per_stride.onnx", cfg), SCRFDDetector.load(tmp_path / "grouped.onnx", cfg)
    assert a.output_names == b.output_names
    image = np.random.default_rng(5).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    np.testing.assert_allclose(a.detect([image])[0].landmarks, b.detect([image])[0].landmarks)


def test_fixed_input_size_is_used(tmp_path):
    model = build_tiny_detector()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].ClearField("dim_param")
    dims[2].dim_value = 128
    dims[3].ClearField("dim_param")
    dims[3].dim_value = 128
    onnx.save(model, str(tmp_path / "fixed.onnx"))
    det = SCRFDDetector.load(tmp_path / "fixed.onnx", FaceAnalysisConfig(det_size=256))
    assert det.input_hw == (128, 128)
    found = det.detect([np.random.default_rng(6).integers(0, 256, (512, 512, 3), dtype=np.uint8)])[0]
    assert len(found) == 1 and abs((found.boxes[0, 0] + found.boxes[0, 2]) / 2 - 256) < 40
