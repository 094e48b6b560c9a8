"""Model-folder integrity: sha256 + size recorded at download / init-tiny, checked by
`models check [--verify]` and `generate`; known-good hashes checked on download."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import types
from pathlib import Path

import pytest

import test_pipeline_support as support
from synthface.errors import ModelIntegrityError
from synthface.models import integrity
from synthface.models.layout import ANTELOPEV2_REPO, DETECTOR_ONNX, MANIFEST, MODEL_FILES

UNET = "arc2face/diffusion_pytorch_model.safetensors"


@pytest.fixture
def folder(tiny_models, tmp_path) -> Path:
    """A private copy of the tiny folder (copy2 keeps mtimes: the copy is as recorded)."""
    return Path(shutil.copytree(tiny_models, tmp_path / "models", copy_function=shutil.copy2))


def tamper(path: Path, keep_mtime: bool = False) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def count_hashing(monkeypatch) -> list[str]:
    hashed: list[str] = []
    real = integrity.sha256_file

    def counting(path):
        hashed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(integrity, "sha256_file", counting)
    return hashed


# ------------------------------------------------------------- recorded at write time
def test_init_tiny_records_sha256_and_size_of_every_file(tiny_models):
    files = json.loads((tiny_models / MANIFEST).read_text())["files"]
    assert set(files) == set(integrity.present_layout_files(tiny_models))
    assert all(any(n in files for n in (f.path, *f.alternatives)) for f in MODEL_FILES if f.required)
    for rel, entry in files.items():
        data = (tiny_models / rel).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["size"] == len(data)
        assert entry["source"] == "tiny-random" and entry["pinned"] is False  # random weights are never pinned
    assert integrity.check_files(tiny_models, full=True).keys() == files.keys()


# ------------------------------------------------------------- the three defects, each named
def test_tampered_file_is_named_by_the_cheap_check_when_its_mtime_changed(folder):
    tamper(folder / UNET)
    with pytest.raises(ModelIntegrityError, match=rf"{UNET} differs from the file recorded.*sha256"):
        integrity.check_files(folder)


def test_tampered_file_with_its_mtime_restored_is_caught_by_verify(folder):
    tamper(folder / UNET, keep_mtime=True)
    integrity.check_files(folder)  # size + mtime unchanged: the cheap check cannot see it (documented)
    with pytest.raises(ModelIntegrityError, match=rf"{UNET} differs from the file recorded"):
        integrity.check_files(folder, full=True)


def test_truncated_file_is_named_with_both_sizes(folder):
    path = folder / DETECTOR_ONNX
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(ModelIntegrityError, match=rf"{DETECTOR_ONNX} is {size // 2} bytes but {size} were recorded"):
        integrity.check_files(folder)


def test_file_without_a_manifest_entry_is_named(folder):
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["files"]["vae/config.json"]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match=r"vae/config.json has no entry in .*synthface-models.json.*models record"):
        integrity.check_files(folder)


def test_recorded_file_that_is_gone_is_named(folder):
    (folder / "tokenizer" / "merges.txt").unlink()
    with pytest.raises(ModelIntegrityError, match=r"tokenizer/merges.txt is recorded .* but missing"):
        integrity.check_files(folder)


def test_manifest_without_hashes_asks_for_models_record(folder):
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["files"]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match=r"records no file hashes.*synthface models record"):
        integrity.check_files(folder)
    integrity.record_folder(folder)  # the fix it names
    assert integrity.check_files(folder, full=True)


# ------------------------------------------------------------- hash once, cache by size + mtime
def test_a_copied_folder_is_hashed_once_then_served_from_the_cache(tiny_models, tmp_path, monkeypatch):
    copy = Path(shutil.copytree(tiny_models, tmp_path / "copy", copy_function=shutil.copyfile))  # new mtimes
    hashed = count_hashing(monkeypatch)
    first = integrity.check_files(copy)
    assert sorted(hashed) == sorted(Path(p).name for p in first)  # every file once
    hashed.clear()
    assert integrity.check_files(copy) == first and hashed == []  # cached by size + mtime
    integrity.check_files(copy, full=True)
    assert len(hashed) == len(first)  # --verify ignores the cache


def test_unchanged_folder_is_not_hashed_by_the_cheap_check(folder, monkeypatch):
    hashed = count_hashing(monkeypatch)
    integrity.check_files(folder)
    assert hashed == []


# ------------------------------------------------------------- download: pins and the hub's record
def fake_hub(monkeypatch, served: dict[str, bytes], lfs: dict[str, str] | None = None):
    """Replace the hub: ``served`` maps a repo path to the bytes the fake returns."""
    import huggingface_hub

    from synthface.models import hub as dl

    def fake_download(repo_id, filename, *, revision=None, local_dir=None, etag_timeout=None):
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(served.get(filename, f"{repo_id}:{filename}".encode()))
        return str(target)

    def fake_info(self, repo_id, revision=None, timeout=None, files_metadata=False):
        siblings = [
            types.SimpleNamespace(rfilename=name, lfs=types.SimpleNamespace(sha256=sha)) for name, sha in (lfs or {}).items()
        ]
        return types.SimpleNamespace(sha=f"sha-of-{repo_id.split('/')[0]}", siblings=siblings)

    monkeypatch.setattr(dl, "check_connectivity", lambda root: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", fake_info)
    return dl


def test_download_records_every_file_and_checks_the_pinned_detector(tmp_path, monkeypatch):
    detector = b"the one true detector"
    monkeypatch.setitem(
        integrity.KNOWN_SHA256, DETECTOR_ONNX, integrity.KnownFile(hashlib.sha256(detector).hexdigest(), len(detector), "test")
    )
    dl = fake_hub(monkeypatch, {DETECTOR_ONNX: detector})
    seen = {}
    root = dl.download(tmp_path / "m", checked=lambda f, entry: seen.setdefault(f.path, entry))
    files = json.loads((root / MANIFEST).read_text())["files"]
    assert set(files) == {f.path for f in MODEL_FILES if f.required} == set(seen)
    assert files[DETECTOR_ONNX]["pinned"] is True and files[DETECTOR_ONNX]["size"] == len(detector)
    assert not any(e["pinned"] for rel, e in files.items() if rel != DETECTOR_ONNX)  # said plainly: unpinned
    assert files[DETECTOR_ONNX]["source"] == f"{ANTELOPEV2_REPO}@sha-of-{ANTELOPEV2_REPO.split('/')[0]}:{DETECTOR_ONNX}"
    assert integrity.check_files(root, full=True).keys() == files.keys()


def test_download_deletes_and_names_a_detector_that_is_not_the_known_good_file(tmp_path, monkeypatch):
    dl = fake_hub(monkeypatch, {DETECTOR_ONNX: b"a replaced mirror file"})
    with pytest.raises(ModelIntegrityError, match=rf"{DETECTOR_ONNX} is not the known-good file.*5838f7fe.*deleted it"):
        dl.download(tmp_path / "m")
    assert not (tmp_path / "m" / DETECTOR_ONNX).exists()
    assert not (tmp_path / "m" / MANIFEST).exists()  # nothing recorded for a refused download


def test_download_refuses_a_file_that_differs_from_the_hubs_lfs_record(tmp_path, monkeypatch):
    dl = fake_hub(monkeypatch, {}, lfs={UNET: "0" * 64})
    with pytest.raises(ModelIntegrityError, match=rf"{UNET}: sha256 .* differs from the hub's LFS record"):
        dl.download(tmp_path / "m")
    assert not (tmp_path / "m" / UNET).exists()


def test_shipped_known_good_values_are_well_formed():
    for rel, known in integrity.KNOWN_SHA256.items():
        assert any(rel == f.path for f in MODEL_FILES)
        assert len(known.sha256) == 64 and int(known.sha256, 16) >= 0 and known.size > 0 and known.source


# ------------------------------------------------------------- generate refuses, dataset.json records
def test_generate_refuses_a_tampered_folder_before_writing_anything(folder, tmp_path):
    from pipelines.generate import generate
    from pipelines.config import FactoryConfig

    bank = support.random_bank(tmp_path / "bank.parquet", 4)
    tamper(folder / "encoder" / "config.json")
    cfg = FactoryConfig.model_validate(support.tiny_config(folder, bank))
    with pytest.raises(ModelIntegrityError, match=r"encoder/config.json differs"):
        generate(cfg, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_dataset_manifest_takes_the_checked_hashes_without_hashing_again(folder, monkeypatch):
    from synthface.models.integrity import describe_models

    checked = integrity.check_files(folder)
    hashed = count_hashing(monkeypatch)
    info = describe_models(str(folder), checked, "size+mtime")
    assert hashed == [] and info["verified"] == "size+mtime" and info["origin"] == "tiny-random"
    recorded = json.loads((folder / MANIFEST).read_text())["files"]
    assert info["files"] == {rel: e["sha256"] for rel, e in recorded.items()}


def test_folder_without_manifest_is_described_as_unverified(folder):
    from synthface.models.integrity import describe_models

    (folder / MANIFEST).unlink()
    assert integrity.verify_model_folder(folder) is None
    info = describe_models(str(folder))
    assert info["verified"] is False and info["files"][DETECTOR_ONNX] == integrity.sha256_file(folder / DETECTOR_ONNX)


# ------------------------------------------------------------- CLI
def test_cli_check_verify_names_the_tampered_file_and_exits_2(folder, cli):
    ok = cli("models", "check", folder, "--verify")
    assert ok.returncode == 0, ok.stderr
    assert "re-hashed, sha256 matches" in ok.stdout and "0 pinned" in ok.stdout
    tamper(folder / UNET, keep_mtime=True)
    cheap = cli("models", "check", folder)
    assert cheap.returncode == 0  # size + mtime unchanged
    r = cli("models", "check", folder, "--verify")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error:") and UNET in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_record_then_check(folder, cli):
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["files"]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    r = cli("models", "record", folder)
    assert r.returncode == 0, r.stderr
    # the tiny detector is not insightface's: recorded, with a warning that names it
    assert f"warning: {folder / DETECTOR_ONNX} is not the known-good file" in r.stdout
    assert cli("models", "check", folder, "--verify").returncode == 0
