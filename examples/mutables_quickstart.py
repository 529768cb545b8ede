"""Quickstart: a search space written as one PyTorch model with mutables, searched by evolution.

A small CNN for 8x8 digits with an op choice, a kernel-size choice, a width choice and a
repeated block; each of 5 children is trained from scratch for one epoch.
"""

from __future__ import annotations

import torch
from torch import nn

import nasforge.nn as nm
from nasforge.estimators.scratch import ScratchTraining
from nasforge.objectives.basic import SingleMetric
from nasforge.runner.loop import run_search
from nasforge.strategies.evolution import RegularizedEvolution
from nasforge.tasks.datasets import Digits


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        width = nm.ValueChoice([8, 16], label="width")
        self.stem = nn.Sequential(
            nm.Conv2d(1, width, nm.ValueChoice([3, 5], label="kernel"), padding="same"),
            nm.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.blocks = nm.Repeat(
            lambda i: nm.LayerChoice(
                {
                    "conv": nn.Sequential(nm.Conv2d(width, width, 3, padding="same"), nm.BatchNorm2d(width), nn.ReLU()),
                    "pool": nn.MaxPool2d(3, 1, 1),
                },
                label=f"op{i}",
            ),
            depth=(1, 3),
            label="depth",
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nm.Linear(width, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def main() -> None:
    torch.set_num_threads(1)
    space = nm.ModelSpace(Net(), constraints=[lambda arch: arch["width"] == 16 or arch["depth"] < 3])
    result = run_search(
        space,
        RegularizedEvolution(population_size=3, sample_size=2),
        ScratchTraining(epochs=1),
        SingleMetric(),
        budget=5,
        data=Digits(train_limit=300).load(0),
    )
    best = result.best()[0]
    print("best arch:", best.arch, "val_acc:", best.metrics["val_acc"])
    print(space.build(best.arch))


if __name__ == "__main__":
    main()
