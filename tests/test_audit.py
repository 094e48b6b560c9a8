"""The leakage audit: generated identities close to real faces are found (and only those),
reported per source with pictures and in the card, and `--drop` removes them through the
finalising step. On the shared real assets: identities planted from the shared photos are
found among the faces of deepface_pairs.bin, embedded with the run's recognizer; random
identities are not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dataset_stub import build_dataset
from pipelines.audit import audit
from synthface.errors import InputDataError
from synthface.shards.verify import verify_dataset


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_gallery_matches_are_found_reported_and_dropped(tmp_path):
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(12, 64)))
    gallery = unit(np.concatenate([centres[[2, 9]] + rng.normal(0, 0.05, (2, 64)), rng.normal(size=(30, 64))]))
    np.save(tmp_path / "real.npy", gallery)
    out = tmp_path / "ds"
    build_dataset(out, centres, ids_per_shard=4, inter_class="off")

    report = audit(str(out), gallery=str(tmp_path / "real.npy"), threshold=0.6)
    assert sorted(m["id"] for m in report.matches) == [2, 9]
    assert {m["face"] for m in report.matches} == {0, 1}
    assert report.sources["gallery:real.npy"] == {
        "faces": 32, "identities_matched": 2, "faces_matched": 2,
        "max_similarity": pytest.approx(max(m["similarity"] for m in report.matches))}
    saved = json.loads((out / "audit.json").read_text())
    assert saved["matches"] == report.matches and saved["dropped"] == []
    assert "Leakage audit" in (out / "README.md").read_text()
    assert (out / "card" / "audit.png").is_file()
    assert verify_dataset(str(out)).ok  # reporting alone changes no shard

    dropped = audit(str(out), gallery=str(tmp_path / "real.npy"), threshold=0.6, drop=True)
    assert dropped.dropped == [2, 9]
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["finalise"]["dropped_by_reason"] == {"benchmark_leak": 2}
    assert dataset["finalise"]["dropped"]["9"]["source"] == "gallery:real.npy"
    report = verify_dataset(str(out))
    assert report.ok, report.problems
    assert report.classes == 10
    # audited again: nothing left to find
    assert audit(str(out), gallery=str(tmp_path / "real.npy"), threshold=0.6).matches == []


def test_bad_input_is_one_clear_error(tmp_path):
    out = tmp_path / "ds"
    build_dataset(out, unit(np.eye(6, 8)), ids_per_shard=3, inter_class="off")
    with pytest.raises(InputDataError, match="give --bins DIR and/or --gallery FILE"):
        audit(str(out))
    np.save(tmp_path / "g.npy", np.ones((3, 16), np.float32))
    with pytest.raises(InputDataError, match="dimension 16, expected 8"):
        audit(str(out), gallery=str(tmp_path / "g.npy"))
    (tmp_path / "bins").mkdir()
    with pytest.raises(InputDataError, match="no .bin files"):
        audit(str(out), bins_dir=str(tmp_path / "bins"), models_dir=str(tmp_path))


@pytest.fixture(scope="module")
def person_centres(assets):
    """Each shared photo person's centre: the mean MobileFaceNet embedding of their photos."""
    import csv

    from test_faces_assets import analyze_asset_photos

    _, _, _, results = analyze_asset_photos(assets)
    people: dict[int, list[np.ndarray]] = {}
    with open(assets / "faces" / "identities.csv") as f:
        for row in csv.DictReader(f):
            res = results[Path(row["image"]).name]
            if res.ok:
                people.setdefault(int(row["identity"]), []).append(res.embedding)
    return {p: unit(np.mean(v, axis=0, keepdims=True))[0] for p, v in people.items()}


def test_real_identities_planted_in_a_dataset_are_found_random_ones_are_not(assets, person_centres, tmp_path, cli):
    rng = np.random.default_rng(1)
    centres = unit(rng.normal(size=(24, 128)))
    planted = {5: 0, 13: 4, 22: 9}  # dataset identity -> shared photo person
    for cid, person in planted.items():
        centres[cid] = person_centres[person]
    out = tmp_path / "ds"
    recognizer = str(assets / "models" / "mobilefacenet_arcface_128d.onnx")
    build_dataset(out, centres, ids_per_shard=6, inter_class="off", faces={"recognizer": recognizer, "threads": 1})

    # the command a user runs (threshold: the run's tau_target, 0.4): report, then drop
    proc = cli("audit", out, "--bins", assets / "verification", "--drop")
    assert proc.returncode == 0, proc.stderr
    assert "deepface_pairs: 3 identities within cos 0.4" in proc.stdout and "dropped 3 identities" in proc.stdout
    saved = json.loads((out / "audit.json").read_text())
    deepface = saved["sources"]["deepface_pairs"]
    assert deepface["faces"] == 560 and deepface["identities_matched"] == 3
    # exactly the planted identities, each well above the threshold; no random one
    assert sorted({m["id"] for m in saved["matches"]}) == sorted(planted) == saved["dropped"]
    assert all(m["similarity"] > 0.6 for m in saved["matches"])
    # small_lfw holds other people: none of ours is there
    assert saved["sources"]["small_lfw"]["identities_matched"] == 0
    report = verify_dataset(str(out))
    assert report.ok, report.problems
    assert report.classes == 24 - 3
    card = (out / "README.md").read_text()
    assert "`benchmark_leak`: 3" in card and "card/audit.png" in card
