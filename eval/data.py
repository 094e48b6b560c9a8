"""Training data: the factory's WebDataset shards as ready batches.

The hot path is lean on purpose (docs/benchmark.md, "The training reader"):
tar members -> (key, url, jpg, cls) tuples (``eval/tarstream.py``) -> a
shuffle buffer over tuples (webdataset's) -> each batch decoded by libjpeg-turbo straight
into one uint8 array, mirrored in place, colour-augmented per batch. Loader
worker processes (``eval/loader.py``) write the batches into shared memory
and the training process takes them without a copy. Batches are
``[B,3,112,112]`` views of NHWC rows (channels_last strides).

``--data`` is a dataset root (local folder or fsspec URL holding
``dataset.json`` and ``shard-NNNNNN.tar``) or a brace pattern of shard URLs
(``s3://bucket/ds/shard-{000000..000099}.tar``) whose folder holds
``dataset.json``. The root's ``dataset.json`` gives ``num_classes``; labels
come from each sample's ``cls``.

Work is split over (process rank x loader worker) "shares". With at least
as many shards as shares each share reads its own shards; with fewer (small
datasets, many GPUs) every share reads all shards and keeps every n-th sample.
The shard list repeats endlessly in a seeded order, and an epoch is a fixed
number of steps, so all ranks take the same number of steps (DDP needs that).
"""

from __future__ import annotations

import json
import posixpath
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import cv2
import fsspec
import numpy as np
import simplejpeg
import torch
import webdataset as wds
from webdataset.shardlists import expand_urls

from eval.backbones import INPUT_SIZE
from eval.loader import Loader
from eval.tarstream import iter_samples
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


def _open_shard(url: str):
    """A read stream of one shard, through fsspec (local paths, s3://, gs://, http...)."""
    try:
        return fsspec.open(url, "rb").open()
    except OSError as exc:
        raise InputDataError(f"cannot open shard {url}: {exc}") from None


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


def decode_into(data: bytes, out: np.ndarray, flip: bool = False) -> None:
    """Decode like :func:`decode_image` straight into ``out`` (uint8 112x112x3, C-contiguous),
    mirrored left-right when ``flip``.

    A 112x112 JPEG (every factory crop) is decoded by libjpeg-turbo into
    ``out`` itself: no array per image. To mirror it, it is decoded as BGR and
    each row's bytes are reversed (B,G,R of the last pixel first: R,G,B of the
    mirrored row), one single-channel flip, which OpenCV does faster than a
    3-channel one (2-3 us less per mirrored image here). Other sizes and
    formats take :func:`decode_image`.
    """
    if data[:2] == b"\xff\xd8":
        try:
            image = simplejpeg.decode_jpeg(data, colorspace="BGR" if flip else "RGB", buffer=out)
        except ValueError:  # larger than 112x112, or refused: decode_image sorts it out
            image = None
        if image is not None and image.shape == out.shape:  # (smaller: decoded into the row's start)
            if flip:
                rows = out.reshape(out.shape[0], -1)
                cv2.flip(rows, 1, dst=rows)
            return
    out[...] = decode_image(data)
    if flip:
        cv2.flip(out, 1, dst=out)


class Augment:
    """Random flip, colour jitter and greyscale on uint8 RGB images.

    Each image takes its random numbers in a fixed order (flip, then
    brightness, contrast, saturation, then greyscale; one draw each when the
    option is on), so a batch's draws are one ``(batch, draws)`` array and
    give the same values image by image as one draw at a time.
    """

    def __init__(self, cfg, seed: int):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        self.jitter = cfg.color_jitter > 0
        self.draws = int(cfg.flip) + 3 * self.jitter + int(cfg.grayscale_prob > 0)

    def draw(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The next ``n`` images' flip decisions (bool [n]) and colour draws ([n, k] or None)."""
        if self.draws == 0:
            return np.zeros(n, bool), None
        u = self.rng.random((n, self.draws))
        flips = u[:, 0] < 0.5 if self.cfg.flip else np.zeros(n, bool)
        colour = u[:, int(self.cfg.flip) :]
        return flips, colour if colour.shape[1] else None

    def colour(self, images: np.ndarray, draws: np.ndarray) -> None:
        """Colour jitter and greyscale, in place, on uint8 [n,H,W,3] with their draws."""
        cfg = self.cfg
        grey_draws = draws[:, -1] if cfg.grayscale_prob > 0 else None
        if self.jitter:
            low, high = 1 - cfg.color_jitter, 1 + cfg.color_jitter
            # uniform(low, high) as numpy draws it, then float32: scaling a float32 image by a
            # Python float computes in float32
            factors = (low + (high - low) * draws[:, :3]).astype(np.float32)[:, :, None, None, None]
            x = images.astype(np.float32)
            x *= factors[:, 0]  # brightness
            mean = x.mean(axis=(1, 2, 3), keepdims=True)
            x -= mean
            x *= factors[:, 1]  # contrast
            x += mean
            grey = _channel_mean(x)
            x -= grey
            x *= factors[:, 2]  # saturation
            x += grey
            if grey_draws is not None:
                for i in np.flatnonzero(grey_draws < cfg.grayscale_prob):
                    x[i] = _channel_mean(x[i])
            np.clip(x, 0, 255, out=x)
            images[...] = x  # truncates toward zero, as astype(np.uint8) does
        elif grey_draws is not None:
            for i in np.flatnonzero(grey_draws < cfg.grayscale_prob):
                images[i] = _channel_mean(images[i].astype(np.float32))


def _channel_mean(x: np.ndarray) -> np.ndarray:
    """x.mean(axis=-1, keepdims=True) for 3 channels, the same float32 values: numpy's
    reduction over a length-3 last axis runs element by element and took most of the
    colour augmentation's time."""
    total = x[..., 0:1] + x[..., 1:2]
    total += x[..., 2:3]
    total /= 3
    return total


def _new_images(n: int) -> torch.Tensor:
    """uint8 [n,112,112,3], allocated by numpy: it reuses freed heap memory, where torch.empty
    of a few MB takes fresh pages every batch (page faults cost 0.8 ms per MB on our VM)."""
    return torch.from_numpy(np.empty((n, INPUT_SIZE, INPUT_SIZE, 3), np.uint8))


class ShardStream:
    """Endless stream of (uint8 [B,3,112,112], int64 [B]) batches for one rank.

    The images are stored NHWC (decoded rows) and handed as an NCHW view with
    channels_last strides (``images.is_contiguous(memory_format=torch.channels_last)``):
    torch convolutions take it as it is, without a permuting copy. Iterating runs the
    stream in this process; loader workers (``eval/loader.py``) run their share of it
    through :meth:`batches` into shared memory.
    """

    def __init__(self, spec: DatasetSpec, cfg, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.spec, self.cfg, self.rank, self.world_size, self.seed = spec, cfg, rank, world_size, seed

    def _shard_order(self) -> Iterator[str]:
        """The shard list, reshuffled every pass with the same seed on every rank."""
        urls = list(self.spec.urls)
        for epoch in range(10**9):
            random.Random(self.seed * 1_000_003 + epoch).shuffle(urls)
            yield from urls

    @staticmethod
    def _samples(urls: Iterator[str]) -> Iterator[tuple[str, str, bytes | None, bytes | None]]:
        """(key, url, jpg, cls) of every sample of the shards, in order."""
        for url in urls:
            stream = _open_shard(url)
            try:
                for key, (jpg, cls) in iter_samples(stream, url, ("jpg", "cls")):
                    yield key, url, jpg, cls
            finally:
                stream.close()

    def _fill(self, samples: list, augment: Augment, rows: np.ndarray, label_rows: np.ndarray) -> None:
        """Decode and augment ``samples`` into ``rows`` (uint8 [B,112,112,3]) and their labels."""
        label_limit = self.spec.num_classes
        flips, colour = augment.draw(len(samples))
        for i, (key, url, jpg, cls) in enumerate(samples):
            if jpg is None or cls is None:
                raise InputDataError(f"sample {key} in {url} lacks jpg or cls")
            try:
                label = int(cls)
            except ValueError:
                raise InputDataError(f"sample {key} in {url}: cls {cls[:20]!r} is not an integer") from None
            if not 0 <= label < label_limit:
                raise InputDataError(
                    f"sample {key} in {url}: cls {label} is outside [0, num_classes={label_limit}) of dataset.json"
                )
            label_rows[i] = label
            try:
                decode_into(jpg, rows[i], flips[i])
            except ValueError:
                raise InputDataError(f"sample {key} in {url}: undecodable jpg") from None
        if colour is not None:
            augment.colour(rows, colour)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        def new_batch():
            images, labels = _new_images(self.cfg.batch_size), np.empty(self.cfg.batch_size, np.int64)
            return (images.permute(0, 3, 1, 2), torch.from_numpy(labels)), images.numpy(), labels

        return self.batches(new_batch)

    def batches(self, claim: Callable[[], tuple | None], worker: int = 0, num_workers: int = 1) -> Iterator:
        """Batch after batch of this rank's loader worker ``worker`` (of ``num_workers``), each
        written into the arrays ``claim()`` gives: (handle, uint8 [B,112,112,3] rows, int64 [B]
        labels), or None to stop. Yields each handle once its batch is written."""
        share, shares = self.rank * num_workers + worker, self.world_size * num_workers
        by_shard = len(self.spec.urls) >= shares
        urls = self._shard_order()
        if by_shard:
            urls = islice(urls, share, None, shares)
        samples = self._samples(urls)
        if not by_shard:
            samples = islice(samples, share, None, shares)
        if self.cfg.shuffle_buffer > 1:
            # webdataset's shuffle buffer works on any items: here on (key, url, jpg, cls) tuples
            bufsize = self.cfg.shuffle_buffer
            samples = wds.shuffle(bufsize, initial=min(bufsize, 1000), seed=self.seed + share)(samples)
        augment = Augment(self.cfg, seed=self.seed * 1_000_003 + 7919 * share + 1)
        size = self.cfg.batch_size
        while True:
            chunk = list(islice(samples, size))
            if len(chunk) < size:
                return  # only a finite shard list ends; the endless one never does
            target = claim()
            if target is None:
                return
            handle, rows, labels = target
            self._fill(chunk, augment, rows, labels)
            yield handle


def make_loader(spec: DatasetSpec, cfg, rank: int = 0, world_size: int = 1, seed: int = 0) -> Loader:
    """Ready batches from ``cfg.num_workers`` loader worker processes (or this process when 0);
    pinned for CUDA when a GPU is there."""
    stream = ShardStream(spec, cfg, rank=rank, world_size=world_size, seed=seed)
    return Loader(stream, cfg.num_workers, pin=torch.cuda.is_available(), timeout_s=cfg.worker_timeout_s)
