"""The architecture generator of SGNAS (Huang & Chu, CVPR 2021, "Searching by Generating:
Flexible and Efficient One-Shot NAS with Architecture Generator"), as OSNASLib implements it.

A small convolutional network maps a target cost (and a prior arch) to a grid of logits, one row
per choice of the space and one column per candidate. Training samples a target, draws
per-choice weights from the logits by Gumbel-softmax, mixes the candidates of a *trained,
frozen* supernet with them, and descends

    cross-entropy(supernet) + penalty * ((E[cost] - target) / (high - low))**2   (x over_penalty when over)

into the generator only; ``E[cost]`` is the lookup table's cost under the sampled weights
(:meth:`~nasforge.hardware.lut.CostTable.expected`), so the penalty is differentiable. Once
trained, the generator gives an arch for any target in one forward pass (the argmax of each row),
without searching again: :meth:`ArchitectureGenerator.generate`.

Where it meets the loop: the strategy provides
:class:`~nasforge.core.differentiable.ArchParameters` (its parameters are the generator's
weights), and the ``supernet`` estimator, once its own training epochs are done, runs one epoch
of architecture steps through the supernet per trial with the supernet's weights fixed. Ask
``k`` returns the arch generated for the budget after ``k`` epochs; after ``epochs`` epochs one
last ask, then None (``epochs + 1`` trials)::

    strategy:  {type: generator, budget: {metric: flops, max: 3.0e6}, epochs: 50}
    estimator: {type: supernet, rule: spos, epochs: 10}

Defaults follow OSNASLib's ``uniform_archgenerator`` config and SGNAS' code: 50 epochs, tau 5
decayed by 0.95 per epoch, Adam lr 1e-3 with betas (0.5, 0.999), target channels 10, 32 hidden
channels, 5 convolutional layers, a prior pool of one arch, over-budget penalty x1.2. SGNAS'
penalty weight is 3e-4 per MFLOP squared over targets 80-120 MFLOPs; here the difference is
divided by the width of the target range, so that weight becomes 3e-4 * 40**2 = 0.48 for any
metric and range. SGNAS draws targets from a shuffled 5-MFLOP grid with jitter; here uniformly
from the range. SGNAS' 0.1-MFLOP dead zone is left out.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import numpy as np
import torch
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt
from torch import Tensor, nn

from nasforge.core.arch import Arch
from nasforge.core.capabilities import ArchTraining, Capability
from nasforge.core.differentiable import StepKind
from nasforge.core.registry import register
from nasforge.core.seeding import seeded
from nasforge.core.strategy import Strategy
from nasforge.core.trial import Trial
from nasforge.hardware.lut import CostBudget, CostTable, budget_table

if TYPE_CHECKING:
    from nasforge.core.objective import Objective
    from nasforge.core.space import SearchSpace

__all__ = ["GeneratorNet", "ArchitectureGenerator"]

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


def _conv_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.ReLU())


class GeneratorNet(nn.Module):
    """SGNAS' generator: 3x3 convolutions over the (choices x candidates) grid.

    The normalised target fills ``target_channels`` planes (three conv-ReLUs), the prior arch's
    one-hot grid one plane (two conv-ReLUs); their sum goes through ``layers - 2`` conv-ReLUs
    with a residual around them, and a last convolution gives one logit per grid cell.
    """

    def __init__(self, target_channels: int = 10, hidden: int = 32, layers: int = 5) -> None:
        super().__init__()
        self.target_channels = target_channels
        self.target_head = nn.Sequential(*(_conv_relu(target_channels if i == 0 else hidden, hidden) for i in range(3)))
        self.prior_head = nn.Sequential(_conv_relu(1, hidden), _conv_relu(hidden, hidden))
        self.body = nn.Sequential(*(_conv_relu(hidden, hidden) for _ in range(max(1, layers - 2))))
        self.tail = nn.Conv2d(hidden, 1, 3, 1, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # He initialisation over the output fan, as SGNAS
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / (9 * module.out_channels)))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, prior: Tensor, target: float) -> Tensor:
        """Logits of shape ``prior.shape`` for the normalised ``target``."""
        grid = prior[None, None]
        planes = torch.full((1, self.target_channels, *prior.shape), float(target), dtype=prior.dtype)
        mixed = self.target_head(planes) + self.prior_head(grid)
        return self.tail(self.body(mixed) + mixed)[0, 0]


@register("strategy", "generator", tags=("budget", "one-shot"))
class ArchitectureGenerator(Strategy):
    """SGNAS' architecture generator (Huang & Chu, CVPR 2021): trained through a frozen,
    trained supernet (the ``supernet`` estimator), it then maps any target cost to an arch.

    Args:
        budget: ``{metric, max, table}`` (:class:`~nasforge.hardware.lut.CostBudget`): asks
            generate for ``max``; without one the generator is trained on the task loss alone.
        epochs: generator training epochs (one per trial, each a pass over the validation split).
        targets: ``(low, high)`` range of training targets; default the space's cheapest and
            dearest arch by the table.
        tau, tau_decay: Gumbel-softmax temperature and its decay per epoch.
        lr, beta1, beta2, weight_decay: Adam on the generator.
        penalty: weight of the squared cost error (in units of the target range).
        over_penalty: extra factor on the penalty when the cost is over the target.
        target_channels, hidden, layers: the generator network.
        prior_pool: prior archs, drawn at random near evenly spaced targets; the one nearest a
            target is the generator's second input.
        in_channels, input_size: the input the costs are counted at (filled from the data).
    """

    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.SUPERNET})
    modes: ClassVar[frozenset[str]] = frozenset({"weighted"})
    arch_parameters: ClassVar[ArchTraining | None] = "on-trained-supernet"

    epoch = 0
    bilevel = False
    partial_channels = 1

    def __init__(
        self,
        budget: CostBudget | None = None,
        epochs: PositiveInt = 50,
        targets: tuple[NonNegativeFloat, PositiveFloat] | None = None,
        tau: PositiveFloat = 5.0,
        tau_decay: Annotated[float, Field(gt=0, le=1)] = 0.95,
        lr: PositiveFloat = 1e-3,
        beta1: Fraction = 0.5,
        beta2: Fraction = 0.999,
        weight_decay: NonNegativeFloat = 0.0,
        penalty: NonNegativeFloat = 0.48,
        over_penalty: PositiveFloat = 1.2,
        target_channels: PositiveInt = 10,
        hidden: PositiveInt = 32,
        layers: Annotated[int, Field(ge=3)] = 5,
        prior_pool: PositiveInt = 1,
        in_channels: PositiveInt = 3,
        input_size: tuple[PositiveInt, PositiveInt] = (32, 32),
    ) -> None:
        if targets is not None and targets[0] >= targets[1]:
            raise ValueError(f"targets {targets} must be (low, high) with low < high")
        self.budget = budget
        self.epochs = epochs
        self.targets = targets
        self.tau0 = tau
        self.tau_decay = tau_decay
        self.adam = {"lr": lr, "betas": (beta1, beta2), "weight_decay": weight_decay}
        self.penalty = penalty
        self.over_penalty = over_penalty
        self.net_options = {"target_channels": target_channels, "hidden": hidden, "layers": layers}
        self.prior_pool_size = prior_pool
        self.input_shape = (in_channels, *input_size)

    # -- set-up and state ------------------------------------------------------------------------

    def setup(self, space: SearchSpace, objective: Objective, *, seed: int) -> None:
        super().setup(space, objective, seed=seed)
        self.choices = dict(space.choices())
        width = max(len(choice) for choice in self.choices.values())
        self.mask = torch.full((len(self.choices), width), -math.inf)
        for row, choice in enumerate(self.choices.values()):
            self.mask[row, : len(choice)] = 0.0
        self.table: CostTable | None = None
        self.range = (0.0, 1.0)
        if self.budget is not None:
            self.table = budget_table(self.budget, space, self.input_shape)
            self.range = self.targets or self.table.bounds()
        with seeded(int(self.rng.integers(2**31))):
            self.net = GeneratorNet(**self.net_options)
        self.optimizer = torch.optim.Adam(self.net.parameters(), **self.adam)  # type: ignore[arg-type]
        self.pool = self._prior_pool()
        self.epoch = 0
        self.asked = 0
        self._sample: tuple[float, dict[str, Tensor]] | None = None  # the last training target and weights

    def _prior_pool(self) -> list[tuple[float, Arch]]:
        """SGNAS' prior pool: per evenly spaced target, a random arch whose cost is within 5% of
        the range of it (the nearest of 1,000 draws otherwise)."""
        low, high = self.range
        pool = []
        for k in range(self.prior_pool_size):
            target = low + (high - low) * (k + 1) / (self.prior_pool_size + 1)
            best, error = self.space.sample(self.rng), math.inf
            for _ in range(1000 if self.table is not None else 0):
                arch = self.space.sample(self.rng)
                arch_error = abs(self.table.predict(arch) - target)  # type: ignore[union-attr]
                if arch_error < error:
                    best, error = arch, arch_error
                if error <= 0.05 * (high - low):
                    break
            pool.append((target, best))
        return pool

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "net": {key: t.clone() for key, t in self.net.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "pool": [(target, arch.to_dict()) for target, arch in self.pool],
            "epoch": self.epoch,
            "asked": self.asked,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.pool = [(float(target), Arch(arch)) for target, arch in state["pool"]]
        self.epoch = int(state["epoch"])
        self.asked = int(state["asked"])

    # -- generating --------------------------------------------------------------------------------

    @property
    def tau(self) -> float:
        """The Gumbel-softmax temperature of the current epoch."""
        return self.tau0 * self.tau_decay**self.epoch

    def _prior(self, target: float) -> Tensor:
        """The one-hot grid of the pool's arch nearest ``target``."""
        _, arch = min(self.pool, key=lambda entry: abs(entry[0] - target))
        grid = torch.zeros_like(self.mask)
        for row, (name, choice) in enumerate(self.choices.items()):
            grid[row, choice.index(arch[name])] = 1.0
        return grid

    def logits(self, target: float) -> Tensor:
        """The generator's (choices x candidates) logits for ``target``; padding is -inf."""
        low, high = self.range
        normalised = (target - low) / (high - low) if self.table is not None else 0.0
        return self.net(self._prior(target), normalised) + self.mask

    def generate(self, target: float) -> Arch:
        """The arch the generator gives for ``target`` (each choice's most likely candidate)."""
        with torch.no_grad():
            best = self.logits(target).argmax(dim=1)
        return self.space.validate(
            Arch(
                {name: choice.candidates[int(i)] for (name, choice), i in zip(self.choices.items(), best, strict=True)}
            )
        )

    def ask(self) -> Arch | None:
        if self.asked > self.epochs:
            return None
        self.asked += 1
        return self.generate(self.budget.max if self.budget is not None else 0.0)

    def tell(self, trial: Trial) -> None:
        """Nothing to learn from scores: the generator learns through the supernet."""

    # -- ArchParameters: trained by the supernet estimator ------------------------------------------

    def parameters(self) -> list[Tensor]:
        return list(self.net.parameters())

    def weights(self, step: StepKind) -> dict[str, Tensor]:
        """Gumbel-softmax weights for a target drawn from the range (detached for ``"weights"``)."""
        low, high = self.range
        target = float(self.rng.uniform(low, high))
        logits = self.logits(target)
        gumbel = torch.from_numpy(self.rng.gumbel(size=tuple(logits.shape)).astype(np.float32))
        probs = torch.softmax((logits + gumbel) / self.tau, dim=1)
        weights = {name: probs[row, : len(choice)] for row, (name, choice) in enumerate(self.choices.items())}
        self._sample = (target, weights)
        return weights if step == "arch" else {name: w.detach() for name, w in weights.items()}

    def paths(self) -> dict[str, list[int]] | None:
        return None

    def supernet_options(self) -> dict[str, Any]:
        return {}

    def op_dropout(self) -> dict[str, float]:
        return {}

    def cost_penalty(self, cost: Tensor, target: float) -> Tensor:
        """SGNAS' penalty: squared error in units of the target range, heavier over the target."""
        low, high = self.range
        error = (cost - target) / (high - low)
        return self.penalty * error**2 * (self.over_penalty if float(error.detach()) > 0 else 1.0)

    def loss(self, task_loss: Tensor) -> Tensor:
        """``task_loss`` plus the cost penalty of the last :meth:`weights` sample."""
        if self.table is None or self._sample is None:
            return task_loss
        target, weights = self._sample
        return task_loss + self.cost_penalty(self.table.expected(weights), target).to(task_loss.dtype)

    def step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def end_epoch(self) -> None:
        self.epoch += 1

    def snapshot(self) -> dict[str, Any]:
        """The epoch, temperature and, with a budget, the generated arch's cost for the budget."""
        extra = {}
        if self.table is not None and self.budget is not None:
            extra = {"target": self.budget.max, "cost": self.table.predict(self.generate(self.budget.max))}
        return {"epoch": self.epoch, "tau": self.tau, **extra}
