"""ResNet regressor (the 4D-PreNet ellipse network), defined here so torchvision is not needed."""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    """ResNet bottleneck block (1x1, 3x3, 1x1) with expansion 4."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True), nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convolutions), expansion 1."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True), nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
        )
        self.skip = (nn.Identity() if stride == 1 and cin == width else
                     nn.Sequential(nn.Conv2d(cin, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class ResNetRegressor(nn.Module):
    """ResNet trunk + global average pooling + linear head.

    ``layers=(3, 4, 6, 3), bottleneck=True, base=64`` is ResNet-50 (the paper's); the compact default
    uses basic blocks. The ellipse network has ``outputs=3``: ``(cos 2 theta, sin 2 theta, ratio - 1)``.
    """

    def __init__(self, in_channels: int = 1, outputs: int = 3, base: int = 16,
                 layers: tuple[int, ...] | list[int] = (2, 2, 2, 2), bottleneck: bool = False) -> None:
        super().__init__()
        block = Bottleneck if bottleneck else BasicBlock
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, base, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(base),
            nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages, cin = [], base
        for i, n in enumerate(layers):
            width = base * 2**i
            for k in range(n):
                stages.append(block(cin, width, 2 if (k == 0 and i > 0) else 1))
                cin = width * block.expansion
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
