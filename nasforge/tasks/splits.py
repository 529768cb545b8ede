"""The data contract: a dataset component loads into train / validation / test splits.

Search trains on ``train`` and scores on ``valid`` (both carved from the dataset's training
set); ``test`` is touched only for final reporting.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from torch.utils.data import ConcatDataset, Dataset

from nasforge.core.component import Component

__all__ = ["DataSplits", "DatasetSource"]


@dataclass(frozen=True)
class DataSplits:
    """A task's data, split, with the shape facts a space needs to build a network.

    ``mean``/``std`` are the per-channel statistics the images were standardised with, if any.
    """

    name: str
    train: Dataset
    valid: Dataset
    test: Dataset
    in_channels: int
    num_classes: int
    input_size: tuple[int, int]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def normalization(self) -> dict[str, list[float]] | None:
        """Per-channel mean and std the inputs were standardised with (None if they were not).

        A deployed model must see inputs prepared the same way: ``(x - mean) / std``.
        """
        if self.mean is None or self.std is None:
            return None
        return {"mean": list(self.mean), "std": list(self.std)}

    @property
    def train_and_valid(self) -> Dataset:
        """The whole training set (train + valid), for training the final architecture."""
        return ConcatDataset([self.train, self.valid])

    def context(self) -> dict[str, object]:
        """Values offered to component constructors (see ``registry.create``'s ``context``)."""
        return {"in_channels": self.in_channels, "num_classes": self.num_classes, "input_size": self.input_size}


class DatasetSource(Component, ABC):
    """Base of every registered dataset (kind ``"dataset"``): options in, splits out."""

    @abstractmethod
    def load(self, seed: int) -> DataSplits:
        """Read the data (never downloading) and split it; ``seed`` fixes the split."""
