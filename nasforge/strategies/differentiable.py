"""Differentiable NAS strategies: DARTS, PC-DARTS, P-DARTS, GDAS, SNAS and ProxylessNAS
(FBNet and CDARTS, built on these, have files of their own).

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
import math
import re
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from torch import Tensor

from nasforge.core.arch import Arch
from nasforge.core.differentiable import StepKind, edge_choices
from nasforge.core.errors import ConfigError
from nasforge.core.registry import register
from nasforge.core.strategy import Strategy
from nasforge.core.trial import Trial

if TYPE_CHECKING:
    from nasforge.core.objective import Objective
    from nasforge.core.space import SearchSpace

__all__ = [
    "Adam",
    "PCDARTSAdam",
    "ProxylessAdam",
    "DifferentiableStrategy",
    "GumbelStrategy",
    "DARTS",
    "PCDARTS",
    "PDARTS",
    "GDAS",
    "SNAS",
    "ProxylessNAS",
]

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
    :class:`~nasforge.supernet.dnas.SearchPlan` is here (every epoch searches, one cosine
    schedule for the weights over all epochs, half the training split for the architecture).

    Args:
        epochs: search epochs (one per trial); schedules run over them.
        adam: the alphas' optimiser.
    """

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
        super().setup(space, objective, seed=seed)
        self.edges = dict(edge_choices(space))
        self._derive = getattr(space, "derive", None) if callable(getattr(space, "edge_choices", None)) else None
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


@register("strategy", "darts", tags=("differentiable",))
class DARTS(DifferentiableStrategy):
    """DARTS (Liu, Simonyan & Yang, ICLR 2019): every edge mixes its candidates by the softmax
    of its alphas; the alphas descend the validation loss (bilevel; first or second order is
    the ``dnas`` estimator's ``order``). Defaults are the paper's: 50 epochs, Adam lr 3e-4,
    betas (0.5, 0.999), weight decay 1e-3.
    """

    def __init__(self, epochs: PositiveInt = 50, adam: Adam = DARTS_ADAM) -> None:
        super().__init__(epochs, adam)

    def weights(self, step: StepKind) -> dict[str, Tensor]:
        self._paths = None
        out = {name: torch.softmax(alpha, dim=-1) for name, alpha in self.alphas.items()}
        return out if step == "arch" else {name: w.detach() for name, w in out.items()}


_EDGE = re.compile(r"^(?P<node>.*\d+)<-\d+$")


@register("strategy", "pcdarts", tags=("differentiable",))
class PCDARTS(DARTS):
    """PC-DARTS (Xu et al., ICLR 2020): DARTS on a partial-channel supernet with edge normalisation.

    Only ``1/K`` of each edge's channels go through its candidates (the ``dnas`` estimator builds
    ``space.supernet(partial_channels=K)``, see :mod:`nasforge.supernet.partial`). Every edge
    ``i<-j`` also has a beta; node ``i``'s edges are weighted by the softmax of its betas, so an
    edge mixes its candidates by ``softmax(beta_i)_j * softmax(alpha_ij)``. Derivation uses the
    same products (DARTS spaces: the two strongest edges per node by them). Edges are grouped by
    node through their names (``"3<-1"``, ``"normal.3<-1"``); an edge of any other name is its
    own node. Architecture steps are skipped in the first ``warmup`` epochs (weights only).

    Defaults are the paper's (CIFAR-10): 50 epochs, K=4, warm-up 15 epochs, Adam lr 6e-4, betas
    (0.5, 0.999), weight decay 1e-3. The paper's weights use SGD lr 0.1 with batch 256: those
    are options of the ``dnas`` estimator (``lr``, ``batch_size``), whose defaults are DARTS'.
    """

    def __init__(
        self,
        epochs: PositiveInt = 50,
        partial_channels: Annotated[int, Field(ge=1)] = 4,
        warmup: NonNegativeInt = 15,
        adam: PCDARTSAdam = PCDARTS_ADAM,
    ) -> None:
        super().__init__(epochs, adam)
        self.partial_channels = partial_channels
        self.warmup = warmup

    def setup(self, space: SearchSpace, objective: Objective, *, seed: int) -> None:
        self.edges = dict(edge_choices(space))
        self.nodes: dict[str, list[str]] = {}
        for name in self.edges:
            match = _EDGE.match(name)
            self.nodes.setdefault(match["node"] if match else name, []).append(name)
        self._betas: dict[str, Tensor] = {}
        super().setup(space, objective, seed=seed)
        self._betas = {node: self._init(len(edges)) for node, edges in self.nodes.items()}
        self.optimizer = self._new_optimizer()

    def _tensors(self) -> dict[str, Tensor]:
        return {**super()._tensors(), **{f"beta/{node}": beta for node, beta in self._betas.items()}}

    def edge_normalisation(self, detach: bool = False) -> dict[str, Tensor]:
        """Per edge, the softmax of its node's betas at that edge (a 0-d tensor)."""
        out: dict[str, Tensor] = {}
        for node, edges in self.nodes.items():
            beta = self._betas[node].detach() if detach else self._betas[node]
            out.update(zip(edges, torch.softmax(beta, dim=-1), strict=True))
        return out

    def weights(self, step: StepKind) -> dict[str, Tensor]:
        self._paths = None
        scale = self.edge_normalisation()
        out = {name: scale[name] * torch.softmax(alpha, dim=-1) for name, alpha in self.alphas.items()}
        return out if step == "arch" else {name: w.detach() for name, w in out.items()}

    def edge_weights(self) -> dict[str, Tensor]:
        scale = self.edge_normalisation(detach=True)
        return {name: scale[name] * w for name, w in super().edge_weights().items()}

    def searching(self) -> bool:
        return self.epoch >= self.warmup

    def snapshot(self) -> dict[str, Any]:
        """As DARTS' (``probs`` are the products that derivation uses) plus each edge's weight."""
        scale = self.edge_normalisation(detach=True)
        return {**super().snapshot(), "edge_weight": {name: round(float(v), 6) for name, v in scale.items()}}


@register("strategy", "pdarts", tags=("differentiable",))
class PDARTS(DARTS):
    """P-DARTS (Chen, Xie, Wu & Tian, ICCV 2019): progressive DARTS in stages of deepening supernets.

    The search runs ``len(layers)`` stages of ``epochs / len(layers)`` epochs; stage ``s``
    searches a supernet of ``layers[s]`` cells (``space.supernet(layers=...)``, fresh weights;
    DARTS spaces) with fresh alphas and a fresh Adam. Search-space approximation: at the start
    of stage ``s > 0`` each edge keeps its ``keep[s - 1]`` candidates of highest softmax weight
    in the stage before (``none`` competes like any op; only the final derivation excludes it,
    as in the paper's code);
    the others never run again. Dropout of rate ``dropout[s]`` follows every ``skip_connect``
    while training, decaying as in the paper's code: linearly over the stage during the first
    ``warmup`` epochs (weights only, no architecture step), then by ``exp(-0.2 * epochs since
    warm-up)``. The derived normal cell keeps at most ``max_skip`` skip connections (the weakest
    extra ones are zeroed and the cell derived again).

    Defaults are the paper's CIFAR-10 search: cells 5 -> 11 -> 17, ops 8 -> 5 -> 3, 25 epochs
    per stage of which 10 warm-up, skip dropout 0.1 / 0.4 / 0.7 (the code's), at most 2 skips,
    Adam lr 6e-4, betas (0.5, 0.999), weight decay 1e-3. As in the paper's code, the weights'
    cosine learning-rate schedule (and their optimiser) restarts with each stage.
    """

    def __init__(
        self,
        epochs: PositiveInt = 75,
        layers: tuple[PositiveInt, ...] = (5, 11, 17),
        keep: tuple[PositiveInt, ...] = (5, 3),
        dropout: tuple[Fraction, ...] = (0.1, 0.4, 0.7),
        warmup: NonNegativeInt = 10,
        max_skip: NonNegativeInt = 2,
        adam: PCDARTSAdam = PCDARTS_ADAM,
    ) -> None:
        super().__init__(epochs, adam)
        if len(keep) != len(layers) - 1 or len(dropout) != len(layers):
            raise ConfigError(
                f"pdarts: {len(layers)} stages (layers) need {len(layers) - 1} keep counts and {len(layers)} dropout "
                f"rates; got {len(keep)} and {len(dropout)}"
            )
        if epochs % len(layers):
            raise ConfigError(f"pdarts: epochs ({epochs}) must split evenly into {len(layers)} stages")
        self.layers, self.keep, self.dropout, self.warmup, self.max_skip = layers, keep, dropout, warmup, max_skip
        self.stage_epochs = epochs // len(layers)

    def setup(self, space: SearchSpace, objective: Objective, *, seed: int) -> None:
        super().setup(space, objective, seed=seed)
        self.stage = 0
        self.kept = {name: list(range(len(choice))) for name, choice in self.edges.items()}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "stage": self.stage, "kept": self.kept}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage = int(state["stage"])
        self.kept = {name: list(indices) for name, indices in state["kept"].items()}
        super().load_state_dict(state)

    def _stage_of(self, epoch: int) -> int:
        return min(epoch // self.stage_epochs, len(self.layers) - 1)

    def _advance(self) -> None:
        """Enter the current epoch's stage: drop the weakest candidates, fresh alphas and Adam."""
        while self.stage < self._stage_of(self.epoch):
            weights = self.edge_weights()
            for name, indices in self.kept.items():
                ranked = sorted(indices, key=lambda i: float(weights[name][i]), reverse=True)
                self.kept[name] = sorted(ranked[: self.keep[self.stage]])
            self.stage += 1
            with torch.no_grad():
                for alpha in self.alphas.values():
                    alpha.copy_(self._init(len(alpha)))
            self.optimizer = self._new_optimizer()

    def _masked(self, alpha: Tensor, indices: list[int]) -> Tensor:
        index = torch.as_tensor(indices)
        return torch.zeros(len(alpha)).index_put((index,), torch.softmax(alpha[index], dim=-1))

    def weights(self, step: StepKind) -> dict[str, Tensor]:
        self._advance()
        self._paths = {name: list(indices) for name, indices in self.kept.items()}
        out = {name: self._masked(alpha, self.kept[name]) for name, alpha in self.alphas.items()}
        return out if step == "arch" else {name: w.detach() for name, w in out.items()}

    def edge_weights(self) -> dict[str, Tensor]:
        return {name: self._masked(alpha.detach(), self.kept[name]) for name, alpha in self.alphas.items()}

    def derived(self) -> Arch:
        """DARTS' derivation, then at most ``max_skip`` skip connections in the normal cell."""
        weights = self.edge_weights()
        arch = super().derived()
        while self._derive is not None and self._skips(arch) > self.max_skip:
            skips = [
                (float(w[k]), name, k)
                for name, w in weights.items()
                if name.startswith("normal.")
                for k, value in enumerate(self.edges[name].candidates)
                if value == "skip_connect" and float(w[k]) > 0
            ]
            _, name, k = min(skips)
            weights[name][k] = 0.0
            arch = self._derive(weights)
        return arch

    @staticmethod
    def _skips(arch: Arch) -> int:
        return sum(1 for key, value in arch.items() if key.startswith("normal.") and value == "skip_connect")

    def supernet_options(self) -> dict[str, Any]:
        return {"layers": self.layers[self._stage_of(self.epoch)]}

    def op_dropout(self) -> dict[str, float]:
        stage, epoch = self._stage_of(self.epoch), self._stage_epoch()
        if epoch < self.warmup:
            rate = self.dropout[stage] * (self.stage_epochs - epoch - 1) / self.stage_epochs
        else:
            rate = self.dropout[stage] * math.exp(-(epoch - self.warmup) * 0.2)
        return {"skip_connect": rate}

    def _stage_epoch(self) -> int:
        """Epochs done in the current epoch's stage."""
        return self.epoch - self._stage_of(self.epoch) * self.stage_epochs

    def searching(self) -> bool:
        return self._stage_epoch() >= self.warmup

    def weight_schedule(self) -> tuple[int, int]:
        return self._stage_epoch(), self.stage_epochs

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "stage": self.stage, "kept": self.kept}


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


@register("strategy", "gdas", tags=("differentiable",))
class GDAS(GumbelStrategy):
    """GDAS (Dong & Yang, CVPR 2019): each step samples one op per edge by Gumbel-max; the
    forward is the hard one-hot (only the sampled op runs), the backward goes through the
    Gumbel-softmax of temperature ``tau``, annealed linearly from ``tau_max`` to ``tau_min`` over
    the epochs. Defaults as in the paper's code: 250 epochs, tau 10 -> 0.1, Adam lr 3e-4, betas
    (0.5, 0.999), weight decay 1e-3.
    """

    def __init__(
        self,
        epochs: PositiveInt = 250,
        tau_max: PositiveFloat = 10.0,
        tau_min: PositiveFloat = 0.1,
        adam: Adam = DARTS_ADAM,
    ) -> None:
        super().__init__(epochs, adam)
        self.tau_max, self.tau_min = tau_max, tau_min

    @property
    def tau(self) -> float:
        progress = min(self.epoch, self.epochs - 1) / max(1, self.epochs - 1)
        return self.tau_max - (self.tau_max - self.tau_min) * progress

    def weights(self, step: StepKind) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        self._paths = {}
        for name, alpha in self.alphas.items():
            probs = self._perturbed(torch.log_softmax(alpha, dim=-1))
            index = int(torch.argmax(probs))
            hard = torch.zeros_like(probs)
            hard[index] = 1.0
            out[name] = hard - probs.detach() + probs if step == "arch" else hard
            self._paths[name] = [index]
        return out


@register("strategy", "snas", tags=("differentiable",))
class SNAS(GumbelStrategy):
    """SNAS (Xie et al., ICLR 2019): edges mix their candidates by a Gumbel-softmax sample of
    temperature ``tau0 * decay**epoch``; alphas and weights descend the training loss jointly
    (single level). The paper anneals the temperature exponentially without giving its values;
    ``tau0 = 1``, ``decay = 0.97`` follow the public reimplementations. 150 epochs and Adam lr
    3e-4, betas (0.5, 0.999), weight decay 1e-3 as there. The resource constraint is not
    implemented.
    """

    bilevel = False

    def __init__(
        self,
        epochs: PositiveInt = 150,
        tau0: PositiveFloat = 1.0,
        decay: Annotated[float, Field(gt=0, le=1)] = 0.97,
        adam: Adam = DARTS_ADAM,
    ) -> None:
        super().__init__(epochs, adam)
        self.tau0, self.decay = tau0, decay

    @property
    def tau(self) -> float:
        return self.tau0 * self.decay**self.epoch

    def weights(self, step: StepKind) -> dict[str, Tensor]:
        self._paths = None
        out = {name: self._perturbed(alpha) for name, alpha in self.alphas.items()}
        return out if step == "arch" else {name: w.detach() for name, w in out.items()}


@register("strategy", "proxyless", tags=("differentiable",))
class ProxylessNAS(DifferentiableStrategy):
    """ProxylessNAS (Cai, Zhu & Han, ICLR 2019), binarised path sampling.

    Weight steps train one path per edge, sampled from ``softmax(alpha)``. Architecture steps
    sample two candidates per edge without replacement, gate one of them by ``softmax`` of
    their two alphas, and estimate the gradient of both alphas by the BinaryConnect rule
    ``dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i)`` (the straight-through weights here give
    exactly it). Memory is one path's, as in the paper: the other candidates never run, and the
    sampled but closed one (weight 0 carrying a gradient) runs without an autograd graph, its
    output kept only for ``dL/dg`` (:class:`~nasforge.supernet.mixed.LayerChoice`). After each
    update the two alphas are shifted by a common offset that keeps their summed ``exp`` as it
    was, so the unsampled candidates' probabilities do not move (the paper's code). With a
    per-op ``latency`` table, the architecture loss is
    ``alpha * CE * (log E[latency] / log reference) ** beta`` (the paper's ``mul#log`` loss,
    alpha 0.2, beta 0.3), the expected latency summing ``softmax(alpha)``-weighted costs over
    the edges. As in the paper's code: 40 warm-up epochs training the weights only, then 120
    epochs of search with one architecture step every 5 weight steps; Adam lr 1e-3, betas
    (0, 0.999), no weight decay.

    Args:
        epochs: all epochs, warm-up included.
        warmup: the first epochs, weights only (fewer than ``epochs``).
        arch_every: weight steps per architecture step while searching.
        latency: cost of each candidate value (ms, or any unit); None for no latency loss.
        reference: the target expected latency (same unit, above 1 so its log is positive);
            required with ``latency``. The ratio of logs is floored at 1e-6 (costs below 1 unit).
    """

    def __init__(
        self,
        epochs: PositiveInt = 160,
        warmup: NonNegativeInt = 40,
        arch_every: PositiveInt = 5,
        latency: dict[str, PositiveFloat] | None = None,
        reference: Annotated[float, Field(gt=1)] | None = None,
        alpha: PositiveFloat = 0.2,
        beta: PositiveFloat = 0.3,
        adam: ProxylessAdam = PROXYLESS_ADAM,
    ) -> None:
        super().__init__(epochs, adam)
        if warmup >= epochs:
            raise ConfigError(f"proxyless: warmup {warmup} must be below epochs {epochs}, or no architecture step runs")
        self.warmup = warmup
        self.arch_every = arch_every
        self.latency = dict(latency) if latency is not None else None
        self.reference = reference
        self.alpha = alpha
        self.beta = beta
        self._sampled: dict[str, tuple[Tensor, Tensor]] = {}  # edge -> (pair, its alphas before the step)

    def setup(self, space: SearchSpace, objective: Objective, *, seed: int) -> None:
        super().setup(space, objective, seed=seed)
        if self.latency is not None:
            if self.reference is None:
                raise ConfigError("proxyless: a latency table needs a reference latency (the target, above 1)")
            missing = sorted({str(c) for choice in self.edges.values() for c in choice.candidates} - set(self.latency))
            if missing:
                raise ConfigError(f"proxyless: the latency table has no cost for candidate(s) {', '.join(missing)}")

    def searching(self) -> bool:
        return self.epoch >= self.warmup

    def weights(self, step: StepKind) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        self._paths = {}
        self._sampled = {}
        for name, alpha in self.alphas.items():
            probs = torch.softmax(alpha.detach(), dim=-1).double().numpy()
            if step == "weights":
                index = int(self.rng.choice(len(probs), p=probs / probs.sum()))
                gate = torch.zeros(len(probs))
                gate[index] = 1.0
                out[name], self._paths[name] = gate, [index]
                continue
            pair = torch.as_tensor(self.rng.choice(len(probs), size=2, replace=False, p=probs / probs.sum()))
            pair_probs = torch.softmax(alpha[pair], dim=-1)
            first = float(pair_probs[0].detach())
            active = int(self.rng.random() >= first)  # candidate 0 with probability pair_probs[0]
            hard = torch.zeros(2)
            hard[active] = 1.0
            out[name] = torch.zeros(len(probs)).index_put((pair,), hard - pair_probs.detach() + pair_probs)
            self._paths[name] = [int(i) for i in pair]
            self._sampled[name] = (pair, alpha.detach()[pair].clone())
        return out

    def step(self) -> None:
        super().step()
        with torch.no_grad():
            for name, (pair, before) in self._sampled.items():
                alpha = self.alphas[name]
                alpha[pair] -= torch.logsumexp(alpha[pair], 0) - torch.logsumexp(before, 0)
        self._sampled = {}

    def expected_latency(self) -> Tensor:
        """Sum over edges of ``softmax(alpha)``-weighted candidate costs (differentiable)."""
        assert self.latency is not None
        total = torch.zeros(())
        for name, alpha in self.alphas.items():
            costs = torch.tensor([self.latency[str(c)] for c in self.edges[name].candidates])
            total = total + (torch.softmax(alpha, dim=-1) * costs).sum()
        return total

    def loss(self, task_loss: Tensor) -> Tensor:
        if self.latency is None:
            return task_loss
        assert self.reference is not None
        ratio = (torch.log(self.expected_latency()) / np.log(self.reference)).clamp_min(1e-6)
        return self.alpha * task_loss * ratio**self.beta

    def snapshot(self) -> dict[str, Any]:
        extra = {"expected_latency": float(self.expected_latency())} if self.latency is not None else {}
        return {**super().snapshot(), **extra}
