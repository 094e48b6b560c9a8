"""`synthface ids from-images DIR`: identities from a folder per identity."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthface.errors import InputDataError
from synthface.faces.analyzer import FaceAnalyzer
from synthface.faces.config import FaceAnalysisConfig
from synthface.identity.bank import read_bank
from synthface.identity.config import IdentityConfig, ScreenConfig
from synthface.identity.from_images import bank_from_images, read_reference_images, screen_by_dropping


def people_folders(assets: Path, root: Path) -> dict[str, int]:
    """The shared photos as one folder per person (symlinks); returns image name -> person."""
    labels = {}
    with open(assets / "faces" / "identities.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            name, person = Path(row["image"]).name, int(row["identity"])
            folder = root / f"person{person:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).symlink_to(assets / "faces" / row["image"])
            labels[name] = person
    return labels


def synthetic_images(root: Path, people: int = 3, per_person: int = 3, size=(72, 80)) -> None:
    """Small smooth colour images, one folder per 'person' (the tiny detector finds a face in any image)."""
    rng = np.random.default_rng(0)
    for i in range(people):
        folder = root / f"p{i}"
        folder.mkdir(parents=True)
        base = rng.integers(0, 256, (6, 6, 3)).astype(np.float32)
        for k in range(per_person):
            img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).resize((size[1], size[0]), Image.BICUBIC).save(folder / f"{k}.png")


@pytest.fixture(scope="module")
def real_analyzer(assets):
    cfg = FaceAnalysisConfig(
        detector=str(assets / "models" / "scrfd_500m_kps.onnx"),
        recognizer=str(assets / "models" / "mobilefacenet_arcface_128d.onnx"),
        det_size=640, device="cpu", threads=1,
    )
    return FaceAnalyzer.from_config(None, cfg)


def test_real_photos_give_13_separated_identities(assets, real_analyzer, tmp_path):
    labels = people_folders(assets, tmp_path / "people")
    bank, report = bank_from_images(tmp_path / "people", real_analyzer, IdentityConfig(), seed=0)
    assert len(bank) == 13 and report.identities == 13 and report.images_embedded == 61
    assert not report.skipped and not report.dropped
    names = bank.column("name").tolist()
    assert names == [f"person{p:02d}" for p in range(13)]
    images = bank.table.column("images").to_pylist()
    per_image = bank.table.column("image_embeddings").to_pylist()
    assert sum(len(x) for x in images) == 61
    for i, (files, embs) in enumerate(zip(images, per_image)):
        e = np.asarray(embs, np.float32)
        assert e.shape == (len(files), 128)
        mean = e.mean(axis=0)
        assert np.allclose(bank.embeddings[i], mean / np.linalg.norm(mean), atol=1e-6)  # normalised mean
    # every photo is closest to its own person's vector
    for files, embs in zip(images, per_image):
        for f, e in zip(files, embs):
            sims = bank.embeddings @ np.asarray(e, np.float32)
            assert names[int(np.argmax(sims))] == f"person{labels[Path(f).name]:02d}", f
    assert np.nanmax(bank.column("nn_cosine")) < 0.4  # passed the default separation screen


def test_real_photos_screens_drop_and_report(assets, real_analyzer, tmp_path):
    people_folders(assets, tmp_path / "people")
    cfg = IdentityConfig(screen=ScreenConfig(max_pair_similarity=0.2))
    bank, report = bank_from_images(tmp_path / "people", real_analyzer, cfg, seed=0)
    dropped = {d.path: d for d in report.dropped}
    assert 0 < len(dropped) < 13 and len(bank) == 13 - len(dropped)
    assert all(d.reason == "separation" and "max_pair_similarity" in d.detail for d in dropped.values())
    assert np.nanmax(bank.column("nn_cosine")) <= 0.2
    assert not set(dropped) & set(bank.column("name").tolist())
    assert report.screen["rejected_separation"] == len(dropped)


def test_real_photo_without_a_face_is_a_reported_skip(assets, real_analyzer, tmp_path):
    people_folders(assets, tmp_path / "people")
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "people" / "person00" / "zz_noise.png")
    bank, report = bank_from_images(tmp_path / "people", real_analyzer, IdentityConfig(), seed=0)
    assert [(s.path, s.reason) for s in report.skipped] == [("person00/zz_noise.png", "no_face")]
    assert len(bank) == 13 and "person00/zz_noise.png" not in bank.table.column("images")[0].as_py()


def test_screen_by_dropping_separation_and_novelty():
    v = np.eye(4, 8, dtype=np.float32)
    v[1] = v[0] * 0.9 + np.eye(8, dtype=np.float32)[5] * 0.1  # 1 is close to 0
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    keep, nn_cos, nn_idx, gal, counts = screen_by_dropping(v, ScreenConfig(max_pair_similarity=0.5), None)
    assert keep.tolist() == [True, False, True, True] and counts["why"][1][0] == "separation"
    gallery = np.eye(8, dtype=np.float32)[[3]]
    keep, _, _, gal, counts = screen_by_dropping(v, ScreenConfig(max_pair_similarity=0.5, max_gallery_similarity=0.4), gallery)
    assert keep.tolist() == [True, False, True, False] and counts["why"][3][0] == "novelty"
    assert counts["rejected_novelty"] == 1 and counts["rejected_separation"] == 1


@pytest.fixture(scope="module")
def tiny_analyzer(tiny_models):
    return FaceAnalyzer.from_config(tiny_models, FaceAnalysisConfig(det_size=64, device="cpu", threads=1))


def test_bad_input_is_reported_and_named(tiny_analyzer, tmp_path):
    root = tmp_path / "ids"
    synthetic_images(root, people=3)
    (root / "p0" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "p0" / "notes.txt").write_text("hello")
    (root / "p0" / "more").mkdir()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(root / "p1" / "flat.png")  # one colour: no face
    (root / "loose.png").write_bytes((root / "p0" / "0.png").read_bytes())
    (root / "solo").mkdir()
    (root / "solo" / "0.png").write_bytes((root / "p2" / "0.png").read_bytes())
    cfg = IdentityConfig(screen=ScreenConfig(max_pair_similarity=None))
    bank, report = bank_from_images(root, tiny_analyzer, cfg, seed=0)
    skipped = {s.path: s.reason for s in report.skipped}
    assert skipped == {
        "loose.png": "not_in_identity_folder",
        "p0/more": "nested_folder",
        "p0/notes.txt": "not_an_image",
        "p0/broken.jpg": "unreadable",
        "p1/flat.png": "bad_image",
    }
    assert [(d.path, d.reason) for d in report.dropped] == [("solo", "too_few_images")]
    assert bank.column("name").tolist() == ["p0", "p1", "p2"]
    assert bank.table.column("images").to_pylist()[0] == ["p0/0.png", "p0/1.png", "p0/2.png"]
    assert bank.metadata["images_root"] == str(root.resolve())
    assert {s["path"] for s in bank.metadata["skipped"]} == set(skipped)
    # the images moved: reference mode says where to point it, and images_root does
    from synthface.identity.bank import write_bank

    path = write_bank(bank, tmp_path / "bank.parquet")
    root.rename(tmp_path / "moved")
    with pytest.raises(InputDataError, match="generation.reference.images_root"):
        read_reference_images(path)
    refs = read_reference_images(path, tmp_path / "moved")
    assert refs.path(2, 1) == tmp_path / "moved" / "p2" / "1.png" and refs.path(2, 1).is_file()


def test_nothing_usable_is_one_error(tiny_analyzer, tmp_path):
    root = tmp_path / "ids"
    synthetic_images(root, people=2, per_person=1)
    with pytest.raises(InputDataError, match="no identity has 2 or more usable images.*nothing written"):
        bank_from_images(root, tiny_analyzer, IdentityConfig(), seed=0)
    with pytest.raises(InputDataError, match="no identity folders"):
        bank_from_images(tmp_path / "ids" / "p0", tiny_analyzer, IdentityConfig(), seed=0)
    with pytest.raises(InputDataError, match="not found"):
        bank_from_images(tmp_path / "nope", tiny_analyzer, IdentityConfig(), seed=0)


def test_cli_from_images_stats_and_128d_bank(cli, tiny_models, tmp_path):
    root = tmp_path / "ids"
    synthetic_images(root, people=3)
    (root / "p2" / "notes.txt").write_text("x")
    out = tmp_path / "bank.parquet"
    args = ["--set", f"models_dir={tiny_models}", "--set", "identity.from_images.det_size=64",
            "--set", "identity.screen.max_pair_similarity=null", "--set", "faces.device=cpu"]
    proc = cli("ids", "from-images", root, "--out", out, *args)
    assert proc.returncode == 0, proc.stderr
    assert "3 identities from 3 folders" in proc.stdout and "skipped p2/notes.txt: not_an_image" in proc.stdout
    bank = read_bank(out)
    assert len(bank) == 3 and bank.column("sampler").tolist() == ["images"] * 3
    refs = read_reference_images(out)
    assert refs.path(1, 0) == root.resolve() / "p1" / "0.png" and refs.embeddings[1].shape == (3, 512)
    stats = cli("ids", "stats", out)
    assert stats.returncode == 0 and "3 identities (images" in stats.stdout
    # nothing written on failure: every folder below min_images
    bad = cli("ids", "from-images", root, "--out", tmp_path / "none.parquet", *args, "--set", "identity.from_images.min_images=9")
    assert bad.returncode == 2 and "nothing written" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "none.parquet").exists() and not list(tmp_path.glob("none.parquet*"))


def test_a_128d_bank_is_readable_for_stats_but_refused_for_generation(tmp_path):
    from synthface.identity.bank import IdentityBank, _make_table, write_bank

    v = np.random.default_rng(0).normal(size=(4, 128)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    table = _make_table(embeddings=v, sampler="images", settings={}, nn_cosine=np.zeros(4), nn_id=np.zeros(4),
                        gallery_cosine=None, anchors=None, resampled=np.zeros(4, bool))
    path = write_bank(IdentityBank(np.arange(4), v, table), tmp_path / "b128.parquet")
    assert read_bank(path, dim=None).embeddings.shape == (4, 128)
    with pytest.raises(InputDataError, match="holds 128-d embeddings, but 512-d are needed.*faces.recognizer"):
        read_bank(path)
