"""Training throughput (images/s) of the backbones: the numbers behind ``synthface bench train``.

Each measurement runs full training steps (forward, margin loss, backward,
SGD) on random images held in memory, so it measures the model, not the data
pipeline. The first backbone measured is the baseline the others are
compared with, in the same run.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

import torch

from bench.runner import load_average, resolve_device, warn_if_loaded, write_result
from eval.backbones import BACKBONES, build_backbone
from eval.config import LossConfig
from eval.losses import build_head
from eval.train import TrainModule


def measure(backbone: str, batch_size: int, steps: int, warmup: int, device: str, amp: bool, num_classes: int = 1000) -> dict:
    torch.manual_seed(0)
    dev = torch.device(device)
    amp = amp and dev.type == "cuda"
    module = TrainModule(build_backbone(backbone), build_head(LossConfig(), num_classes, 512), amp).to(dev).train()
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.01, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    images = torch.randint(0, 256, (batch_size, 3, 112, 112), dtype=torch.uint8, device=dev)
    labels = torch.randint(0, num_classes, (batch_size,), device=dev)

    def step():
        loss = module(images, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(module.parameters(), 5.0)
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {
        "backbone": backbone,
        "device": dev.type,
        "amp": amp,
        "batch_size": batch_size,
        "steps": steps,
        "seconds": round(seconds, 3),
        "images_per_s": round(steps * batch_size / seconds, 2),
        "threads": torch.get_num_threads(),
    }


def train_bench(backbones: list[str] | None, batch_size: int, steps: int, warmup: int, device: str | None, amp: bool,
                echo: Callable[[str], None] = print, json_path: str | None = None) -> dict:
    """Every backbone (fp32, and AMP too on CUDA), images/s with the ratio to the first; the
    result also written to ``json_path``."""
    from synthface.errors import ConfigError

    names = backbones or []
    unknown = [b for b in names if b not in BACKBONES]
    if not names or unknown:
        raise ConfigError(f"--backbones: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(BACKBONES)}")
    device = str(resolve_device(device))
    runs = []
    for name in names:
        for use_amp in [False, True] if device.startswith("cuda") and amp else [False]:
            runs.append(measure(name, batch_size, steps, warmup, device, use_amp))
    base = runs[0]["images_per_s"]
    echo(f"training throughput on {device} (batch {batch_size}, {steps} timed steps, torch threads {runs[0]['threads']}):")
    for r in runs:
        r["ratio_to_baseline"] = round(r["images_per_s"] / base, 3)
        label = f"{r['backbone']}{' amp' if r['amp'] else ''}"
        echo(f"  {label:<22} {r['images_per_s']:>9.1f} images/s   x{r['ratio_to_baseline']:.3f} vs {runs[0]['backbone']}")
    warn_if_loaded(echo)
    result = {"device": device, "runs": runs}
    write_result(json_path, result)
    return result


# ---------------------------------------------------------------------------
# The training reader (eval/data.py) against bare JPEG decoding of the same bytes

READER_IMAGES = 10_000  # timed images per measurement: CPU-second figures settle at about this many
FACE_DATASET_IMAGES = 4_000


def _cpu_seconds(proc) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _child_cpu(proc) -> float:
    """CPU seconds of the (live) children of this process: the loader workers."""
    import psutil

    total = 0.0
    for child in proc.children(recursive=True):
        try:
            total += _cpu_seconds(child)
        except psutil.NoSuchProcess:  # a child that just exited
            continue
    return total


def read_jpegs(spec, limit: int | None = None) -> list[bytes]:
    """The ``jpg`` bytes of a dataset's samples in shard order (the first ``limit``)."""
    import fsspec

    from eval.tarstream import iter_samples

    out: list[bytes] = []
    for url in spec.urls:
        with fsspec.open(url, "rb") as f:
            for _, (jpg,) in iter_samples(f, url, ("jpg",)):
                if jpg is not None:
                    out.append(jpg)
                    if limit is not None and len(out) >= limit:
                        return out
    return out


def write_face_dataset(root: str, bins: list, images: int = FACE_DATASET_IMAGES, shards: int = 4, per_class: int = 40) -> str:
    """A dataset root of real aligned 112x112 face crops (the ``.bin`` files' images),
    repeated to ``images`` samples (every other repeat mirrored, so no two shards hold
    the same bytes), written by the factory's own shard writer (PIL JPEG quality 95)."""
    import json

    import numpy as np

    from eval.verification import load_bin
    from synthface.shards.storage import Output
    from synthface.shards.writer import ShardWriter

    crops = np.concatenate([load_bin(path).images for path in bins])
    out = Output(root)
    out.makedirs()
    per_shard = -(-images // shards)
    for k in range(shards):
        writer = ShardWriter(out, k)
        for i in range(k * per_shard, min(images, (k + 1) * per_shard)):
            crop = crops[i % len(crops)]
            writer.add_sample(i // per_class, i % per_class, crop[:, ::-1] if (i // len(crops)) % 2 else crop, {})
        writer.commit({})
    meta = {"num_classes": -(-images // per_class), "num_images": images}
    (Path(root) / "dataset.json").write_text(json.dumps(meta))
    return root


def _decoders():
    """Bare decoders of 112x112 JPEG bytes: name -> (decode, what it is)."""
    import cv2
    import numpy as np
    import simplejpeg

    row = np.empty((112, 112, 3), np.uint8)
    return {
        "simplejpeg": (lambda b: simplejpeg.decode_jpeg(b, colorspace="RGB"), "libjpeg-turbo to RGB, a new array per image: the baseline"),
        "simplejpeg into a row": (
            lambda b: simplejpeg.decode_jpeg(b, colorspace="RGB", buffer=row), "the same into a preallocated row, as the reader decodes"
        ),
        "simplejpeg fast": (
            lambda b: simplejpeg.decode_jpeg(b, colorspace="RGB", fastdct=True, fastupsample=True),
            "fastdct + fastupsample (other pixels: see the difference)",
        ),
        "opencv": (
            lambda b: cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB),
            "cv2.imdecode + BGR->RGB",
        ),
    }


def _decode_times(fn, jpegs: list[bytes], images: int) -> tuple[int, float, float]:
    """``fn`` over ``jpegs`` in order, whole passes, at least ``images`` decodes:
    (decodes, CPU seconds, wall seconds)."""
    passes = max(1, -(-images // len(jpegs)))
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(passes):
        for b in jpegs:
            fn(b)
    return passes * len(jpegs), time.process_time() - c0, time.perf_counter() - t0


def measure_decode(jpegs: list[bytes], min_images: int = READER_IMAGES) -> dict:
    """Each bare decoder over ``jpegs`` (whole passes, at least ``min_images`` decodes) in
    this process: images per CPU-second and per wall-second."""
    import cv2

    cv2.setNumThreads(1)
    out = {}
    for name, (fn, about) in _decoders().items():
        fn(jpegs[0])
        n, cpu, wall = _decode_times(fn, jpegs, min_images)
        out[name] = {"images": n, "per_cpu_s": n / cpu, "per_wall_s": n / wall, "about": about}
    return out


def fast_decode_difference(jpegs: list[bytes]) -> dict:
    """Pixel difference of fastdct + fastupsample against default decoding (uint8 levels)."""
    import numpy as np
    import simplejpeg

    worst, total, count = 0, 0.0, 0
    for b in jpegs:
        exact = simplejpeg.decode_jpeg(b, colorspace="RGB").astype(np.int16)
        fast = simplejpeg.decode_jpeg(b, colorspace="RGB", fastdct=True, fastupsample=True).astype(np.int16)
        d = np.abs(fast - exact)
        worst, total, count = max(worst, int(d.max())), total + float(d.sum()), count + d.size
    return {"max": worst, "mean": total / count}


def bare_decode_rate(jpegs: list[bytes], images: int = 3_000) -> float:
    """The baseline decoder (simplejpeg) over ``jpegs``, per CPU-second, at least ``images`` decodes."""
    n, cpu, _ = _decode_times(_decoders()["simplejpeg"][0], jpegs, images)
    return n / cpu


def measure_reader(spec, data_cfg, workers: int, batches: int, warmup: int = 5) -> dict:
    """The training loader (decode + augment + batch in ``workers`` processes, or in this one
    with 0): images per CPU-second of all its processes (= per core) and per wall-second."""
    import psutil

    from eval.data import make_loader

    cfg = data_cfg.model_copy(update={"num_workers": workers})
    proc = psutil.Process()
    it = iter(make_loader(spec, cfg, seed=0))
    for _ in range(warmup):  # worker start-up and the shuffle buffer's first fill
        next(it)
    m0, w0, t0 = _cpu_seconds(proc), _child_cpu(proc), time.perf_counter()
    images = 0
    for _ in range(batches):
        x, _ = next(it)
        images += x.shape[0]
    main, kids, wall = _cpu_seconds(proc) - m0, _child_cpu(proc) - w0, time.perf_counter() - t0
    del it
    return {
        "workers": workers,
        "images": images,
        "per_cpu_s": images / max(main + kids, 0.01),  # one clock tick: the resolution of process CPU times
        "per_wall_s": images / wall,
        "main_us_per_image": main / images * 1e6,
        "workers_us_per_image": kids / images * 1e6,
        "shape": [cfg.batch_size, 3, 112, 112],
    }


def _temporary_dataset(tmp: str, faces: bool, echo: Callable[[str], None]) -> str:
    if faces:
        from bench.runner import assets_dir
        from synthface.errors import InputDataError

        folder = assets_dir() / "verification"
        bins = sorted(folder.glob("*.bin"))
        if not bins:
            raise InputDataError(f"--faces: no verification .bin files in {folder} (set SYNTHFACE_ASSETS to the shared assets)")
        root = write_face_dataset(os.path.join(tmp, "faces"), bins)
        echo(
            f"dataset: real aligned face crops from {', '.join(b.name for b in bins)}, repeated to "
            f"{FACE_DATASET_IMAGES:,} samples in 4 shards by the factory's shard writer (JPEG quality 95) ({root})"
        )
        return root
    from eval.toydata import write_pattern_dataset

    root = str(write_pattern_dataset(os.path.join(tmp, "ds"), num_classes=100, images_per_class=40, shards=4))
    echo(f"dataset: temporary pattern dataset, 4,000 noisy 112x112 JPEGs in 4 shards ({root})")
    return root


def reader_bench(data: str | None, workers: list[int] | None, batch_size: int, batches: int | None, shuffle_buffer: int,
                 echo: Callable[[str], None] = print, json_path: str | None = None, faces: bool = False,
                 rounds: int = 3) -> dict:
    """`bench train --reader-only`: the loader's images per CPU-second (per core) and per
    wall-second for each worker count, against bare decoding of the same JPEG bytes in the
    same run. ``rounds`` times: every bare decoder, then the loader at each worker count;
    each loader figure is divided by bare simplejpeg decoding measured just before and
    after it, and the medians over rounds are reported (this VM's speed drifts by 10-20 %
    within seconds).
    Without ``data``: a temporary dataset of real face crops (``faces``) or of noisy patterns."""
    from eval.config import DataConfig
    from eval.data import resolve_dataset
    from synthface.errors import ConfigError

    if not workers or min(workers) < 0:
        raise ConfigError("--workers: give worker counts >= 0")
    if data is not None and faces:
        raise ConfigError("--faces builds its own dataset: give --data or --faces, not both")
    if rounds < 1:
        raise ConfigError("--rounds: give at least 1")
    batches = batches or -(-READER_IMAGES // batch_size)
    with tempfile.TemporaryDirectory(prefix="synthface-reader-") as tmp:
        label = data or ("faces" if faces else "pattern")
        if data is None:
            data = _temporary_dataset(tmp, faces, echo)
        else:
            echo(f"dataset: {data}")
        spec = resolve_dataset(data)
        cfg = DataConfig(batch_size=batch_size, shuffle_buffer=shuffle_buffer)
        echo(
            f"cpu cores {os.cpu_count()}, load average at start {load_average():.2f}; batch {batch_size}, "
            f"{batches} timed batches ({batches * batch_size:,} images) per worker count and round, {rounds} rounds; "
            f"augmentation: flip {cfg.flip}, colour jitter {cfg.color_jitter}, greyscale {cfg.grayscale_prob}; "
            f"shuffle buffer {shuffle_buffer}"
        )
        jpegs = read_jpegs(spec)
        decode_rounds, reader_rounds = [], []
        for _ in range(rounds):
            decode_rounds.append(measure_decode(jpegs, batches * batch_size))
            reader_rounds.append([])
            for w in workers:
                # this VM's speed drifts within seconds: each loader figure is divided by bare
                # decoding measured just before and just after it
                before = bare_decode_rate(jpegs)
                r = measure_reader(spec, cfg, w, batches)
                base = (before + bare_decode_rate(jpegs)) / 2
                r.update(load=load_average(), bare_per_cpu_s=base, ratio_to_decode=r["per_cpu_s"] / base)
                reader_rounds[-1].append(r)
    decode = {}
    for name, first in decode_rounds[0].items():
        per_round = [d[name]["per_cpu_s"] for d in decode_rounds]
        ratios = [d[name]["per_cpu_s"] / d["simplejpeg"]["per_cpu_s"] for d in decode_rounds]
        decode[name] = {"images": first["images"], "about": first["about"], "per_cpu_s": median(per_round),
                        "per_cpu_s_rounds": per_round, "ratio_to_decode": median(ratios)}
    runs = []
    for k, w in enumerate(workers):
        per_round = [rs[k] for rs in reader_rounds]
        runs.append({
            "workers": w,
            "images": per_round[0]["images"],
            "shape": per_round[0]["shape"],
            **{key: median([r[key] for r in per_round])
               for key in ("per_cpu_s", "bare_per_cpu_s", "ratio_to_decode", "per_wall_s", "main_us_per_image",
                           "workers_us_per_image", "load")},
            "per_cpu_s_rounds": [r["per_cpu_s"] for r in per_round],
            "bare_per_cpu_s_rounds": [r["bare_per_cpu_s"] for r in per_round],
            "ratio_rounds": [r["ratio_to_decode"] for r in per_round],
        })
    difference = fast_decode_difference(jpegs[:1000])
    echo(
        f"bare decoding of the dataset's {len(jpegs):,} JPEGs (mean {sum(map(len, jpegs)) / len(jpegs):,.0f} bytes), "
        f"{decode['simplejpeg']['images']:,} decodes per round, one process (median of the rounds; each round):"
    )
    for name, r in decode.items():
        rounds_text = " / ".join(f"{v:,.0f}" for v in r["per_cpu_s_rounds"])
        echo(f"  {name:<22} {r['per_cpu_s']:>7,.0f} images per CPU-second ({rounds_text}) = {r['ratio_to_decode']:.2f} x simplejpeg; {r['about']}")
    echo(f"  (simplejpeg fast vs default pixels: max difference {difference['max']}, mean {difference['mean']:.2f} levels)")
    for r in runs:
        where = "in this process" if r["workers"] == 0 else f"{r['workers']} worker(s)"
        ratios = " / ".join(f"{v:.2f}" for v in r["ratio_rounds"])
        echo(
            f"reader, {where}: {r['per_cpu_s']:>7,.0f} images per CPU-second (all loader processes) = "
            f"{r['ratio_to_decode']:.2f} x bare simplejpeg decoding measured around it ({r['bare_per_cpu_s']:,.0f}; "
            f"rounds: {ratios}); CPU per image "
            f"{r['workers_us_per_image']:.0f} us in workers + {r['main_us_per_image']:.0f} us in the training process; "
            f"{r['per_wall_s']:,.0f} images per wall-second; load {r['load']:.1f}"
        )
    echo(f"load average at end {load_average():.2f}: per CPU-second figures hold under load better than per wall-second ones")
    warn_if_loaded(echo)
    result = {"dataset": label, "rounds": rounds, "decode": decode, "fast_decode_difference": difference, "reader": runs}
    write_result(json_path, result)
    return result
