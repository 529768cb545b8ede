"""The synthetic one-edge task the differentiable-method tests share: inputs of 10 values, labels
their argmax, one edge whose ``copy`` candidate solves it."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from nasforge.core import registry
from nasforge.core.arch import Arch, Choice
from nasforge.core.differentiable import ArchParameters
from nasforge.core.space import SearchSpace
from nasforge.nn.mixed import MixedOp, Supernet
from nasforge.objectives.basic import SingleMetric
from nasforge.tasks.splits import DataSplits


class Scale(nn.Module):
    """``s * x`` with a learnable ``s``: the candidates of the synthetic task."""

    def __init__(self, s: float) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.tensor(s))

    def forward(self, x: Tensor) -> Tensor:
        return self.s * x


class OneEdgeSpace(SearchSpace):
    """One edge whose ``copy`` candidate solves the task (labels are the argmax of the input)."""

    values = ("zero", "negate", "copy")

    def choices(self) -> Mapping[str, Choice]:
        return {"op": Choice("op", self.values)}

    def build(self, arch: Arch) -> nn.Module:
        return self.supernet().export(arch)

    def supernet(self) -> Supernet:
        return Supernet(
            nn.Sequential(MixedOp("op", {"zero": Scale(0.0), "negate": Scale(-1.0), "copy": Scale(1.0)}))
        )


def synthetic_data(n: int = 512) -> DataSplits:
    x = torch.randn(n, 10, generator=torch.Generator().manual_seed(0))
    data = TensorDataset(x, x.argmax(dim=1))
    return DataSplits("synthetic", data, data, data, in_channels=1, num_classes=10, input_size=(1, 10))


#: Short test searches start searching at once (ProxylessNAS' paper default is 40 warm-up epochs).
NO_WARMUP: dict[str, dict[str, object]] = {"proxyless": {"warmup": 0}}


def strategy(name: str, space: SearchSpace, seed: int = 0, **options: object) -> ArchParameters:
    if "epochs" in options:
        options = {**NO_WARMUP.get(name, {}), **options}
    made = registry.create("strategy", name, options)
    made.setup(space, SingleMetric("val_acc"), seed=seed)
    assert isinstance(made, ArchParameters)
    return made
