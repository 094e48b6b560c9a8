"""Fault sweep: every command against bad input of each kind (unreadable, empty, wrong
type, wrong shape, hostile, oversized) ends in one line and a non-zero exit, never a
traceback, and never a silent wrong result.

The commands run in this process through the CLI's entry point (``main``), so an
exception that is not a SynthfaceError escapes as a test failure (what a user would
see as a traceback). Heavy setup (tiny models) is shared across the cases.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest

import test_pipeline_support as support
from synthface.cli.main import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CASES: dict[str, object] = {}  # name -> builder(root, models) -> argv


def case(name: str):
    def register(builder):
        CASES[name] = builder
        return builder

    return register


# ----------------------------------------------------------------------------- files
def _write(path, data: bytes | str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _a_file(root):
    return _write(root / "a-file", "not a folder")


def _bank(root):
    return support.random_bank(root / "bank.parquet", 2)


def _pairs_dir(root):
    """Two readable photos named as a face-pairs CSV expects."""
    from PIL import Image

    images = root / "photos"
    images.mkdir(exist_ok=True)
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (64, 64), (120, 90, 60)).save(images / name)
    return images


def _face_args(models):
    return ["--models", str(models)]


# ----------------------------------------------------------------------------- config files
for command in (["config"], ["ids", "sample", "--out", "{root}/b.parquet"]):
    for kind, data in (
        ("non-utf8", b"seed: 1\nname: \xff\xfe\n"),
        ("binary", bytes(range(256)) * 4),
        ("a-list", "- 1\n- 2\n"),
        ("empty-key", "? \n"),
    ):
        def builder(root, models, command=command, data=data):
            cfg = _write(root / "cfg.yaml", data)
            return [a.format(root=root) for a in command] + ["--config", str(cfg)]

        case(f"{command[0]}{'-' + command[1] if len(command) > 1 else ''} config {kind}")(builder)


@case("config --set seed=2**64 (would wrap to another seed)")
def _(root, models):
    return ["config", "--set", f"seed={2**64}"]


@case("config --set seed=-1")
def _(root, models):
    return ["config", "--set", "seed=-1"]


# ----------------------------------------------------------------------------- ids
@case("ids sample --out under a regular file")
def _(root, models):
    return ["ids", "sample", "--set", "identity.num_identities=4", "--out", str(_a_file(root) / "bank.parquet")]


@case("ids sample identity.num_identities far beyond memory")
def _(root, models):
    return ["ids", "sample", "--set", "identity.num_identities=10000000", "--set", "identity.sampler=uniform",
            "--out", str(root / "bank.parquet")]


@case("ids stats --plot x.txt")
def _(root, models):
    return ["ids", "stats", str(_bank(root)), "--plot", str(root / "x.txt")]


@case("ids stats --plot under a regular file")
def _(root, models):
    return ["ids", "stats", str(_bank(root)), "--plot", str(_a_file(root) / "x.png")]


@case("ids stats on a binary file")
def _(root, models):
    return ["ids", "stats", str(_write(root / "bank.parquet", os.urandom(2048)))]


# ----------------------------------------------------------------------------- sample
@case("sample --ids 0-999999999 (oversized: expanded before the bank check)")
def _(root, models):
    return ["sample", "--models", str(models), "--bank", str(_bank(root)), "--ids", "0-999999999",
            "--out", str(root / "s")]


@case("sample --out under a regular file")
def _(root, models):
    return ["sample", "--models", str(models), "--bank", str(_bank(root)), "--ids", "0", "--out",
            str(_a_file(root) / "s")]


# ----------------------------------------------------------------------------- faces
for size in ("0", "33", "-32", "100000"):
    @case(f"embed-gallery --det-size {size}")
    def _(root, models, size=size):
        return ["embed-gallery", str(_pairs_dir(root)), "--out", str(root / "g.npy"), *_face_args(models),
                "--det-size", size]

    @case(f"face-pairs --det-size {size}")
    def _(root, models, size=size):
        pairs = _write(root / "pairs.csv", "image_a,image_b,same\na.jpg,b.jpg,1\n")
        return ["face-pairs", str(_pairs_dir(root)), "--pairs", str(pairs), *_face_args(models), "--det-size", size]


@case("embed-gallery a detector given as the recognizer")
def _(root, models):
    return ["embed-gallery", str(_pairs_dir(root)), "--out", str(root / "g.npy"), *_face_args(models),
            "--recognizer", str(models / "scrfd_10g_bnkps.onnx")]


@case("embed-gallery an image that is a decompression bomb")
def _(root, models):
    from PIL import Image

    images = root / "bomb"
    images.mkdir()
    Image.new("1", (30000, 30000)).save(images / "bomb.png", optimize=True)  # ~900 Mpx, a few hundred kB
    return ["embed-gallery", str(images), "--out", str(root / "g.npy"), *_face_args(models)]


for kind, text in (
    ("empty", b""),
    ("binary", bytes(range(256)) * 8),
    ("same=2", b"image_a,image_b,same\na.jpg,b.jpg,2\na.jpg,b.jpg,0\n"),
    ("same=yes", b"image_a,image_b,same\na.jpg,b.jpg,yes\n"),
    ("missing column", b"image_a,image_b\na.jpg,b.jpg\n"),
    ("unknown image", b"image_a,image_b,same\na.jpg,zzz.jpg,1\n"),
):
    @case(f"face-pairs --pairs {kind} CSV")
    def _(root, models, text=text):
        return ["face-pairs", str(_pairs_dir(root)), "--pairs", str(_write(root / "p.csv", text)), *_face_args(models)]


for kind, text in (("empty", b""), ("binary", bytes(range(256)) * 8), ("no identity column", b"image\na.jpg\n")):
    @case(f"face-pairs --identities {kind} CSV")
    def _(root, models, text=text):
        pairs = _write(root / "pairs.csv", "image_a,image_b,same\na.jpg,b.jpg,1\n")
        return ["face-pairs", str(_pairs_dir(root)), "--pairs", str(pairs), "--identities",
                str(_write(root / "i.csv", text)), *_face_args(models)]


# ----------------------------------------------------------------------------- dataset: verify, card
DATASET_KINDS = {
    "binary dataset.json": os.urandom(512),
    "dataset.json a list": b"[1, 2]",
    "dataset.json with shards of the wrong type": json.dumps({"shards": "x", "num_classes": "many"}).encode(),
    "dataset.json with a shard without a name": json.dumps({"shards": [{}], "complete": True}).encode(),
}
for kind, data in DATASET_KINDS.items():
    for command in ("verify", "card"):
        @case(f"{command} {kind}")
        def _(root, models, data=data, command=command):
            _write(root / "ds" / "dataset.json", data)
            return [command, str(root / "ds")]


@case("card on a folder with no dataset")
def _(root, models):
    (root / "empty").mkdir()
    return ["card", str(root / "empty")]


for command in ("verify", "card"):
    @case(f"{command} on S3 without credentials")
    def _(root, models, command=command):
        return [command, "s3://synthface-test/nothing"]


NO_CREDENTIALS = {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
                  "AWS_EC2_METADATA_DISABLED": "true", "FSSPEC_S3": '{"endpoint_url": "http://127.0.0.1:9"}'}


@case("verify an fsspec-chained URL")
def _(root, models):
    return ["verify", f"{root}/d::x#y"]


# ----------------------------------------------------------------------------- generate
@case("generate --out an fsspec-chained URL (would write elsewhere)")
def _(root, models):
    return ["generate", "--config", str(_tiny_config(root, models)), "--out", f"{root}/d::x#y"]


@case("generate --out under a regular file")
def _(root, models):
    return ["generate", "--config", str(_tiny_config(root, models)), "--out", str(_a_file(root) / "ds")]


@case("generate --bank a binary file")
def _(root, models):
    return ["generate", "--config", str(_tiny_config(root, models)), "--out", str(root / "ds"),
            "--bank", str(_write(root / "x.parquet", os.urandom(4096)))]


def _tiny_config(root, models):
    import yaml

    return _write(root / "run.yaml", yaml.safe_dump(support.tiny_config(models, _bank(root))))


# ----------------------------------------------------------------------------- train, benchmark
def _shards_with_truncated_tar(root):
    from test_shards_writer import make_dataset

    make_dataset(root / "ds", shards=2)
    tar = (root / "ds" / "shard-000001.tar").read_bytes()
    (root / "ds" / "shard-000001.tar").write_bytes(tar[: len(tar) // 3])
    return root / "ds"


@case("train --out under a regular file")
def _(root, models):
    from test_shards_writer import make_dataset

    make_dataset(root / "ds", shards=1)
    return ["train", "--data", str(root / "ds"), "--out", str(_a_file(root) / "run"),
            "--set", "optim.epochs=1", "--set", "data.batch_size=4"]


@case("train on a truncated tar")
def _(root, models):
    return ["train", "--data", str(_shards_with_truncated_tar(root)), "--out", str(root / "run"),
            "--set", "optim.epochs=1", "--set", "data.batch_size=4"]


@case("benchmark --model a detector")
def _(root, models):
    bins = root / "bins"
    _write(bins / "lfw.bin", _bin(4))
    return ["benchmark", "--model", str(models / "scrfd_10g_bnkps.onnx"), "--bins", str(bins), "--out", str(root / "r")]


@case("benchmark a 2 MB .bin declaring a huge image count")
def _(root, models):
    one = _jpeg()
    bins = root / "bins"
    # a pickle memo reference costs 2 bytes: a million entries, one real image
    _write(bins / "lfw.bin", pickle.dumps(([one] * 1_000_000, [True, False] * 250_000), protocol=2))
    return ["benchmark", "--model", str(models / "arcface.onnx"), "--bins", str(bins), "--out", str(root / "r")]


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (112, 112), (100, 100, 100)).save(buf, format="JPEG")
    return buf.getvalue()


def _bin(pairs: int) -> bytes:
    return pickle.dumps(([_jpeg()] * (2 * pairs), [True, False] * (pairs // 2)), protocol=2)


# ----------------------------------------------------------------------------- models
for part in ("arcface.onnx", "arc2face/diffusion_pytorch_model.safetensors"):
    @case(f"models check with a zero-byte {part}")
    def _(root, models, part=part):
        import shutil

        copy = root / "models"
        shutil.copytree(models, copy)
        target = copy / part
        if not target.exists():  # the tiny folder may store a part under an alternative name
            target = next(p for p in copy.rglob(part.split("/")[-1].split(".")[0] + "*") if p.is_file())
        target.write_bytes(b"")
        return ["models", "check", str(copy)]


# ----------------------------------------------------------------------------- the sweep
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_and_a_non_zero_exit(name, tmp_path, tiny_models, capsys, monkeypatch):
    import synthface.resources

    # the same verdicts on a 24 GiB laptop and a 2 TiB server: oversized inputs stay oversized
    monkeypatch.setattr(synthface.resources, "available_bytes", lambda: 8 * 2**30)
    if "without credentials" in name:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(key, raising=False)
        for key, value in NO_CREDENTIALS.items():
            monkeypatch.setenv(key, value)
    argv = [str(a) for a in CASES[name](tmp_path, tiny_models)]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    assert exited.value.code not in (0, None), f"{argv} succeeded:\n{out[-2000:]}"
    assert "Traceback" not in err + out
    lines = [line for line in err.splitlines() if line.strip()]
    if name.startswith("models check"):  # a report on stdout; its last line says what is wrong
        assert "1 required file(s) missing" in out.splitlines()[-1]
        return
    assert lines, f"nothing on stderr; stdout:\n{out[-2000:]}"
    assert lines[-1].startswith(("error:", "FAILED")), err[-2000:]  # verify ends on its FAILED summary
    if lines[-1].startswith("error:"):
        assert len(lines) == 1 or not name.startswith(("config", "card")), err[-2000:]
        assert len([line for line in lines if line.startswith("error:")]) == 1
