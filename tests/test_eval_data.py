"""The training reader (eval/data.py): what it hands out, against decoding the shard bytes directly."""

from __future__ import annotations

import io
import json
import tarfile

import cv2
import numpy as np
import pytest
import torch

from eval.config import DataConfig
from eval.data import (
    Augment,
    ShardStream,
    decode_image,
    make_loader,
    resolve_dataset,
)
from eval.toydata import pattern_images, write_pattern_dataset
from synthface.errors import InputDataError


def _shard_samples(root) -> list[tuple[np.ndarray, int]]:
    """Every sample of a dataset in shard order, read with tarfile and decoded with OpenCV."""
    out = []
    for url in resolve_dataset(str(root)).urls:
        with tarfile.open(url) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
        for name in sorted(n for n in members if n.endswith(".jpg")):
            bgr = cv2.imdecode(np.frombuffer(members[name], np.uint8), cv2.IMREAD_COLOR)
            out.append((cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), int(members[name[: -len("jpg")] + "cls"])))
    return out


def _stream(root, seed=0, **overrides):
    cfg = DataConfig(**{"batch_size": 4, "num_workers": 0, "shuffle_buffer": 0, "flip": False, **overrides})
    return iter(ShardStream(resolve_dataset(str(root)), cfg, seed=seed))


def _nhwc(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_pattern_dataset(tmp_path_factory.mktemp("toy") / "ds", num_classes=4, images_per_class=6, shards=2)


def test_unshuffled_batches_are_the_shards_images_and_labels_in_order(toy):
    expected = _shard_samples(toy)
    stream = _stream(toy)
    images, labels = zip(*(next(stream) for _ in range(len(expected) // 4)))
    assert images[0].shape == (4, 3, 112, 112) and images[0].dtype == torch.uint8 and labels[0].dtype == torch.int64
    # NHWC rows seen as NCHW: what convolutions take without a copy
    assert images[0].is_contiguous(memory_format=torch.channels_last)
    assert np.array_equal(np.concatenate([_nhwc(x) for x in images]), np.stack([im for im, _ in expected]))
    assert torch.cat(labels).tolist() == [label for _, label in expected]


def test_flip_mirrors_about_half_the_images_and_repeats_per_seed(toy):
    expected = np.stack([im for im, _ in _shard_samples(toy)])
    cfg = DataConfig(batch_size=8, num_workers=0, shuffle_buffer=0, flip=True)
    spec = resolve_dataset(str(toy))

    def first_pass(seed):
        stream = iter(ShardStream(spec, cfg, seed=seed))
        return np.concatenate([_nhwc(next(stream)[0]) for _ in range(len(expected) // 8)])

    got = first_pass(seed=1)
    same = [np.array_equal(g, e) for g, e in zip(got, expected)]
    mirrored = [np.array_equal(g, e[:, ::-1]) for g, e in zip(got, expected)]
    assert all(s or m for s, m in zip(same, mirrored))  # nothing but the image or its mirror
    assert 0 < sum(mirrored) < len(got)  # both happen
    assert np.array_equal(first_pass(seed=1), got)
    assert not np.array_equal(first_pass(seed=2), got)


def test_shuffle_buffer_hands_out_dataset_samples(toy):
    everything = {(im.tobytes(), label) for im, label in _shard_samples(toy)}
    images, labels = next(_stream(toy, batch_size=24, shuffle_buffer=10))
    got = [(im.tobytes(), int(y)) for im, y in zip(_nhwc(images), labels)]
    assert set(got) <= everything and len(set(got)) > 12  # the dataset's samples, few repeats across passes
    assert labels.tolist() != sorted(labels.tolist())  # shard order is class order: shuffled, it is not


def _reference_augment(image, rng, cfg):
    """The per-image augmentation the batch path must reproduce (the reader's earlier code)."""
    if cfg.flip and rng.random() < 0.5:
        image = image[:, ::-1]
    x = image.astype(np.float32)
    j = cfg.color_jitter
    if j > 0:
        x *= rng.uniform(1 - j, 1 + j)
        mean = x.mean()
        x = (x - mean) * rng.uniform(1 - j, 1 + j) + mean
        grey = x.mean(axis=2, keepdims=True)
        x = (x - grey) * rng.uniform(1 - j, 1 + j) + grey
    if cfg.grayscale_prob > 0 and rng.random() < cfg.grayscale_prob:
        x = np.repeat(x.mean(axis=2, keepdims=True), 3, axis=2)
    return np.clip(x, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("jitter,grey", [(0.3, 0.0), (0.2, 0.4), (0.0, 0.5)])
def test_batch_colour_augmentation_equals_the_per_image_recipe(jitter, grey):
    cfg = DataConfig(flip=True, color_jitter=jitter, grayscale_prob=grey)
    images = pattern_images(np.arange(12) % 3)
    augment = Augment(cfg, seed=5)
    flips, colour = augment.draw(len(images))
    batch = images.copy()
    for i in np.flatnonzero(flips):
        batch[i] = batch[i, :, ::-1]
    augment.colour(batch, colour)
    rng = np.random.default_rng(5)
    expected = np.stack([_reference_augment(im, rng, cfg) for im in images])
    assert np.array_equal(batch, expected)
    if grey:
        grey_rows = [i for i in range(len(batch)) if np.all(batch[i] == batch[i][..., :1])]
        assert 0 < len(grey_rows) < len(batch)


def _write_shard(root, samples, num_classes=4):
    """A one-shard dataset of hand-made members: samples = [(key, {ext: bytes})]."""
    root.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (root / "shard-000000.tar").write_bytes(buf.getvalue())
    (root / "shard-000000.json").write_text("{}")
    (root / "dataset.json").write_text(json.dumps({"num_classes": num_classes, "num_images": len(samples)}))
    return root


def _jpeg(image, ext=".jpg") -> bytes:
    ok, data = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


@pytest.mark.parametrize(
    "members,message",
    [
        ({"cls": b"1"}, "lacks jpg or cls"),
        ({"jpg": None}, "lacks jpg or cls"),
        ({"jpg": None, "cls": b"9"}, "cls 9 is outside"),
        ({"jpg": None, "cls": b"one"}, "not an integer"),
        ({"jpg": b"\xff\xd8 not a jpeg at all", "cls": b"1"}, "undecodable"),
    ],
)
def test_bad_samples_are_one_clear_error_naming_the_sample(tmp_path, members, message):
    good = _jpeg(pattern_images([0])[0])
    members = {ext: good if data is None else data for ext, data in members.items()}
    root = _write_shard(tmp_path / "ds", [("0000000_000", {"jpg": good, "cls": b"0"}), ("0000001_000", members)])
    with pytest.raises(InputDataError, match=message) as err:
        next(_stream(root, batch_size=2))
    assert "0000001_000" in str(err.value)


def test_png_and_other_sizes_are_decoded_and_resized_like_decode_image(tmp_path):
    images = pattern_images([0, 1, 2, 3])
    big = cv2.resize(images[2], (150, 150))
    small = cv2.resize(images[3], (100, 100))
    stored = [_jpeg(images[0]), _jpeg(images[1], ".png"), _jpeg(big), _jpeg(small)]
    root = _write_shard(tmp_path / "ds", [(f"000000{i}_000", {"jpg": b, "cls": b"1"}) for i, b in enumerate(stored)])
    got = _nhwc(next(_stream(root, batch_size=4))[0])
    expected = np.stack([decode_image(b) for b in stored])
    assert np.array_equal(got, expected)
    assert np.array_equal(got[1], images[1])  # PNG: lossless, through OpenCV
    assert expected[2].shape == expected[3].shape == (112, 112, 3)


def test_loader_workers_hand_over_the_same_batches_and_reused_slots_do_not_touch_held_ones(toy):
    """One worker reads as this process does (the same share); far more batches than ring slots,
    all held at once: each must still be the batch it was when handed over."""
    spec = resolve_dataset(str(toy))
    cfg = DataConfig(batch_size=3, num_workers=0, shuffle_buffer=5, flip=True)
    direct = iter(ShardStream(spec, cfg, seed=4))
    expected = [next(direct) for _ in range(20)]
    held = []
    for batch in make_loader(spec, cfg.model_copy(update={"num_workers": 1}), seed=4):
        held.append(batch)
        if len(held) == len(expected):
            break
    for (images, labels), (want_images, want_labels) in zip(held, expected):
        assert images.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(images, want_images) and torch.equal(labels, want_labels)
