"""Training throughput (images/s) of the backbones: the numbers behind ``synthface bench train``.

Each measurement runs full training steps (forward, margin loss, backward,
SGD) on random images held in memory, so it measures the model, not the data
pipeline. The first backbone measured is the baseline the others are
compared with, in the same run.
"""

from __future__ import annotations

import time

import torch

from eval.backbones import build_backbone
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
