"""Face-recognition backbones: ``build_backbone(name)`` and the input convention."""

from __future__ import annotations

import torch
from torch import nn

from eval.backbones.iresnet import IRESNET_LAYERS, IResNet, iresnet
from eval.backbones.mobilefacenet import MobileFaceNet

BACKBONES = ("mobilefacenet", "iresnet18", "iresnet50", "iresnet100")
INPUT_SIZE = 112


def build_backbone(name: str, embedding_size: int = 512, dropout: float = 0.0) -> nn.Module:
    """A freshly initialised backbone by name (see :data:`BACKBONES`)."""
    if name == "mobilefacenet":
        return MobileFaceNet(embedding_size=embedding_size)
    if name in IRESNET_LAYERS:
        return iresnet(name, embedding_size=embedding_size, dropout=dropout)
    raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 (or 0..255 float) ``[N,3,H,W]`` RGB -> the backbones' input, ``(x/255-0.5)/0.5``."""
    return images.float().div_(255.0).sub_(0.5).div_(0.5)


__all__ = ["BACKBONES", "INPUT_SIZE", "IResNet", "MobileFaceNet", "build_backbone", "normalize_images"]
