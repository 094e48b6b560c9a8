"""MobileFaceNet (Chen et al., 2018) for quick runs, in the insightface arrangement.

Depthwise-separable bottlenecks on a 112x112 input, a global depthwise conv
("GDC", a learned 7x7 weighting instead of average pooling: face crops are
aligned, so position matters), then linear + BatchNorm1d to the embedding.
Same input convention as the IResNets: ``(x / 255 - 0.5) / 0.5``.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Sequential):
    """conv - BN - (PReLU unless ``linear``)."""

    def __init__(self, cin, cout, kernel=1, stride=1, padding=0, groups=1, linear=False):
        layers = [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if not linear:
            layers.append(nn.PReLU(cout))
        super().__init__(*layers)


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expand, 3x3 depthwise (maybe strided), 1x1 linear project."""

    def __init__(self, cin, cout, stride=1, groups=1, residual=False):
        super().__init__()
        self.residual = residual
        self.body = nn.Sequential(
            ConvBlock(cin, groups),
            ConvBlock(groups, groups, kernel=3, stride=stride, padding=1, groups=groups),
            ConvBlock(groups, cout, linear=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def _residual_stage(channels: int, blocks: int, groups: int) -> nn.Sequential:
    return nn.Sequential(*[DepthWise(channels, channels, groups=groups, residual=True) for _ in range(blocks)])


class MobileFaceNet(nn.Module):
    """``width`` scales the channel counts (insightface's ``scale``; 2 is their default "mbf")."""

    def __init__(self, embedding_size: int = 512, blocks: tuple[int, int, int, int] = (1, 4, 6, 2), width: int = 2):
        super().__init__()
        c64, c128 = 64 * width, 128 * width
        self.layers = nn.Sequential(
            ConvBlock(3, c64, kernel=3, stride=2, padding=1),
            ConvBlock(c64, c64, kernel=3, padding=1, groups=c64)
            if blocks[0] == 1
            else _residual_stage(c64, blocks[0], c64),
            DepthWise(c64, c64, stride=2, groups=128),
            _residual_stage(c64, blocks[1], 128),
            DepthWise(c64, c128, stride=2, groups=256),
            _residual_stage(c128, blocks[2], 256),
            DepthWise(c128, c128, stride=2, groups=512),
            _residual_stage(c128, blocks[3], 256),
        )
        self.conv_sep = ConvBlock(c128, 512)
        self.gdc = ConvBlock(512, 512, kernel=7, groups=512, linear=True)  # 7x7 -> 1x1
        self.linear = nn.Linear(512, embedding_size, bias=False)
        self.features = nn.BatchNorm1d(embedding_size)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gdc(self.conv_sep(self.layers(x)))
        return self.features(self.linear(torch.flatten(x, 1)))
