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


def _cpu_seconds(proc) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _tree_cpu(proc) -> float:
    """CPU seconds of this process and its (live) children: the loader workers."""
    total = _cpu_seconds(proc)
    for child in proc.children(recursive=True):
        try:
            total += _cpu_seconds(child)
        except Exception:  # a child that just exited
            pass
    return total


def read_jpegs(spec, limit: int) -> list[bytes]:
    """The ``jpg`` bytes of the first ``limit`` samples of a dataset (the decode baseline's input)."""
    from eval.tarstream import fast_tar_expander

    out: list[bytes] = []
    for url in spec.urls:
        import fsspec

        with fsspec.open(url, "rb") as f:
            for m in fast_tar_expander([{"url": url, "stream": f}], suffixes=("jpg",)):
                if m:
                    out.append(m["data"])
                    if len(out) >= limit:
                        return out
    return out


def measure_decode(jpegs: list[bytes]) -> dict:
    """Bare JPEG decoding (simplejpeg to RGB, and OpenCV decode + BGR->RGB) in this process."""
    import cv2
    import numpy as np
    import psutil
    import simplejpeg

    proc = psutil.Process()
    cv2.setNumThreads(1)
    out = {}
    for name, fn in (
        ("simplejpeg", lambda b: simplejpeg.decode_jpeg(b, colorspace="RGB")),
        ("opencv", lambda b: cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)),
    ):
        fn(jpegs[0])
        c0, t0 = _cpu_seconds(proc), time.perf_counter()
        for b in jpegs:
            fn(b)
        cpu, wall = _cpu_seconds(proc) - c0, time.perf_counter() - t0
        out[name] = {"images": len(jpegs), "per_cpu_s": len(jpegs) / cpu, "per_wall_s": len(jpegs) / wall}
    return out


def measure_reader(spec, data_cfg, workers: int, batches: int, warmup: int = 3) -> dict:
    """The training DataLoader (decode + augment + batch in ``workers`` processes): images per
    CPU-second of all loader processes (= per core) and per wall-second."""
    import psutil

    from eval.data import make_loader

    cfg = data_cfg.model_copy(update={"num_workers": workers})
    proc = psutil.Process()
    it = iter(make_loader(spec, cfg, seed=0))
    for _ in range(warmup):  # worker start-up and the shuffle buffer's first fill
        next(it)
    c0, t0 = _tree_cpu(proc), time.perf_counter()
    images = 0
    for _ in range(batches):
        x, _ = next(it)
        images += x.shape[0]
    cpu, wall = _tree_cpu(proc) - c0, time.perf_counter() - t0
    del it
    return {
        "workers": workers,
        "images": images,
        "per_cpu_s": images / cpu,
        "per_wall_s": images / wall,
        "per_wall_s_per_worker": images / wall / max(workers, 1),
        "shape": [cfg.batch_size, 3, 112, 112],
    }


def reader_bench(data: str | None, workers: list[int] | None, batch_size: int, batches: int, shuffle_buffer: int,
                 echo: Callable[[str], None] = print, json_path: str | None = None) -> dict:
    """`bench train --reader-only`: the DataLoader's images per CPU-second (per core) and per
    wall-second, for each worker count, against bare decoding of the same JPEG bytes; without
    ``data``, a temporary pattern dataset."""
    from eval.config import DataConfig
    from eval.data import resolve_dataset
    from synthface.errors import ConfigError

    if not workers or min(workers) < 0:
        raise ConfigError("--workers: give worker counts >= 0")
    with tempfile.TemporaryDirectory(prefix="synthface-reader-") as tmp:
        if data is None:
            from eval.toydata import write_pattern_dataset

            data = str(write_pattern_dataset(os.path.join(tmp, "ds"), num_classes=100, images_per_class=40, shards=4))
            echo(f"dataset: temporary pattern dataset, 4,000 JPEGs of 112x112 in 4 shards ({data})")
        spec = resolve_dataset(data)
        cfg = DataConfig(batch_size=batch_size, shuffle_buffer=shuffle_buffer)
        echo(
            f"cpu cores {os.cpu_count()}, load average at start {load_average():.2f}; batch {batch_size}, "
            f"augmentation: flip {cfg.flip}, colour jitter {cfg.color_jitter}, greyscale {cfg.grayscale_prob}; shuffle buffer {shuffle_buffer}"
        )
        jpegs = read_jpegs(spec, 2000)
        decode = measure_decode(jpegs)
        base = decode["simplejpeg"]["per_cpu_s"]
        echo(f"bare decoding of {len(jpegs):,} JPEGs from the shards (mean {sum(map(len, jpegs)) / len(jpegs):,.0f} bytes), one process:")
        for name, r in decode.items():
            echo(f"  {name:<12} {r['per_cpu_s']:>8.0f} images per CPU-second  {r['per_wall_s']:>8.0f} per wall-second")
        runs = []
        for w in workers:
            r = measure_reader(spec, cfg, w, batches)
            r["ratio_to_decode"] = r["per_cpu_s"] / base
            r["load"] = load_average()
            runs.append(r)
            echo(
                f"reader, {w} worker(s): {r['per_cpu_s']:>8.0f} images per CPU-second (all loader processes) = "
                f"{r['ratio_to_decode']:.2f} x bare simplejpeg decoding; {r['per_wall_s']:.0f} images per wall-second "
                f"({r['per_wall_s_per_worker']:.0f} per worker); load {r['load']:.1f}"
            )
    echo(f"load average at end {load_average():.2f}: per CPU-second figures hold under load better than per wall-second ones")
    warn_if_loaded(echo)
    result = {"decode": decode, "reader": runs}
    write_result(json_path, result)
    return result
