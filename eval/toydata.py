"""Small learnable labelled image sets in the shard format, for tests and smoke runs.

Each class is a fixed random glyph (a blocky binary mask in a class colour);
each image draws it at a random offset and brightness on a background from a
small palette shared by all classes, with pixel noise. The nuisance
(background, noise) covers most pixels, so an untrained network separates
classes poorly and a trained one must learn the glyph. The background carries
no label information and is not unique per image, so a network cannot
memorise images by it instead of learning the glyphs.

Written with webdataset's ``TarWriter`` following the design-doc contract:
key ``{id:07d}_{index:03d}``, ``jpg`` 112x112, ``cls``, ``json``, the stats
``.json`` per shard, and ``dataset.json`` (``num_classes``, ``num_images``)
at the root.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


BACKGROUNDS = np.array([[40, 40, 40], [200, 200, 200], [60, 120, 200], [200, 150, 60]], np.float32)


def class_glyphs(num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = rng.random((num_classes, 6, 6)) < 0.5
    colours = rng.integers(0, 256, (num_classes, 3))
    return masks, colours


def render(mask: np.ndarray, colour: np.ndarray, rng: np.random.Generator, size: int = 112) -> np.ndarray:
    """One uint8 RGB image of a glyph with random nuisance."""
    image = np.empty((size, size, 3), np.float32)
    image[:] = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    glyph = cv2.resize(mask.astype(np.uint8), (60, 60), interpolation=cv2.INTER_NEAREST).astype(bool)
    dy, dx = rng.integers(size // 2 - 30 - 10, size // 2 - 30 + 11, 2)
    region = image[dy : dy + 60, dx : dx + 60]
    region[glyph] = colour * rng.uniform(0.7, 1.1)
    image += rng.normal(0, 20, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def pattern_images(labels, seed: int = 0, glyph_seed: int = 0, num_classes: int | None = None) -> np.ndarray:
    """uint8 [N,112,112,3] images for the given class labels."""
    labels = np.asarray(labels)
    masks, colours = class_glyphs(num_classes or int(labels.max()) + 1, glyph_seed)
    rng = np.random.default_rng(seed)
    return np.stack([render(masks[c], colours[c], rng) for c in labels])


def write_pattern_dataset(
    root: str | Path, num_classes: int, images_per_class: int, shards: int = 2, seed: int = 0, glyph_seed: int = 0
) -> Path:
    """Write a dataset root with ``shards`` tar shards; classes are split contiguously over shards."""
    import webdataset as wds

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    masks, colours = class_glyphs(num_classes, glyph_seed)
    rng = np.random.default_rng(seed)
    per_shard = -(-num_classes // shards)
    counts = {}
    for k in range(shards):
        name = f"shard-{k:06d}"
        ids = range(k * per_shard, min(num_classes, (k + 1) * per_shard))
        n = 0
        with wds.TarWriter(str(root / f"{name}.tar")) as sink:
            for identity in ids:
                for index in range(images_per_class):
                    image = render(masks[identity], colours[identity], rng)
                    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
                    assert ok
                    sink.write(
                        {
                            "__key__": f"{identity:07d}_{index:03d}",
                            "jpg": jpg.tobytes(),
                            "cls": str(identity).encode(),
                            "json": json.dumps({"id": identity, "index": index}).encode(),
                        }
                    )
                    n += 1
        (root / f"{name}.json").write_text(json.dumps({"shard": name, "num_samples": n}))
        counts[name] = n
    (root / "dataset.json").write_text(
        json.dumps({"num_classes": num_classes, "num_images": sum(counts.values()), "shards": counts})
    )
    (root / "sizes.json").write_text(json.dumps({f"{k}.tar": v for k, v in counts.items()}))
    return root
