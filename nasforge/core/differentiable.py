"""The differentiable-NAS protocol: a strategy that owns architecture parameters.

In differentiable NAS (DARTS, GDAS, SNAS, PC-DARTS, ProxylessNAS) the *strategy* owns the
architecture parameters (the alphas) and their optimiser, and the *estimator* owns the supernet
weights and theirs. A strategy that provides :class:`ArchParameters` is handed to the estimator
through ``Context.arch_parameters``; the runner fills that field by a capability check
(``isinstance(strategy, ArchParameters)``), never by the strategy's name.

One search epoch, as an estimator runs it::

    for each minibatch:
        supernet.set_weights(arch.weights("arch"))      # architecture step
        arch.loss(task loss).backward() (or a hypergradient into .grad); arch.step()
        supernet.set_weights(arch.weights("weights"))   # weight step (no gradient to the alphas)
        task loss.backward(); weight optimiser step
    arch.end_epoch()
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from torch import Tensor

from nasforge.core.capabilities import HasEdges

if TYPE_CHECKING:
    from nasforge.core.arch import Choice
    from nasforge.core.space import SearchSpace

__all__ = ["ArchParameters", "StepKind", "edge_choices"]

#: Which optimisation step the supernet weights are asked for.
StepKind = Literal["weights", "arch"]


@runtime_checkable
class ArchParameters(Protocol):
    """Architecture parameters and their optimiser, as a differentiable strategy exposes them.

    Attributes:
        epoch: search epochs completed (advanced by :meth:`end_epoch`).
        epochs: search epochs planned; schedules (temperatures, the weights' cosine learning
            rate) run over them, and the estimator stops training once ``epoch == epochs``.
        bilevel: True when the architecture step uses its own data split (DARTS' bilevel
            problem); False when alphas and weights descend the training loss jointly (SNAS).
        partial_channels: K of PC-DARTS (only ``1/K`` of an edge's channels enter its mixed
            op); 1 for every other method.
    """

    epoch: int
    epochs: int
    bilevel: bool
    partial_channels: int

    def parameters(self) -> list[Tensor]:
        """The architecture parameters (leaf tensors with ``requires_grad``)."""
        ...

    def weights(self, step: StepKind) -> dict[str, Tensor]:
        """What to feed ``supernet.set_weights`` for a step: ``{choice name: 1-D weights}``.

        ``"arch"`` weights carry gradients to :meth:`parameters`; ``"weights"`` weights are
        detached (a zero entry then skips its candidate, so sampling methods train one path).
        Sampling methods draw a fresh sample on every call.
        """
        ...

    def paths(self) -> dict[str, list[int]] | None:
        """Candidates the last :meth:`weights` call needs run, per choice (None: every candidate
        whose weight is non-zero or carries a gradient); the others are skipped."""
        ...

    def supernet_options(self) -> dict[str, Any]:
        """Keyword options of ``space.supernet`` for the current epoch: ``{"partial_channels": K}``
        for PC-DARTS, the current stage's depth for P-DARTS, ``{}`` for the others. The estimator
        builds a fresh supernet and weight optimiser whenever they change."""
        ...

    def op_dropout(self) -> dict[str, float]:
        """Dropout rate on the output of the candidates of these values while training (P-DARTS'
        dropout after skip connections); ``{}`` for none."""
        ...

    def loss(self, task_loss: Tensor) -> Tensor:
        """The architecture objective for ``task_loss`` (e.g. plus an expected-latency term)."""
        ...

    def step(self) -> None:
        """One optimiser step from the gradients in ``parameters()[i].grad``, then zero them."""
        ...

    def end_epoch(self) -> None:
        """Mark a search epoch done (advances ``epoch`` and the schedules)."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """JSON-able view of the parameters for logs: ``{"epoch", "probs": {name: [...]}, ...}``."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the architecture search exactly."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        ...


def edge_choices(space: SearchSpace) -> Mapping[str, Choice]:
    """The edges a differentiable method weighs: ``space.edge_choices()`` where the space has
    one (DARTS: ``none`` included, archs derived by ``space.derive``), else its own choices."""
    return space.edge_choices() if isinstance(space, HasEdges) else space.choices()
