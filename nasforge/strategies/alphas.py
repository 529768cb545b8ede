"""The base of the differentiable NAS strategies (DARTS, PC-DARTS, P-DARTS, GDAS, SNAS,
ProxylessNAS, FBNet, CDARTS: a file each): architecture parameters (alphas) and their optimiser.

Each strategy owns one vector of architecture parameters (alphas) per edge of the space and an
optimiser for them, and exposes them through :class:`~nasforge.core.differentiable.ArchParameters`;
the ``dnas`` estimator trains them together with the supernet weights (one search epoch per
trial). The methods differ only in how alphas become the weights that mix an edge's candidates
(:meth:`DifferentiableStrategy.weights`) and in the architecture loss.

Edges: a space with ``edge_choices()`` and ``derive()`` (DARTS) is searched over those edges,
``none`` included, and archs are derived by the space's own rule (two strongest non-``none``
inputs per node); any other space is searched over its own choices, and the arch is the argmax
of each choice (NB201, as in Dong & Yang 2020).

Asking: ask ``k`` returns the arch derived after ``k`` search epochs (the runner then runs epoch
``k + 1`` in ``estimator.update`` and scores the arch with those weights); after ``epochs``
epochs one last ask returns the final arch, scored on the final weights, then ask returns None.
So a search of ``epochs`` epochs is ``epochs + 1`` trials and its last trial is the method's
result.

Options: every strategy takes its architecture optimiser's settings as one options piece,
``adam`` (:class:`Adam`: ``lr``, ``beta1``, ``beta2``, ``weight_decay``), whose defaults are its
paper's; a config overrides any of them, e.g. ``strategy: {type: darts, adam: {lr: 1e-3}}``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt
from torch import Tensor

from nasforge.core.arch import Arch
from nasforge.core.capabilities import ArchTraining, Capability, HasEdges, check_combination
from nasforge.core.differentiable import StepKind, edge_choices
from nasforge.core.strategy import Strategy
from nasforge.core.trial import Trial

if TYPE_CHECKING:
    from nasforge.core.objective import Objective
    from nasforge.core.space import SearchSpace

__all__ = ["Adam", "PCDARTSAdam", "ProxylessAdam", "DifferentiableStrategy", "GumbelStrategy", "Fraction", "DARTS_ADAM", "PCDARTS_ADAM", "PROXYLESS_ADAM"]

log = logging.getLogger("nasforge")


Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class Adam(BaseModel):
    """The architecture parameters' Adam optimiser, one options piece shared by every method.

    The defaults are DARTS' (Liu et al. 2019), which GDAS and SNAS keep; methods with other
    settings subclass this with their own defaults, so a config that sets only ``lr`` keeps the
    method's betas and weight decay.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    lr: PositiveFloat = 3e-4
    beta1: Fraction = 0.5
    beta2: Fraction = 0.999
    weight_decay: NonNegativeFloat = 1e-3


class PCDARTSAdam(Adam):
    """PC-DARTS' and P-DARTS' settings: DARTS' with lr 6e-4."""

    lr: PositiveFloat = 6e-4


class ProxylessAdam(Adam):
    """ProxylessNAS' code: lr 1e-3, betas (0, 0.999), no weight decay."""

    lr: PositiveFloat = 1e-3
    beta1: Fraction = 0.0
    weight_decay: NonNegativeFloat = 0.0


DARTS_ADAM = Adam()
PCDARTS_ADAM = PCDARTSAdam()
PROXYLESS_ADAM = ProxylessAdam()


class DifferentiableStrategy(Strategy):
    """Base of the differentiable strategies: alphas per edge, Adam on them, derivation.

    Subclasses implement :meth:`weights`; the rest of :class:`ArchParameters` and of
    :class:`~nasforge.oneshot.bilevel.SearchPlan` is here (every epoch searches, one cosine
    schedule for the weights over all epochs, half the training split for the architecture).

    Args:
        epochs: search epochs (one per trial); schedules run over them.
        adam: the alphas' optimiser.
    """

    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.SUPERNET})
    modes: ClassVar[frozenset[str]] = frozenset({"weighted"})
    arch_parameters: ClassVar[ArchTraining | None] = "with-weights"
    #: The result is the arch of the final alphas (the last trial), as every method's paper and
    #: code return it (e.g. ``genotypes[total_epoch - 1]`` in NAS-Bench-201's ``GDAS.py``); the
    #: per-epoch archs stay in the store.
    winner: ClassVar[Literal["best", "last"]] = "last"

    epoch: int = 0
    bilevel: bool = True
    partial_channels: int = 1
    arch_fraction: float = 0.5
    arch_every: int = 1

    def __init__(self, epochs: PositiveInt, adam: Adam) -> None:
        self.epochs = epochs
        self.adam = adam
        self._paths: dict[str, list[int]] | None = None

    # -- setup and state ---------------------------------------------------------------------

    def setup(self, space: SearchSpace, objective: Objective, *, seed: int) -> None:
        check_combination(space, self)  # the runner checked before any data loaded; by hand, here
        super().setup(space, objective, seed=seed)
        self.edges = dict(edge_choices(space))
        self._derive = space.derive if isinstance(space, HasEdges) else None
        self.alphas = {name: self._init(len(choice)) for name, choice in self.edges.items()}
        self.optimizer = self._new_optimizer()
        self.epoch = 0
        self.asked = 0

    def _new_optimizer(self) -> torch.optim.Adam:
        """A fresh Adam over :meth:`parameters` with the ``adam`` settings."""
        adam = self.adam
        return torch.optim.Adam(
            self.parameters(), lr=adam.lr, betas=(adam.beta1, adam.beta2), weight_decay=adam.weight_decay
        )

    def _init(self, n: int) -> Tensor:
        """DARTS' initialisation: ``1e-3 * N(0, 1)`` (breaks ties at random, from ``self.rng``)."""
        return torch.tensor(1e-3 * self.rng.standard_normal(n), dtype=torch.float32, requires_grad=True)

    def _tensors(self) -> dict[str, Tensor]:
        """Every architecture tensor by a stable key (subclasses add theirs)."""
        return {f"alpha/{name}": alpha for name, alpha in self.alphas.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "tensors": {key: t.detach().clone() for key, t in self._tensors().items()},
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "asked": self.asked,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            for key, tensor in self._tensors().items():
                tensor.copy_(state["tensors"][key])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.asked = int(state["asked"])

    # -- ask / tell ----------------------------------------------------------------------------

    def ask(self) -> Arch | None:
        if self.asked > self.epochs:
            return None
        self.asked += 1
        return self.derived()

    def tell(self, trial: Trial) -> None:
        log.debug("%s epoch %d: %s -> %s", type(self).__name__, self.epoch, trial.arch, trial.metrics)

    def edge_weights(self) -> dict[str, Tensor]:
        """The deterministic weight of every candidate (softmax of the alphas), for derivation."""
        return {name: torch.softmax(alpha.detach(), dim=-1) for name, alpha in self.alphas.items()}

    def derived(self) -> Arch:
        """The discrete arch the current alphas give, by the method's derivation rule."""
        weights = self.edge_weights()
        if self._derive is not None:
            return self._derive(weights)
        values = {name: self.edges[name].candidates[int(torch.argmax(w))] for name, w in weights.items()}
        return self.space.validate(Arch(values))

    # -- ArchParameters -------------------------------------------------------------------------

    def parameters(self) -> list[Tensor]:
        return list(self._tensors().values())

    def weights(self, step: StepKind) -> dict[str, Tensor]:
        raise NotImplementedError

    def paths(self) -> dict[str, list[int]] | None:
        """Candidates the last :meth:`weights` call needs run per edge (None: all with weight)."""
        return self._paths

    def weight_optimizer(self) -> dict[str, Any]:
        """SGD settings of the supernet weights this method's code uses (``nesterov``,
        ``weight_decay``), where the ``dnas`` estimator's options leave them unset; none here."""
        return {}

    def supernet_options(self) -> dict[str, Any]:
        return {"partial_channels": self.partial_channels} if self.partial_channels != 1 else {}

    def op_dropout(self) -> dict[str, float]:
        return {}

    def loss(self, task_loss: Tensor) -> Tensor:
        return task_loss

    def step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def end_epoch(self) -> None:
        self.epoch += 1

    def searching(self) -> bool:
        """Whether this epoch takes architecture steps (no warm-up here)."""
        return True

    def weight_schedule(self) -> tuple[int, int]:
        """Where the weights' cosine schedule stands: one schedule over all epochs."""
        return self.epoch, self.epochs

    def snapshot(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "candidates": {name: list(choice.candidates) for name, choice in self.edges.items()},
            "probs": {name: [round(float(p), 6) for p in w] for name, w in self.edge_weights().items()},
        }

    def _gumbel(self, n: int) -> Tensor:
        return torch.from_numpy(self.rng.gumbel(size=n).astype(np.float32))



class GumbelStrategy(DifferentiableStrategy):
    """Base of the Gumbel methods (GDAS, SNAS, FBNet): a temperature per epoch and Gumbel noise.

    Subclasses give :attr:`tau` (their annealing schedule) and :meth:`weights`.
    """

    @property
    def tau(self) -> float:
        """The temperature of the current epoch."""
        raise NotImplementedError

    def _perturbed(self, logits: Tensor) -> Tensor:
        """``softmax((logits + g) / tau)`` with Gumbel noise ``g`` from ``self.rng``."""
        return torch.softmax((logits + self._gumbel(len(logits))) / self.tau, dim=-1)

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "tau": self.tau}
