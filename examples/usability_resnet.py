"""A small ResNet for Fashion-MNIST, written in plain PyTorch: the user's own model.

Nothing here knows about nasforge. The usability examples (docs/usability.md) turn it into a
search space from their configs alone: ``space: {type: model, factory:
"examples/usability_resnet.py:resnet", convert: {...}}``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection (He et al. 2016)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A 3x3 stem and three stages of basic blocks (the stem and the last two stages halve the resolution), a linear head."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        widths: tuple[int, ...] = (8, 16, 32),
        blocks: tuple[int, ...] = (2, 2, 2),
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages, channels = [], widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            first = BasicBlock(channels, width, stride=1 if i == 0 else 2)
            stages.append(nn.Sequential(first, *(BasicBlock(width, width) for _ in range(n - 1))))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def resnet(in_channels: int = 1, num_classes: int = 10) -> ResNet:
    """The model the examples search around (the data fills in channels and classes)."""
    return ResNet(in_channels, num_classes)
