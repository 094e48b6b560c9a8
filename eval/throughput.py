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
