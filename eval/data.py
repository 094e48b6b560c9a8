"""Training data: a WebDataset pipeline over the factory's shards.

``--data`` is a dataset root (local folder or fsspec URL holding
``dataset.json`` and ``shard-NNNNNN.tar``) or a brace pattern of shard URLs
(``s3://bucket/ds/shard-{000000..000099}.tar``) whose folder holds
``dataset.json``. The root's ``dataset.json`` gives ``num_classes``; labels
come from each sample's ``cls``.

Work is split over (process rank x DataLoader worker) "slots". With at least
as many shards as slots each slot reads its own shards; with fewer (small
datasets, many GPUs) every slot reads all shards and keeps every n-th sample.
The shard list repeats endlessly in a seeded order, and an epoch is a fixed
number of steps, so all ranks take the same number of steps (DDP needs that).
"""

from __future__ import annotations

import json
import posixpath
import random
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path

import cv2
import fsspec
import numpy as np
import simplejpeg
import torch
import webdataset as wds
from webdataset.shardlists import expand_urls
from webdataset.tariterators import group_by_keys

from eval.backbones import INPUT_SIZE
from eval.tarstream import fast_tar_expander
from synthface.errors import InputDataError


@dataclass(frozen=True)
class DatasetSpec:
    root: str
    urls: tuple[str, ...]
    num_classes: int
    num_images: int


def _join(root: str, name: str) -> str:
    return posixpath.join(root, name) if "://" in root else str(Path(root) / name)


def _read_json(url: str) -> dict:
    try:
        with fsspec.open(url, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputDataError(f"{url} not found: --data must be a dataset root written by `synthface generate`") from None
    except (OSError, ValueError) as exc:
        raise InputDataError(f"cannot read {url}: {exc}") from None


def resolve_dataset(data: str) -> DatasetSpec:
    """Shard URLs and class count of a dataset root or shard pattern."""
    data = str(data)
    if "{" in data or data.endswith(".tar"):
        urls = expand_urls(data)
        root = data[: data.index("{")] if "{" in data else data
        root = root.rsplit("/", 1)[0] if "/" in root else "."
    else:
        root = data.rstrip("/")
        urls = None
    meta = _read_json(_join(root, "dataset.json"))
    for key in ("num_classes", "num_images"):
        if not isinstance(meta.get(key), int) or meta[key] < 1:
            raise InputDataError(f"{_join(root, 'dataset.json')}: '{key}' must be a positive integer")
    if urls is None:
        fs, path = fsspec.core.url_to_fs(root)
        names = sorted(posixpath.basename(p) for p in fs.glob(posixpath.join(path, "shard-*.tar")))
        # A shard counts once its stats file (the commit marker) exists.
        committed = [n for n in names if fs.exists(posixpath.join(path, n[: -len(".tar")] + ".json"))]
        urls = [_join(root, n) for n in committed]
    if not urls:
        raise InputDataError(f"no committed shards (shard-*.tar with its .json) under {root}")
    return DatasetSpec(root=root, urls=tuple(urls), num_classes=meta["num_classes"], num_images=meta["num_images"])


def _open_shards(src):
    """url dicts -> url + stream dicts, through fsspec (local paths, s3://, gs://, http...)."""
    for sample in src:
        try:
            stream = fsspec.open(sample["url"], "rb").open()
        except OSError as exc:
            raise InputDataError(f"cannot open shard {sample['url']}: {exc}") from None
        yield {**sample, "stream": stream}


def decode_image(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes -> uint8 RGB 112x112x3 (resized if stored at another size).

    JPEGs go through simplejpeg (libjpeg-turbo straight to RGB: the same
    pixels as OpenCV's decode + BGR->RGB, one pass less; docs/benchmark.md);
    anything else (PNG, a JPEG simplejpeg refuses) through OpenCV.
    """
    image = None
    if data[:2] == b"\xff\xd8":
        try:
            image = simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:
            image = None
    if image is None:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError("undecodable image")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if image.shape[:2] != (INPUT_SIZE, INPUT_SIZE):
        image = cv2.resize(image, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)
    return image


class Augment:
    """Random flip, colour jitter and greyscale on uint8 HxWx3 RGB."""

    def __init__(self, cfg, seed: int):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        cfg, rng = self.cfg, self.rng
        if cfg.flip and rng.random() < 0.5:
            image = cv2.flip(image, 1)  # = image[:, ::-1], already contiguous
        if cfg.color_jitter > 0 or cfg.grayscale_prob > 0:
            x = image.astype(np.float32)
            j = cfg.color_jitter
            if j > 0:
                x *= rng.uniform(1 - j, 1 + j)  # brightness
                mean = x.mean()
                x = (x - mean) * rng.uniform(1 - j, 1 + j) + mean  # contrast
                grey = x.mean(axis=2, keepdims=True)
                x = (x - grey) * rng.uniform(1 - j, 1 + j) + grey  # saturation
            if cfg.grayscale_prob > 0 and rng.random() < cfg.grayscale_prob:
                x = np.repeat(x.mean(axis=2, keepdims=True), 3, axis=2)
            image = np.clip(x, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(image)


def _collate(samples):
    images = torch.from_numpy(np.stack([s[0] for s in samples])).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([s[1] for s in samples], dtype=torch.long)
    return images, labels


class ShardStream(torch.utils.data.IterableDataset):
    """Endless stream of (uint8 [B,3,112,112], int64 [B]) batches for one rank."""

    def __init__(self, spec: DatasetSpec, cfg, rank: int = 0, world_size: int = 1, seed: int = 0):
        super().__init__()
        self.spec, self.cfg, self.rank, self.world_size, self.seed = spec, cfg, rank, world_size, seed

    def _slot(self) -> tuple[int, int]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.rank * num_workers + worker, self.world_size * num_workers

    def _shard_order(self):
        """The shard list, reshuffled every pass with the same seed on every rank."""
        urls = list(self.spec.urls)
        for epoch in range(10**9):
            random.Random(self.seed * 1_000_003 + epoch).shuffle(urls)
            for url in urls:
                yield {"url": url}

    def __iter__(self):
        slot, num_slots = self._slot()
        by_shard = len(self.spec.urls) >= num_slots
        label_limit = self.spec.num_classes

        def split_shards(src):
            return islice(src, slot, None, num_slots) if by_shard else src

        def split_samples(src):
            return src if by_shard else islice(src, slot, None, num_slots)

        augment = Augment(self.cfg, seed=self.seed * 1_000_003 + 7919 * slot + 1)

        def to_pair(sample):
            if "jpg" not in sample or "cls" not in sample:
                raise InputDataError(f"sample {sample.get('__key__')} in {sample.get('__url__')} lacks jpg or cls")
            label = int(sample["cls"])
            if not 0 <= label < label_limit:
                raise InputDataError(
                    f"sample {sample['__key__']} in {sample['__url__']}: cls {label} is outside "
                    f"[0, num_classes={label_limit}) of dataset.json"
                )
            return augment(decode_image(sample["jpg"])), label

        stages = [
            self._shard_order,  # a callable source: called once per iteration
            split_shards,
            _open_shards,
            partial(fast_tar_expander, suffixes=("jpg", "cls")),
            group_by_keys,
            split_samples,
        ]
        if self.cfg.shuffle_buffer > 1:
            stages.append(
                wds.shuffle(self.cfg.shuffle_buffer, initial=min(self.cfg.shuffle_buffer, 1000), seed=self.seed + slot)
            )
        stages += [wds.map(to_pair), wds.batched(self.cfg.batch_size, collation_fn=_collate, partial=False)]
        return iter(wds.DataPipeline(*stages))


def make_loader(spec: DatasetSpec, cfg, rank: int = 0, world_size: int = 1, seed: int = 0):
    """A DataLoader yielding ready batches (the pipeline batches inside the workers)."""
    stream = ShardStream(spec, cfg, rank=rank, world_size=world_size, seed=seed)
    return torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        prefetch_factor=4 if cfg.num_workers > 0 else None,
        pin_memory=torch.cuda.is_available(),
    )
