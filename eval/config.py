"""Config of downstream FR training and the verification benchmark.

One YAML file (e.g. ``configs/benchmark.yaml``) with the sections below drives
``synthface train`` and ``synthface benchmark``; defaults are production
defaults (IResNet-50, ArcFace, the insightface recipe).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from synthface.config import StrictModel, load_config

BackboneName = Literal["mobilefacenet", "iresnet18", "iresnet50", "iresnet100"]


class ModelConfig(StrictModel):
    backbone: BackboneName = Field("iresnet50", description="Backbone architecture.")
    embedding_size: int = Field(512, ge=16, le=4096, description="Embedding dimension (BN head output).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the FC layer (IResNets only).")


class LossConfig(StrictModel):
    type: Literal["arcface", "cosface", "combined", "adaface"] = Field(
        "arcface", description="arcface: m2 margin; cosface: m3 margin; combined: m1/m2/m3 as given; adaface."
    )
    scale: float = Field(64.0, gt=0.0, le=256.0, description="Logit scale s.")
    arcface_m2: float = Field(0.5, ge=0.0, le=1.5, description="Additive angular margin of ArcFace.")
    cosface_m3: float = Field(0.4, ge=0.0, le=1.0, description="Additive cosine margin of CosFace.")
    m1: float = Field(1.0, ge=0.5, le=2.0, description="Multiplicative angular margin (type: combined).")
    m2: float = Field(0.0, ge=0.0, le=1.5, description="Additive angular margin (type: combined).")
    m3: float = Field(0.0, ge=0.0, le=1.0, description="Additive cosine margin (type: combined).")
    adaface_m: float = Field(0.4, ge=0.0, le=1.0, description="AdaFace margin m.")
    adaface_h: float = Field(0.333, gt=0.0, le=1.0, description="AdaFace norm concentration h.")
    sample_rate: float = Field(
        1.0, gt=0.0, le=1.0, description="Partial FC: fraction of class centres used per step (1 = all)."
    )


class DataConfig(StrictModel):
    batch_size: int = Field(128, ge=1, le=8192, description="Images per step per process.")
    num_workers: int = Field(2, ge=0, le=64, description="Loader worker processes (decode + augment) per training process.")
    shuffle_buffer: int = Field(10_000, ge=0, le=1_000_000, description="Samples held for shuffling (0 = off).")
    flip: bool = Field(True, description="Random horizontal flip.")
    color_jitter: float = Field(
        0.0, ge=0.0, le=1.0, description="Random brightness/contrast/saturation change up to this fraction."
    )
    grayscale_prob: float = Field(0.0, ge=0.0, le=1.0, description="Probability of converting to grey.")
    worker_timeout_s: float = Field(
        600.0,
        ge=0.0,
        description="Seconds to wait for a loader worker's next batch before failing (0 = forever): "
        "a shard read that hangs becomes an error, not a stalled run.",
    )


class OptimConfig(StrictModel):
    lr: float = Field(0.1, gt=0.0, le=10.0, description="Peak SGD learning rate.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0, le=0.1)
    epochs: int = Field(20, ge=1, le=1000, description="Passes over the dataset (num_images per epoch).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps (None = epochs decide).")
    warmup_epochs: float = Field(0.0, ge=0.0, le=100.0, description="Linear warm-up length, in epochs.")
    poly_power: float = Field(2.0, ge=0.0, le=10.0, description="Polynomial decay power after warm-up.")
    grad_clip: float | None = Field(5.0, gt=0.0, description="Max global gradient norm (None = no clipping).")


class TrainConfig(StrictModel):
    amp: bool = Field(True, description="Mixed precision (float16 autocast) on CUDA; ignored on CPU.")
    log_every: int = Field(50, ge=1, description="Steps between log lines / CSV rows.")
    checkpoint_every: int = Field(1000, ge=1, description="Steps between checkpoints (plus one per epoch).")
    threads: int | None = Field(None, ge=1, le=1024, description="torch CPU threads per process (None = default).")
    bn_recalibration_steps: int = Field(
        0,
        ge=0,
        le=10_000,
        description=(
            "After training, re-estimate BatchNorm statistics over this many batches with frozen weights. "
            "Short runs need it: the running averages lag behind fast-changing weights. 0 = off."
        ),
    )


class VerifyConfig(StrictModel):
    batch_size: int = Field(128, ge=1, le=8192, description="Images per embedding batch.")
    flip: bool = Field(True, description="Add the embedding of the horizontally flipped image (insightface).")
    folds: int = Field(10, ge=2, le=100, description="Cross-validation folds for the accuracy.")
    far: float = Field(1e-3, gt=0.0, lt=1.0, description="False accept rate for the TAR@FAR figure.")
    onnx_input: Literal["auto", "raw", "normalized"] = Field(
        "auto",
        description=(
            "ONNX recognizers: 'raw' feeds 0..255 RGB (normalisation inside the graph), 'normalized' feeds "
            "(x-127.5)/127.5, 'auto' looks at the graph's first ops."
        ),
    )


class EvalConfig(StrictModel):
    seed: int = Field(0, ge=0, description="Seed of initialisation, shuffling and augmentation.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)


def load_eval_config(path=None, overrides=None) -> EvalConfig:
    return load_config(EvalConfig, path, overrides)
