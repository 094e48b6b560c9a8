"""Margin-softmax heads for face recognition.

A head owns the class centres ``W`` (``num_classes x embedding_size``) and
turns (embeddings, labels) into a cross-entropy loss over scaled cosine
logits with a margin on the true class:

- combined margin (insightface): ``s * (cos(m1 * theta + m2) - m3)`` on the
  target; ArcFace is ``m2 = 0.5``, CosFace ``m3 = 0.4``.
- AdaFace (Kim et al., CVPR 2022): the margin adapts to the embedding norm, a
  proxy for image quality; hard (low-norm) images get a smaller margin.

Partial FC (An et al., CVPR 2022) is optional class sampling: each step uses
the batch's own classes plus random other classes up to ``sample_rate * C``,
so the softmax stays cheap for very large class counts. Here the centres are
replicated on every rank (not sharded across GPUs as in insightface); that is
fine for up to a few hundred thousand classes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MarginHead(nn.Module):
    """Class centres + margin logits + optional partial-FC sampling."""

    def __init__(self, num_classes: int, embedding_size: int, scale: float = 64.0, sample_rate: float = 1.0):
        super().__init__()
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError("sample_rate must be in (0, 1]")
        self.num_classes = num_classes
        self.scale = scale
        self.sample_rate = sample_rate
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size).normal_(0, 0.01))

    def sample_classes(self, labels: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Partial FC: (indices of the sampled centres or None for all, labels remapped to them)."""
        num_sample = math.ceil(self.sample_rate * self.num_classes)
        if num_sample >= self.num_classes or not self.training:
            return None, labels
        positive = torch.unique(labels)  # sorted
        # Random scores, positives forced to the top, keep the best num_sample.
        score = torch.rand(self.num_classes, device=labels.device)
        score[positive] = 2.0
        index = torch.topk(score, k=max(num_sample, positive.numel()), sorted=False).indices
        index = torch.sort(index).values
        remapped = torch.searchsorted(index, labels)
        return index, remapped

    def margin_logits(self, cosine: torch.Tensor, labels: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy loss of a batch; ``embeddings`` are the raw backbone outputs."""
        embeddings = embeddings.float()
        norms = embeddings.norm(dim=1, keepdim=True).clamp_min(1e-5)
        index, labels = self.sample_classes(labels)
        weight = self.weight if index is None else self.weight[index]
        cosine = F.linear(embeddings / norms, F.normalize(weight, dim=1)).clamp(-1.0, 1.0)
        return F.cross_entropy(self.margin_logits(cosine, labels, norms), labels)

    @torch.no_grad()
    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Plain cosine logits over all classes (no margin), for accuracy checks."""
        return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight, dim=1))


class CombinedMarginHead(MarginHead):
    """``s * (cos(m1*theta + m2) - m3)`` on the target class, ``s * cos(theta)`` elsewhere."""

    def __init__(self, num_classes, embedding_size, scale=64.0, m1=1.0, m2=0.5, m3=0.0, sample_rate=1.0):
        super().__init__(num_classes, embedding_size, scale, sample_rate)
        self.m1, self.m2, self.m3 = m1, m2, m3

    def margin_logits(self, cosine, labels, norms):
        rows = torch.arange(cosine.size(0), device=cosine.device)
        target = cosine[rows, labels]
        if self.m1 == 1.0 and self.m3 == 0.0 and self.m2 > 0:
            # ArcFace. Where theta + m2 would pass pi, cos stops decreasing, so
            # fall back to a CosFace-like penalty there (insightface does the same).
            sin_m, cos_m = math.sin(self.m2), math.cos(self.m2)
            sin_t = torch.sqrt((1.0 - target**2).clamp_min(0.0))
            with_margin = target * cos_m - sin_t * sin_m
            th, mm = math.cos(math.pi - self.m2), math.sin(math.pi - self.m2) * self.m2
            with_margin = torch.where(target > th, with_margin, target - mm)
        else:
            theta = torch.acos(target.clamp(-1 + 1e-7, 1 - 1e-7))
            with_margin = torch.cos(self.m1 * theta + self.m2) - self.m3
        logits = cosine.clone()
        logits[rows, labels] = with_margin
        return logits * self.scale


class AdaFaceHead(MarginHead):
    """AdaFace: angular and additive margins scaled by the normalised feature norm.

    The norm is standardised with a running mean/std of batch norms (momentum
    ``t``), scaled by ``h`` and clipped to [-1, 1]; high-quality (large-norm)
    samples get more angular margin, low-quality ones less.
    """

    def __init__(self, num_classes, embedding_size, scale=64.0, m=0.4, h=0.333, t_alpha=0.01, sample_rate=1.0):
        super().__init__(num_classes, embedding_size, scale, sample_rate)
        self.m, self.h, self.t_alpha = m, h, t_alpha
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))

    def margin_logits(self, cosine, labels, norms):
        safe = norms.detach().squeeze(1)
        if self.training:
            with torch.no_grad():
                self.batch_mean.mul_(1 - self.t_alpha).add_(self.t_alpha * safe.mean())
                self.batch_std.mul_(1 - self.t_alpha).add_(self.t_alpha * safe.std(unbiased=False))
        scaler = ((safe - self.batch_mean) / (self.batch_std + 1e-3) * self.h).clamp(-1.0, 1.0)
        rows = torch.arange(cosine.size(0), device=cosine.device)
        target = cosine[rows, labels].clamp(-1 + 1e-3, 1 - 1e-3)
        theta = torch.acos(target) + (-self.m * scaler)  # angular margin g_angle
        theta = theta.clamp(1e-3, math.pi - 1e-3)
        with_margin = torch.cos(theta) - (self.m + self.m * scaler)  # additive margin g_add
        logits = cosine.clone()
        logits[rows, labels] = with_margin
        return logits * self.scale


def build_head(cfg, num_classes: int, embedding_size: int) -> MarginHead:
    """The head described by a :class:`eval.config.LossConfig`."""
    if cfg.type == "adaface":
        return AdaFaceHead(num_classes, embedding_size, cfg.scale, m=cfg.adaface_m, h=cfg.adaface_h, sample_rate=cfg.sample_rate)
    m1, m2, m3 = {"arcface": (1.0, cfg.arcface_m2, 0.0), "cosface": (1.0, 0.0, cfg.cosface_m3)}.get(
        cfg.type, (cfg.m1, cfg.m2, cfg.m3)
    )
    return CombinedMarginHead(num_classes, embedding_size, cfg.scale, m1, m2, m3, sample_rate=cfg.sample_rate)
