"""`synthface models init-tiny|check` and `synthface sample`, run as a user runs them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from synthface.seeds import image_seed

FAST = ["--set", "generation.height=64", "--set", "generation.width=64", "--set", "generation.steps=2", "--set", "seed=7"]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """The commands run tiny models: one torch thread is faster than two fighting (inherited by the subprocess)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    """A real identity bank (the identity stage's sampler and writer), 5 identities."""
    from synthface.identity.bank import sample_bank, write_bank
    from synthface.identity.config import IdentityConfig

    sampled, _ = sample_bank(IdentityConfig(num_identities=5, sampler="uniform"), seed=3)
    return write_bank(sampled, tmp_path_factory.mktemp("bank") / "bank.parquet")


@pytest.fixture(scope="module")
def tiny_cli_folder(tmp_path_factory):
    from tests.conftest import run_cli

    folder = tmp_path_factory.mktemp("cli") / "models"
    r = run_cli("models", "init-tiny", folder)
    assert r.returncode == 0, r.stderr
    assert "tiny random-weight model folder written" in r.stdout
    return folder


def test_check_lists_present_and_missing(cli, tiny_cli_folder, tmp_path):
    r = cli("models", "check", tiny_cli_folder)
    assert r.returncode == 0, r.stderr
    assert "origin: tiny-random" in r.stdout and "all required model files present" in r.stdout
    assert "lcm-lora" in r.stdout  # optional part shown as absent with where to get it
    # A folder missing a required file: listed as MISSING, exit 1.
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(tiny_cli_folder, partial)
    (partial / "arcface.onnx").unlink()
    r = cli("models", "check", partial)
    assert r.returncode == 1
    assert "MISSING" in r.stdout and "arcface.onnx" in r.stdout and "models download" in r.stdout


def test_check_missing_folder_is_one_line_error(cli, tmp_path):
    r = cli("models", "check", tmp_path / "nope")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: model folder not found") and "Traceback" not in r.stderr


def test_init_tiny_refuses_a_folder_with_other_files(cli, tmp_path):
    target = tmp_path / "real"
    target.mkdir()
    (target / "precious.safetensors").write_bytes(b"weights")
    r = cli("models", "init-tiny", target)
    assert r.returncode == 2 and "refusing" in r.stderr
    assert (target / "precious.safetensors").read_bytes() == b"weights" and len(list(target.iterdir())) == 1


def test_sample_writes_images_contact_sheet_and_metadata(cli, tiny_cli_folder, bank, tmp_path):
    out = tmp_path / "out"
    r = cli("sample", "--models", tiny_cli_folder, "--bank", bank, "--ids", "0,3", "--per-id", "3", "--out", out, *FAST)
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in out.glob("*.png"))
    expected = [f"{i:07d}_{k:03d}.png" for i in (0, 3) for k in range(3)] + ["contact_sheet.png"]
    assert names == sorted(expected)
    first = np.asarray(Image.open(out / "0000000_000.png"))
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.height < sheet.width  # 2 rows (identities) x 3 columns (images) of tiles
    meta = json.loads((out / "sample.json").read_text())
    assert meta["generator"]["steps"] == 2 and meta["generator"]["scheduler"] == "dpmsolver++"
    seeds = {(m["id"], m["index"]): m["seed"] for m in meta["images"]}
    assert seeds[3, 2] == image_seed(7, 3, 2)
    assert meta["jitter"] is True  # the identity stage's per-image jitter is applied


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ids", "0,99"], "no identities with ids [99]"),
        (["--ids", "zero"], "--ids"),
        (["--set", "generation.steps=0"], "generation.steps"),
        (["--out", "{tmp}/a-file/o"], "cannot create the output folder"),
    ],
)
def test_sample_errors_are_one_line(cli, tiny_cli_folder, bank, tmp_path, args, message):
    (tmp_path / "a-file").write_text("not a folder")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = cli("sample", "--models", tiny_cli_folder, "--bank", bank, "--per-id", "1", "--out", tmp_path / "o", *args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_sample_missing_models_folder(cli, bank, tmp_path):
    r = cli("sample", "--models", tmp_path / "none", "--bank", bank, "--out", tmp_path / "o")
    assert r.returncode == 2 and "model folder not found" in r.stderr


def test_parse_ids_lists_ranges_and_refuses_bad_ones():
    from pipelines.sample import parse_ids
    from synthface.errors import InputDataError

    assert parse_ids("0, 2,5-7,2") == [0, 2, 5, 6, 7]
    for text, message in (("3-1", "range '3-1' is empty"), ("-3", "non-negative"), ("a,b", "comma-separated"), (",", "non-negative")):
        with pytest.raises(InputDataError, match=message):
            parse_ids(text)


def test_init_tiny_into_an_uncreatable_folder_is_one_line(cli, tmp_path):
    (tmp_path / "a-file").write_text("x")
    r = cli("models", "init-tiny", tmp_path / "a-file" / "models")
    assert r.returncode == 2 and "cannot create the model folder" in r.stderr and "Traceback" not in r.stderr


def test_sample_with_both_controls_records_them(cli, tiny_models, bank, tmp_path):
    """`synthface pose-pool` writes a pool; `synthface sample` applies both controls and records them."""
    pool = tmp_path / "pool"
    r = cli("pose-pool", pool, "--count", "3", "--size", "64")
    assert r.returncode == 0 and len(list(pool.glob("*.png"))) == 3, r.stderr
    controls = ["--set", "generation.expression.mode=gaussian", "--set", "generation.pose.mode=pool",
                "--set", f"generation.pose.pool={pool}"]
    out = tmp_path / "out"
    r = cli("sample", "--models", tiny_models, "--bank", bank, "--ids", "0,1", "--per-id", "2", "--out", out, *FAST, *controls)
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / "sample.json").read_text())
    assert meta["generator"]["pose"] == {"controlnet_scale": 1.0}
    assert all(len(i["controls"]["expression"]) == 55 and i["controls"]["pose_control"].endswith(".png") for i in meta["images"])
    # a bad pool: one line naming the file, exit 2, nothing generated
    (pool / "tiny.png").write_bytes(b"")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(pool / "tiny.png")
    r = cli("sample", "--models", tiny_models, "--bank", bank, "--ids", "0", "--per-id", "1", "--out", tmp_path / "o2", *FAST, *controls)
    assert r.returncode == 2 and "tiny.png is 32x32" in r.stderr and "Traceback" not in r.stderr
    r = cli("pose-pool", pool, "--count", "1", "--size", "64")
    assert r.returncode == 2 and "not an empty folder" in r.stderr
