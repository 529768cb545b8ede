"""CDARTS (Yu et al., 2020, "Cyclic Differentiable Architecture Search"), as NNI offers it.

Two networks learn from each other. The *search network* is the DARTS supernet, its edges mixed
by ``softmax(alpha)``; the *evaluation network* is a second supernet (its own weights; deeper on
DARTS spaces) run in single-path mode on the arch derived from the alphas. After ``warmup``
epochs that train the search network's weights only, each epoch (i) re-derives the arch and
trains the evaluation network on it for one pass over the weights' data, then (ii) alternates,
per minibatch, an architecture step on a validation minibatch that descends

    (CE(search) + CE(eval)) / loss_alpha
      + KL(softmax(eval / T) || softmax(search / T)) * T**2 * loss_alpha + regularisation

in both the alphas and the evaluation network's weights (the KL feeds the evaluation network's
outputs back into the alphas, and the alphas' outputs into the evaluation network), with a
weight step of the search network on a training minibatch. The ``dnas`` estimator runs this loop
for any strategy with the :class:`~nasforge.oneshot.bilevel.Cyclic` capability.

Faithful to NNI's ``CdartsTrainer``: the KL is averaged over batch and classes (its
``KLDivLoss()``), the regularisation is ``regular_coeff`` (decaying linearly to 0 over the first
``regular_ratio`` of the post-warm-up epochs) times an L1 term that depends on the space. On DARTS
spaces it is the sum of |alpha| of pooling, skip and dilated ops (NNI's DARTS-space setting). On
spaces without DARTS' derivation rule (NB201) it is the *mean* |alpha| of ``none``, as the
official NB201 code does: ``CDARTSController.l1_loss`` in
``CDARTS/benchmark201/models/cdarts_controller.py`` of github.com/microsoft/Cream
(``torch.mean(torch.abs(self._arch_parameters[:, 0:1]))``, column 0 being ``none``), called from
``core/search_function.py`` there. Pinning skip and pooling but leaving ``none`` free lets NB201
cells cut the output off from the input; ``regular_ops``/``regular_reduce`` choose either. Simplifications: the networks share no stem or auxiliary heads, and the
KL is on their final logits (NNI distils ensembles of auxiliary heads).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from torch import Tensor, nn

from nasforge.core.registry import register
from nasforge.strategies.alphas import Adam
from nasforge.strategies.darts import DARTS

__all__ = ["CDARTS", "CDARTSAdam"]


class CDARTSAdam(Adam):
    """CDARTS' CIFAR-10 search (NNI's script): lr 3e-4, betas (0.5, 0.999), no weight decay."""

    weight_decay: NonNegativeFloat = 0.0


CDARTS_ADAM = CDARTSAdam()

#: Candidates whose alphas NNI's CDARTS regularises on DARTS spaces (pooling without BN, identity,
#: dilated convs).
REGULARISED = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "dil_conv_3x3", "dil_conv_5x5")
#: What the official NB201 code of CDARTS regularises: ``none`` (column 0 of NB201's ops).
REGULARISED_NB201 = ("none",)


@register("strategy", "cdarts", tags=("differentiable",))
class CDARTS(DARTS):
    """CDARTS' architecture side; the module docstring gives the loop and the loss.

    Defaults are NNI's CIFAR-10 search script: 32 epochs of which 2 warm-up, loss_alpha 1,
    temperature 2, regularisation 5 over the first 20% of the joint epochs, evaluation network
    SGD lr 0.2 (momentum and weight decay: the ``dnas`` estimator's, whose ``lr`` NNI sets to 0.2
    and ``weight_decay`` to 0), alphas by Adam lr 3e-4, betas (0.5, 0.999), no weight decay.
    NNI's evaluation network has 20 cells to the search network's 8: ``evaluation_layers: 20``
    on DARTS spaces; None keeps the search network's shape (the only choice on NB201).

    Args:
        epochs: search epochs.
        warmup: epochs, at the start, that train the search network's weights only.
        evaluation_layers: cells of the evaluation network (DARTS spaces), None: the search's.
        evaluation_lr: the evaluation network's SGD learning rate (on the weights' schedule).
        loss_alpha: balance of the classification and distillation terms.
        temperature: the distillation's softmax temperature ``T``.
        regular_coeff, regular_ratio: the regularisation's initial weight and the share of the
            joint epochs over which it decays to 0.
        regular_ops: candidates whose alphas are regularised; None: by the space, pooling, skip and
            dilated convs on DARTS spaces (summed), ``none`` elsewhere (NB201, averaged).
        regular_reduce: ``sum`` or ``mean`` of their |alpha|; None: by the space, as ``regular_ops``.
        adam: the alphas' optimiser.
    """

    def __init__(
        self,
        epochs: PositiveInt = 32,
        warmup: NonNegativeInt = 2,
        evaluation_layers: PositiveInt | None = None,
        evaluation_lr: PositiveFloat = 0.2,
        loss_alpha: PositiveFloat = 1.0,
        temperature: PositiveFloat = 2.0,
        regular_coeff: NonNegativeFloat = 5.0,
        regular_ratio: Annotated[float, Field(gt=0, le=1)] = 0.2,
        regular_ops: tuple[str, ...] | None = None,
        regular_reduce: Literal["sum", "mean"] | None = None,
        adam: CDARTSAdam = CDARTS_ADAM,
    ) -> None:
        super().__init__(epochs, adam)
        self.warmup = warmup
        self.evaluation_layers = evaluation_layers
        self.evaluation_lr = evaluation_lr
        self.loss_alpha = loss_alpha
        self.temperature = temperature
        self.regular_coeff = regular_coeff
        self.regular_ratio = regular_ratio
        self.regular_ops = regular_ops
        self.regular_reduce = regular_reduce

    def regularised(self) -> tuple[tuple[str, ...], Literal["sum", "mean"]]:
        """The candidates the L1 term covers and how it reduces them, the options or the space's
        setting: DARTS spaces (with a derivation rule) NNI's, other spaces (NB201) the official
        NB201 code's."""
        darts_like = self._derive is not None
        ops = self.regular_ops if self.regular_ops is not None else (REGULARISED if darts_like else REGULARISED_NB201)
        reduce = self.regular_reduce if self.regular_reduce is not None else ("sum" if darts_like else "mean")
        return ops, reduce

    def searching(self) -> bool:
        return self.epoch >= self.warmup

    def evaluation_options(self) -> dict[str, Any]:
        return {} if self.evaluation_layers is None else {"layers": self.evaluation_layers}

    def regularisation(self) -> Tensor:
        """``coeff(epoch)`` times the sum (DARTS) or mean (NB201) of |alpha| over the regularised
        candidates of every edge (:meth:`regularised`)."""
        joint = max(1, self.epochs - self.warmup)
        coeff = max(self.regular_coeff * (1 - (self.epoch - self.warmup) / (joint * self.regular_ratio)), 0.0)
        total = torch.zeros(())
        if coeff == 0:
            return total
        ops, reduce = self.regularised()
        picked_alphas = []
        for name, alpha in self.alphas.items():
            picked = [i for i, value in enumerate(self.edges[name].candidates) if value in ops]
            if picked:
                picked_alphas.append(alpha[picked].abs())
        if not picked_alphas:
            return total
        values = torch.cat(picked_alphas)
        return coeff * (values.mean() if reduce == "mean" else values.sum())

    def loss(self, task_loss: Tensor) -> Tensor:
        """The task loss plus the regularisation (for estimators without an evaluation network)."""
        return task_loss + self.regularisation()

    def cyclic_loss(self, search_logits: Tensor, evaluation_logits: Tensor, labels: Tensor) -> Tensor:
        cross_entropy = nn.functional.cross_entropy
        classification = (
            cross_entropy(search_logits, labels) + cross_entropy(evaluation_logits, labels)
        ) / self.loss_alpha
        t = self.temperature
        teacher = torch.log_softmax(evaluation_logits / t, dim=1)
        student = torch.log_softmax(search_logits / t, dim=1)
        kl = (teacher.exp() * (teacher - student)).mean()  # KLDivLoss(): the mean over batch and classes
        return classification + kl * t**2 * self.loss_alpha + self.regularisation()

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "regularisation": float(self.regularisation().detach())}
