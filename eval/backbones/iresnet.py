"""IResNet backbones in the insightface layout (arcface_torch ``iresnet``).

Input: float ``[N, 3, 112, 112]`` RGB, normalised as ``(x / 255 - 0.5) / 0.5``.
Output: the 512-d embedding after the BatchNorm head (not L2-normalised; the
margin losses and the verification protocol normalise it themselves).

Parameter names follow insightface's, so their published ``backbone.pth``
checkpoints load into these modules with ``load_state_dict``.
"""

from __future__ import annotations

import torch
from torch import nn

# Blocks per stage, as in insightface.
IRESNET_LAYERS = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation-style residual block: BN-conv-BN-PReLU-conv-BN (+ shortcut).

    The stride sits on the second conv, and there is no activation after the
    sum: that is what distinguishes the "improved" ResNet of ArcFace.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-05)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-05)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-05)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """Four stages (64-128-256-512 channels, each halving the size) on a stride-1 stem.

    112x112 input -> 7x7x512 feature map -> BN, dropout, flatten, linear,
    BatchNorm1d (fixed scale) -> ``embedding_size``-d embedding.
    """

    feature_map_size = 7  # 112 / 2**4

    def __init__(self, layers: tuple[int, ...], embedding_size: int = 512, dropout: float = 0.0):
        super().__init__()
        self.conv1 = _conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
        self.prelu = nn.PReLU(64)
        self.inplanes = 64
        self.layer1 = self._make_stage(64, layers[0])
        self.layer2 = self._make_stage(128, layers[1])
        self.layer3 = self._make_stage(256, layers[2])
        self.layer4 = self._make_stage(512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(512 * self.feature_map_size**2, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-05)
        # insightface freezes the head BN's scale at 1: the loss normalises anyway.
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        self._init_weights()

    def _make_stage(self, planes: int, blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=2, bias=False),
            nn.BatchNorm2d(planes, eps=1e-05),
        )
        stage = [IBasicBlock(self.inplanes, planes, stride=2, downsample=downsample)]
        self.inplanes = planes
        stage += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def iresnet(name: str, embedding_size: int = 512, dropout: float = 0.0) -> IResNet:
    return IResNet(IRESNET_LAYERS[name], embedding_size=embedding_size, dropout=dropout)
