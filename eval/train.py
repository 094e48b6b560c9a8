"""Training an FR backbone on the factory's shards.

One process per device. Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) the
processes form a DDP group (NCCL on CUDA, gloo on CPU) and each reads its own
slice of the shards. Only rank 0 writes to the run folder:

- ``run.json``: config, dataset, world size, status and summary,
- ``checkpoint.pt``: latest resumable state (written atomically),
- ``backbone.pt``: final backbone weights (what ``synthface benchmark`` scores),
- ``train_log.csv`` (+ ``tensorboard/`` when TensorBoard is installed).

Re-running into the same folder resumes from ``checkpoint.pt``: the
optimiser, schedule and step continue exactly; the data order after a resume
is a fresh seeded shuffle.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from eval.backbones import build_backbone, normalize_images
from eval.config import EvalConfig
from eval.data import make_loader, resolve_dataset
from eval.embedders import CHECKPOINT, FINAL_WEIGHTS
from eval.losses import build_head
from synthface.config import changed_keys, config_hash
from synthface.errors import RunStateError
from synthface.files import atomic_path, write_json_atomic

CHECKPOINT_FORMAT = "synthface-fr/1"
# Config keys that may change between a run and its resume: execution settings,
# and max_steps (to stop early or train longer; the decay is recomputed).
RESUMABLE_CHANGES = ("train", "verify", "data.num_workers", "data.worker_timeout_s", "optim.max_steps")


class TrainModule(nn.Module):
    """Backbone + margin head: (uint8 images, labels) -> loss. The unit DDP wraps."""

    def __init__(self, backbone: nn.Module, head: nn.Module, amp: bool):
        super().__init__()
        self.backbone, self.head, self.amp = backbone, head, amp

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.amp):
            embeddings = self.backbone(normalize_images(images))
        return self.head(embeddings.float(), labels)  # margins in float32


def learning_rate(step: int, base: float, warmup: int, total: int, power: float) -> float:
    """Linear warm-up to ``base`` over ``warmup`` steps, then polynomial decay to 0 at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * max(0.0, 1.0 - progress) ** power


def _comparable(cfg: dict) -> dict:
    cfg = json.loads(json.dumps(cfg))
    for key in RESUMABLE_CHANGES:
        section, _, leaf = key.partition(".")
        if leaf:
            cfg.get(section, {}).pop(leaf, None)
        else:
            cfg.pop(section, None)
    return cfg


def _atomic_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class _Logger:
    """Console lines, a CSV file and (if installed) TensorBoard; rank 0 only."""

    FIELDS = ("step", "epoch", "loss", "lr", "images_per_s", "elapsed_s")

    def __init__(self, out: Path, enabled: bool, echo):
        self.enabled, self.echo = enabled, echo
        self.tb = None
        if not enabled:
            return
        path = out / "train_log.csv"
        new = not path.exists()
        self.file = path.open("a", newline="", encoding="utf-8")
        self.csv = csv.DictWriter(self.file, fieldnames=self.FIELDS)
        if new:
            self.csv.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:  # TensorBoard is optional
            pass

    def info(self, text: str) -> None:
        if self.enabled:
            self.echo(text)

    def row(self, row: dict, total_steps: int, eta_s: float) -> None:
        if not self.enabled:
            return
        self.csv.writerow(row)
        self.file.flush()
        if self.tb is not None:
            for key in ("loss", "lr", "images_per_s"):
                self.tb.add_scalar(f"train/{key}", row[key], row["step"])
        self.echo(
            f"step {row['step']}/{total_steps} epoch {row['epoch']} loss {row['loss']:.4f} "
            f"lr {row['lr']:.5f} img/s {row['images_per_s']:.1f} eta {int(eta_s // 60)}m{int(eta_s % 60):02d}s"
        )

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def _setup_distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo", init_method="env://")
    return rank, world, device


@torch.no_grad()
def recalibrate_batchnorm(backbone: nn.Module, batches, steps: int, device: torch.device, amp: bool) -> None:
    """Re-estimate BatchNorm running statistics as exact averages over ``steps`` batches.

    The weights do not change. In long runs the running averages track the
    weights closely; after a few dozen steps they still mix in statistics of
    much earlier weights, which hurts the eval-mode embeddings.
    """
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    backbone.train()
    for _ in range(steps):
        images, _ = next(batches)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp):
            backbone(normalize_images(images.to(device, non_blocking=True)))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def _replicas_identical(module: nn.Module, world: int) -> bool:
    """True if every rank holds the same weights (a DDP sanity check at the end)."""
    if world == 1:
        return True
    with torch.no_grad():
        local = torch.stack([p.detach().double().sum() for p in module.parameters()]).cpu()
    gathered = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(gathered, local)
    return all(torch.allclose(g, gathered[0], rtol=1e-6, atol=1e-6) for g in gathered)


def train(cfg: EvalConfig, data: str, out: str | Path, echo=print) -> dict:
    """Train (or resume) into ``out``; returns the run summary (also in run.json)."""
    out = Path(out)
    rank, world, device = _setup_distributed()
    is_main = rank == 0
    try:
        return _train(cfg, data, out, rank, world, device, is_main, echo)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg, data, out, rank, world, device, is_main, echo) -> dict:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    spec = resolve_dataset(data)
    cfg_dump = cfg.model_dump(mode="json")
    ckpt_path, final_path, run_json = out / CHECKPOINT, out / FINAL_WEIGHTS, out / "run.json"

    global_batch = cfg.data.batch_size * world
    steps_per_epoch = max(1, spec.num_images // global_batch)
    total_steps = cfg.optim.epochs * steps_per_epoch
    if cfg.optim.max_steps is not None:
        total_steps = min(total_steps, cfg.optim.max_steps)
    warmup = round(cfg.optim.warmup_epochs * steps_per_epoch)

    torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts them)
    backbone = build_backbone(cfg.model.backbone, cfg.model.embedding_size, cfg.model.dropout)
    head = build_head(cfg.loss, spec.num_classes, cfg.model.embedding_size)
    amp = cfg.train.amp and device.type == "cuda"
    module = TrainModule(backbone, head, amp).to(device)
    optimizer = torch.optim.SGD(
        [p for p in module.parameters() if p.requires_grad],
        lr=cfg.optim.lr,
        momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay,
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    start_step = 0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise RunStateError(f"{ckpt_path}: not a synthface training checkpoint")
        changed = changed_keys(_comparable(state["config"]), _comparable(cfg_dump), with_values=False)
        if changed:
            raise RunStateError(
                f"{out} holds a run with a different config ({', '.join(changed)} differ); "
                "use another --out or the original config"
            )
        if state["dataset"]["num_classes"] != spec.num_classes or state["world_size"] != world:
            raise RunStateError(
                f"{out}: resume needs the same dataset classes ({state['dataset']['num_classes']}) and "
                f"process count ({state['world_size']}); got {spec.num_classes} and {world}"
            )
        module.backbone.load_state_dict(state["backbone"])
        module.head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_step = int(state["step"])
    if is_main:
        from synthface.local_dirs import ensure_dir

        ensure_dir(out, "--out")
    dataset_info = {**asdict(spec), "urls": len(spec.urls)}
    run_info = {
        "config": cfg_dump,
        "config_hash": config_hash(cfg),
        "dataset": dataset_info,
        "world_size": world,
        "device": str(device.type),
        "amp": amp,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "status": "running",
    }

    def checkpoint(step: int) -> None:
        if not is_main:
            return
        _atomic_save(
            {
                "format": CHECKPOINT_FORMAT,
                "model": cfg.model.model_dump(mode="json"),
                "config": cfg_dump,
                "dataset": dataset_info,
                "world_size": world,
                "step": step,
                "epoch": step // steps_per_epoch,
                "backbone": module.backbone.state_dict(),
                "head": module.head.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
            },
            ckpt_path,
        )

    log = _Logger(out, is_main, echo)
    if start_step >= total_steps and final_path.exists():
        log.info(f"{out}: training already finished ({total_steps} steps); nothing to do")
        log.close()
        return json.loads(run_json.read_text()) if run_json.exists() else run_info
    if is_main:
        write_json_atomic(run_json, run_info)
    log.info(
        f"training {cfg.model.backbone} + {cfg.loss.type} on {spec.num_images} images / {spec.num_classes} classes "
        f"({len(spec.urls)} shards), {world} process(es) on {device.type}, global batch {global_batch}, "
        f"{total_steps} steps" + (f", resuming at step {start_step}" if start_step else "")
    )

    model = module
    if world > 1:
        model = nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    loader = make_loader(spec, cfg.data, rank=rank, world_size=world, seed=cfg.seed * 100_003 + start_step)
    batches = iter(loader)
    params = [p for p in module.parameters() if p.requires_grad]

    module.train()
    window_loss, window_n, window_t0, t_start = 0.0, 0, time.perf_counter(), time.perf_counter()
    first_loss = last_loss = None
    step = start_step
    while step < total_steps:
        lr = learning_rate(step, cfg.optim.lr, warmup, total_steps, cfg.optim.poly_power)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, labels = next(batches)
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        loss = model(images, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.optim.grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        step += 1

        value = float(loss.detach())
        if not math.isfinite(value) and not amp:
            raise RunStateError(f"loss became {value} at step {step}; lower optim.lr or check the data")
        first_loss = value if first_loss is None else first_loss
        last_loss = value
        window_loss += value
        window_n += 1
        if step % cfg.train.log_every == 0 or step == total_steps:
            now = time.perf_counter()
            ips = window_n * global_batch / max(now - window_t0, 1e-9)
            log.row(
                {
                    "step": step,
                    "epoch": step // steps_per_epoch,
                    "loss": round(window_loss / window_n, 5),
                    "lr": round(lr, 7),
                    "images_per_s": round(ips, 2),
                    "elapsed_s": round(now - t_start, 2),
                },
                total_steps,
                eta_s=(total_steps - step) * global_batch / max(ips, 1e-9),
            )
            window_loss, window_n, window_t0 = 0.0, 0, time.perf_counter()
        if step % cfg.train.checkpoint_every == 0 or step % steps_per_epoch == 0 or step == total_steps:
            checkpoint(step)

    if cfg.train.bn_recalibration_steps and step > start_step:
        log.info(f"re-estimating BatchNorm statistics over {cfg.train.bn_recalibration_steps} batches")
        recalibrate_batchnorm(module.backbone, batches, cfg.train.bn_recalibration_steps, device, amp)
    in_sync = _replicas_identical(module, world)
    elapsed = time.perf_counter() - t_start
    summary = {
        **run_info,
        "status": "finished",
        "steps_run": step - start_step,
        "resumed_from": start_step,
        "first_loss": first_loss,
        "last_loss": last_loss,
        "images_per_s": (step - start_step) * global_batch / max(elapsed, 1e-9),
        "replicas_identical": in_sync,
    }
    if is_main:
        _atomic_save(
            {
                "format": CHECKPOINT_FORMAT,
                "model": cfg.model.model_dump(mode="json"),
                "loss": cfg.loss.model_dump(mode="json"),  # for the benchmark report's "our row"
                "dataset": dataset_info,
                "step": step,
                "epoch": step // steps_per_epoch,
                "backbone": module.backbone.state_dict(),
            },
            final_path,
        )
        write_json_atomic(run_json, summary)
        shown = "n/a" if last_loss is None else f"{last_loss:.4f}"
        log.info(f"done: {step} steps, last loss {shown}; weights in {final_path}")
    log.close()
    if not in_sync:
        raise RunStateError("DDP replicas diverged: the ranks hold different weights")
    return summary
