"""The model folder: init-tiny layout and formats, check/require, offline download."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from synthface.errors import MissingModelError
from synthface.models import check, init_tiny, require
from synthface.models.layout import MANIFEST, MODEL_FILES


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return init_tiny(tmp_path_factory.mktemp("tiny-models"))


def test_init_tiny_writes_every_required_file_and_a_manifest(tiny):
    report = check(tiny)
    assert report.ok, [s.file.path for s in report.missing_required]
    assert {s.file.path for s in report.files if s.present} >= {f.path for f in MODEL_FILES if f.required}
    lcm = [s for s in report.files if not s.file.required]
    assert lcm and not lcm[0].present  # optional part reported as absent, not as an error
    manifest = json.loads((tiny / MANIFEST).read_text())
    assert manifest["origin"] == "tiny-random" and report.origin == "tiny-random"
    assert {"arc2face", "encoder", "faces"} <= set(manifest["parts"])


def test_tiny_encoder_is_stored_like_the_transformers4_checkpoint(tiny):
    import torch

    state = torch.load(tiny / "encoder" / "pytorch_model.bin", map_location="cpu", weights_only=True)
    assert state and all(k.startswith("text_model.") for k in state)
    config = json.loads((tiny / "encoder" / "config.json").read_text())
    assert config["transformers_version"].startswith("4.")
    assert config["hidden_size"] > 512  # room for the zero-padded 512-d ID vector
    assert not (tiny / "encoder" / "model.safetensors").exists()


def test_tiny_tokenizer_has_the_prompt_words_as_single_tokens(tiny):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tiny / "tokenizer")
    tokens = tok.convert_ids_to_tokens(tok("photo of a id person").input_ids)
    assert tokens == ["<|startoftext|>", "photo</w>", "of</w>", "a</w>", "id</w>", "person</w>", "<|endoftext|>"]
    assert len(tok.encode("id", add_special_tokens=False)) == 1
    # Any other text still tokenizes into known byte-level symbols, never the unknown token.
    ids = tok("Zoë's 3 new cats!", add_special_tokens=False).input_ids
    assert len(ids) > 3 and tok.unk_token_id not in ids
    assert tok.model_max_length == 77


def test_init_tiny_is_deterministic(tiny, tmp_path):
    other = init_tiny(tmp_path / "again", with_face_models=False)
    for rel in ("arc2face/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "tokenizer/vocab.json"):
        assert (other / rel).read_bytes() == (tiny / rel).read_bytes(), rel


def test_check_and_require_name_the_missing_file(tiny, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(tiny, partial)
    (partial / "vae" / "config.json").unlink()
    report = check(partial)
    assert not report.ok
    assert [s.file.path for s in report.missing_required] == ["vae/config.json"]
    with pytest.raises(MissingModelError, match=r"vae/config.json.*synthface models download"):
        require(partial, ["arc2face/config.json", "vae/config.json"])
    require(partial, ["arc2face/config.json"])  # present: no error


def test_require_on_a_missing_folder(tmp_path):
    with pytest.raises(MissingModelError, match="model folder not found.*models download"):
        require(tmp_path / "nowhere", ["arc2face/config.json"])
    assert not check(tmp_path / "nowhere").exists


def test_download_fails_fast_and_clearly_when_the_hub_is_unreachable(tmp_path, monkeypatch):
    from synthface.models import hub as dl

    # A closed local port stands in for "no internet" whatever this machine's network is.
    monkeypatch.setattr(dl, "hub_endpoint", lambda: "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in dl.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    start = time.monotonic()
    with pytest.raises(MissingModelError, match="not reachable.*offline"):
        dl.download(tmp_path / "m")
    assert time.monotonic() - start < dl.CONNECT_TIMEOUT_S + 5
    assert not (tmp_path / "m").exists()  # nothing half-written


def test_connectivity_check_is_skipped_behind_a_proxy(tmp_path, monkeypatch):
    from synthface.models import hub as dl

    monkeypatch.setattr(dl, "hub_endpoint", lambda: "http://127.0.0.1:9")  # closed port: direct check would fail
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    dl.check_connectivity(tmp_path)  # no error: the proxy, not a direct connection, reaches the hub


def test_download_respects_hf_hub_offline(tmp_path, monkeypatch):
    from synthface.models import hub as dl

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingModelError, match="HF_HUB_OFFLINE"):
        dl.download(tmp_path / "m")


def test_download_plan_maps_every_file_into_the_layout():
    from synthface.models.hub import files_to_fetch

    files = files_to_fetch(include_lcm_lora=True, include_controlnet=True, include_exp_adapter=True)
    assert len(files) == len(MODEL_FILES)
    for f in files:  # files land at their layout path: the repo path is its suffix
        assert f.path.endswith(f.repo_path), f
    assert all(f.required for f in files_to_fetch(include_lcm_lora=False))
    # each opt-in flag adds exactly its own files
    lcm = {f.path for f in files_to_fetch(True)} - {f.path for f in files_to_fetch(False)}
    controlnet = {f.path for f in files_to_fetch(False, include_controlnet=True)} - {f.path for f in files_to_fetch(False)}
    adapter = {f.path for f in files_to_fetch(False, include_exp_adapter=True)} - {f.path for f in files_to_fetch(False)}
    assert lcm == {"lcm-lora/pytorch_lora_weights.safetensors"}
    assert controlnet == {"controlnet/config.json", "controlnet/diffusion_pytorch_model.safetensors"}
    assert adapter == {"exp_adapter/exp_adapter.bin"}
    assert {f.repo for f in files if f.extra in ("controlnet", "exp-adapter")} == {"FoivosPar/Arc2Face"}


def test_download_puts_every_file_at_its_layout_path_and_records_revisions(tmp_path, monkeypatch):
    """The hub is replaced by a fake that serves each (repo, file); no network is used."""
    import types

    import huggingface_hub

    from synthface.models import hub as dl

    calls = []

    def fake_download(repo_id, filename, *, revision=None, local_dir=None, etag_timeout=None):
        calls.append((repo_id, filename, revision))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"{repo_id}:{filename}@{revision}")
        return str(target)

    def fake_info(self, repo_id, revision=None, timeout=None, files_metadata=False):
        return types.SimpleNamespace(sha=f"sha-of-{repo_id.split('/')[0]}", siblings=[])

    monkeypatch.setattr(dl, "check_connectivity", lambda root: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", fake_info)
    monkeypatch.setattr(dl, "known_mismatch", lambda *a: None)  # the fake detector is not the pinned file

    root = dl.download(
        tmp_path / "models", include_lcm_lora=True, detector_repo="someone/antelope-mirror",
        include_controlnet=True, include_exp_adapter=True,
    )
    report = check(root)
    assert report.ok and all(s.present for s in report.files)  # the optional parts too
    assert (root / "exp_adapter" / "exp_adapter.bin").read_text() == "FoivosPar/Arc2Face:exp_adapter/exp_adapter.bin@sha-of-FoivosPar"
    assert (root / "lcm-lora" / "pytorch_lora_weights.safetensors").read_text().startswith("latent-consistency/")
    assert (root / "scrfd_10g_bnkps.onnx").read_text().startswith("someone/antelope-mirror:")
    # every file is fetched at the commit resolved for its repo
    assert all(rev == f"sha-of-{repo.split('/')[0]}" for repo, _, rev in calls)
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["origin"] == "download"
    assert manifest["parts"]["FoivosPar/Arc2Face"]["revision"] == "sha-of-FoivosPar"
    assert report.origin == "download"


def test_check_and_init_tiny_know_the_control_weights(tmp_path, cli):
    """init-tiny --controlnet --exp-adapter writes them in the real layout; check reports them."""
    folder = tmp_path / "m"
    done = cli("models", "init-tiny", str(folder), "--controlnet", "--exp-adapter")
    assert done.returncode == 0, done.stderr
    report = check(folder)
    present = {s.file.path for s in report.files if s.present}
    assert {"controlnet/config.json", "controlnet/diffusion_pytorch_model.safetensors", "exp_adapter/exp_adapter.bin"} <= present
    assert {"controlnet", "exp_adapter"} <= set(json.loads((folder / MANIFEST).read_text())["parts"])
    listing = cli("models", "check", str(folder))
    assert listing.returncode == 0 and "pose ControlNet" in listing.stdout and "expression adapter" in listing.stdout
    assert "LCM-LoRA absent" in listing.stdout and "pose ControlNet absent" not in listing.stdout


def test_check_names_each_absent_optional_part_and_its_flag(tiny, cli):
    listing = cli("models", "check", str(tiny))
    assert listing.returncode == 0
    assert "--controlnet" in listing.stdout and "--exp-adapter" in listing.stdout and "--lcm-lora" in listing.stdout
