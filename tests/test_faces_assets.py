"""Face analysis on the real shared assets: SCRFD-500M + the 128-d MobileFaceNet on 61 photos."""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np
import pytest

from synthface.faces import FaceAnalysisConfig, FaceAnalyzer
from synthface.faces.align import ARCFACE_TEMPLATE, estimate_transform, transform_points
from synthface.faces.detector import SCRFDDetector
from synthface.faces.images import list_images, read_rgb
from synthface.filtering import FilterConfig
from synthface.filtering.evaluate import pair_stats


def asset_config(assets: Path, **kw) -> FaceAnalysisConfig:
    return FaceAnalysisConfig(
        detector=str(assets / "models" / "scrfd_500m_kps.onnx"),
        recognizer=str(assets / "models" / "mobilefacenet_arcface_128d.onnx"),
        **kw,
    )


@functools.lru_cache(maxsize=2)
def analyze_asset_photos(assets: Path):
    """(analyzer, names, images, {name: FaceResult}) for the 61 photos at 640 px, computed once per
    test session (test_filter_assets.py reuses it)."""
    paths = list_images(assets / "faces" / "images")
    images = [read_rgb(p) for p in paths]
    analyzer = FaceAnalyzer.from_config(None, asset_config(assets, det_size=640))
    names = [p.name for p in paths]
    return analyzer, names, images, dict(zip(names, analyzer.analyze(images)))


@pytest.fixture(scope="module")
def photos(assets):
    _, names, images, _ = analyze_asset_photos(assets)
    return names, images


@pytest.fixture(scope="module")
def analyzed(assets):
    analyzer, _, _, results = analyze_asset_photos(assets)
    return analyzer, results


def test_models_are_read_from_their_files(analyzed):
    analyzer, _ = analyzed
    assert analyzer.detector.fixed_batch == 1 and analyzer.detector.batch_size == 1  # det_500m is batch-1
    assert analyzer.recognizer.layout == "NCHW"
    assert analyzer.recognizer.normalisation == "raw"  # MobileFaceNet normalises inside its graph
    assert analyzer.embedding_dim == 128


def test_a_face_is_found_in_each_of_the_61_photos(analyzed):
    _, results = analyzed
    assert len(results) == 61
    failed = {n: r.reason for n, r in results.items() if not r.ok}
    assert not failed
    for r in results.values():
        assert r.det_score >= FilterConfig().det_score_min
        assert r.aligned.shape == (112, 112, 3) and r.aligned.dtype == np.uint8
        assert r.embedding.shape == (128,) and r.embedding.dtype == np.float32
        assert abs(np.linalg.norm(r.embedding) - 1) < 1e-4
        x1, y1, x2, y2 = r.bbox
        # the landmarks of the chosen face lie inside its box
        assert ((r.landmarks[:, 0] > x1) & (r.landmarks[:, 0] < x2) & (r.landmarks[:, 1] > y1) & (r.landmarks[:, 1] < y2)).all()


def test_aligned_crops_land_on_the_template(assets, analyzed):
    _, results = analyzed
    # the detected landmarks, carried by the alignment transform, sit on the template ...
    moved = []
    for r in results.values():
        matrix = estimate_transform(r.landmarks)
        moved.append(np.linalg.norm(transform_points(r.landmarks, matrix) - ARCFACE_TEMPLATE, axis=1).mean())
    assert np.mean(moved) < 4.0 and max(moved) < 8.0, moved
    # ... and detecting again on the 112-px crops finds the landmarks there
    redetector = SCRFDDetector.load(assets / "models" / "scrfd_500m_kps.onnx", asset_config(assets, det_size=128))
    again = redetector.detect([r.aligned for r in results.values()])
    assert all(len(d) >= 1 for d in again)
    errors = np.array([np.linalg.norm(d.landmarks[0] - ARCFACE_TEMPLATE, axis=1).mean() for d in again])
    assert errors.mean() < 4.0 and errors.max() < 8.0, errors  # pixels on a 112-px crop (eyes ~35 px apart)
    # a crop shifted by 10 px would fail the same check: the check can tell
    assert np.linalg.norm(again[0].landmarks[0] + [10, 0] - ARCFACE_TEMPLATE, axis=1).mean() > 8.0


def test_pair_accuracy_on_pairs_csv(assets, analyzed):
    _, results = analyzed
    with open(assets / "faces" / "pairs.csv", newline="") as fh:
        pairs = [(Path(r["image_a"]).name, Path(r["image_b"]).name, r["same"] == "1") for r in csv.DictReader(fh)]
    sims = np.array([results[a].embedding @ results[b].embedding for a, b, _ in pairs])
    same = np.array([s for *_, s in pairs])
    stats = pair_stats(sims, same, threshold=FilterConfig().tau_target)
    print("pairs.csv:", stats)
    assert stats["pairs"] == 280
    assert stats["auc"] > 0.995
    assert stats["accuracy_at_threshold"] >= 0.98
    assert stats["same_min"] > FilterConfig().tau_target  # no same-person pair below the target threshold


def test_batch_does_not_change_results(assets, photos, analyzed):
    names, images = photos
    _, results = analyzed
    analyzer = FaceAnalyzer.from_config(None, asset_config(assets, det_size=640, batch_size=1))
    alone = analyzer.analyze([images[3]])[0]
    np.testing.assert_allclose(alone.embedding, results[names[3]].embedding, atol=1e-5)


def test_flip_average_is_still_unit_norm_and_close(assets, photos, analyzed):
    names, images = photos
    _, results = analyzed
    flipped = FaceAnalyzer.from_config(None, asset_config(assets, det_size=640, flip_average=True)).analyze(images[:4])
    for name, r in zip(names[:4], flipped):
        assert abs(np.linalg.norm(r.embedding) - 1) < 1e-4
        assert 0.8 < float(r.embedding @ results[name].embedding) < 0.99999


def test_embed_gallery_cli_on_the_assets(assets, photos, analyzed, cli, tmp_path):
    """End to end as a user runs it, on a folder of 6 asset photos plus two files that must fail."""
    from PIL import Image

    _, results = analyzed
    folder = tmp_path / "photos"
    folder.mkdir()
    names = photos[0][:6]
    for name in names:
        (folder / name).symlink_to(assets / "faces" / "images" / name)
    Image.new("RGB", (300, 300), (128, 128, 128)).save(folder / "zz_blank.png")
    (folder / "zz_broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "gallery.npy"
    proc = cli(
        "embed-gallery", folder, "--out", out,
        "--detector", assets / "models" / "scrfd_500m_kps.onnx",
        "--recognizer", assets / "models" / "mobilefacenet_arcface_128d.onnx",
    )
    assert proc.returncode == 0, proc.stderr
    assert "embedded 6/8" in proc.stdout
    assert "zz_blank.png: bad_image" in proc.stderr and "zz_broken.jpg: unreadable" in proc.stderr
    gallery = np.load(out)
    assert gallery.shape == (6, 128) and gallery.dtype == np.float32
    with open(out.with_suffix(".csv"), newline="") as fh:
        report = list(csv.DictReader(fh))
    assert [r["image"] for r in report] == names + ["zz_blank.png", "zz_broken.jpg"]
    assert [r["status"] for r in report] == ["ok"] * 6 + ["failed"] * 2
    # row i of the gallery is the image the report says, embedded as in-process
    for r in report[:6]:
        np.testing.assert_allclose(gallery[int(r["row"])], results[r["image"]].embedding, atol=1e-5)


def test_embed_gallery_cli_with_no_usable_image_fails_cleanly(assets, cli, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "black.png")
    out = tmp_path / "g.npy"
    proc = cli("embed-gallery", tmp_path, "--out", out, "--detector", assets / "models" / "scrfd_500m_kps.onnx",
               "--recognizer", assets / "models" / "mobilefacenet_arcface_128d.onnx")
    assert proc.returncode == 2
    assert "no face could be embedded" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_face_pairs_cli_reports_the_measurements(assets, cli, tmp_path):
    import json

    ids = {}
    with open(assets / "faces" / "identities.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            ids.setdefault(int(r["identity"]), []).append(r["image"])
    a, b = ids[0][:3], ids[1][:3]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image_a,image_b,same\n" + "".join(
        f"{x},{y},{int(same)}\n" for x, y, same in [(a[0], a[1], 1), (a[1], a[2], 1), (b[0], b[1], 1), (a[0], b[0], 0), (a[2], b[2], 0)]
    ))
    proc = cli("face-pairs", assets / "faces" / "images", "--pairs", pairs, "--as-generated",
               "--detector", assets / "models" / "scrfd_500m_kps.onnx",
               "--recognizer", assets / "models" / "mobilefacenet_arcface_128d.onnx")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["faces_found"] == 6 and out["models"]["detector_input"] == [256, 256]
    assert out["pairs"]["pairs"] == 5 and out["pairs"]["auc"] == 1.0


def test_bench_faces_runs(assets, cli):
    proc = cli("bench", "faces", "--limit", "2", "--repeat", "1", "--det-sizes", "256",
               "--images", assets / "faces" / "images",
               "--detector", assets / "models" / "scrfd_500m_kps.onnx",
               "--recognizer", assets / "models" / "mobilefacenet_arcface_128d.onnx")
    assert proc.returncode == 0, proc.stderr
    assert "cpu 256px" in proc.stdout and "cpu 640px" in proc.stdout and "2/2" in proc.stdout
