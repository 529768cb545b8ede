"""The steps of a differentiable search: architecture gradients, first and second order.

DARTS (Liu, Simonyan & Yang, ICLR 2019) approximates the gradient of the validation loss at
the weights after one training step, ``w' = w - xi * grad_w L_train(w, alpha)``, by

    grad_alpha L_val(w', alpha) - xi * grad2_{alpha,w} L_train(w, alpha) . grad_w' L_val(w', alpha)   (eq. 7)

and the Hessian-vector product by a central finite difference with ``w+- = w +- eps * grad_w'
L_val``, ``eps = 0.01 / ||grad_w' L_val||`` (eq. 8). :func:`unrolled_gradient` computes it; the
virtual step follows DARTS' code (momentum buffer and weight decay of the weight optimiser
included).

Two optional capabilities of a differentiable strategy, beyond
:class:`~nasforge.core.differentiable.ArchParameters`, shape the search epoch the ``dnas``
estimator runs; it checks them with ``isinstance``, never by the strategy's name:

* :class:`SearchPlan`: which epochs take architecture steps (warm-up epochs train the weights
  only), where the weights' cosine schedule stands (P-DARTS restarts it per stage), and the share
  of the training split the architecture steps use (DARTS half, FBNet a fifth);
* :class:`WeightRecipe`: the method's SGD settings for the supernet weights (GDAS on NB201:
  Nesterov, weight decay 5e-4), used where the estimator's options leave them unset;
* :class:`Cyclic`: CDARTS' evaluation network, a second supernet on the derived arch, trained
  jointly with the alphas through a distillation loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from nasforge.core.arch import Arch

__all__ = ["SearchPlan", "WeightRecipe", "Cyclic", "gradients", "unrolled_gradient"]


@runtime_checkable
class SearchPlan(Protocol):
    """How a strategy's search epochs run (defaults where a strategy lacks it: every epoch
    searches, one cosine over all epochs, half the training split for the architecture).

    Attributes:
        arch_fraction: share of the training split the architecture steps use (the rest trains
            the weights); an epoch is one pass over the weights' share, with the architecture's
            minibatches spread evenly over it.
        arch_every: (optional, default 1) weight steps per architecture step (ProxylessNAS: 5).
    """

    arch_fraction: float

    def searching(self) -> bool:
        """False in warm-up epochs: the weights train, the architecture parameters stay."""
        ...

    def weight_schedule(self) -> tuple[int, int]:
        """``(epoch, length)`` of the weights' cosine learning-rate schedule this epoch."""
        ...


@runtime_checkable
class WeightRecipe(Protocol):
    """A strategy whose method trains the supernet weights with its own SGD settings."""

    def weight_optimizer(self) -> dict[str, Any]:
        """``nesterov`` and/or ``weight_decay`` of the weights' SGD ({}: the estimator's defaults)."""
        ...


@runtime_checkable
class Cyclic(Protocol):
    """A strategy trained with an evaluation network (CDARTS, Yu et al. 2020).

    The estimator builds a second supernet (``space.supernet(**evaluation_options())``) with
    its own SGD optimiser of learning rate ``evaluation_lr``. In each searching epoch it
    activates the evaluation network on :meth:`derived`, trains it one pass on the weights'
    data, then every architecture step descends :meth:`cyclic_loss` in both the alphas and the
    evaluation network's weights.
    """

    evaluation_lr: float

    def evaluation_options(self) -> dict[str, Any]:
        """Keyword options of ``space.supernet`` for the evaluation network."""
        ...

    def derived(self) -> Arch:
        """The arch the evaluation network runs this epoch."""
        ...

    def cyclic_loss(self, search_logits: Tensor, evaluation_logits: Tensor, labels: Tensor) -> Tensor:
        """The joint objective of an architecture step (both networks on the same minibatch)."""
        ...


def gradients(loss: Tensor, tensors: Sequence[Tensor]) -> list[Tensor]:
    """``d loss / d tensor`` for each tensor, zeros for those the loss does not reach."""
    grads = torch.autograd.grad(loss, list(tensors), allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads, strict=True)]


def unrolled_gradient(
    weights: Sequence[Tensor],
    alphas: Sequence[Tensor],
    train_loss: Callable[[], Tensor],
    valid_loss: Callable[[], Tensor],
    xi: float,
    *,
    momentum: float = 0.0,
    buffers: Sequence[Tensor | None] | None = None,
    weight_decay: float = 0.0,
    eps: float = 0.01,
) -> list[Tensor]:
    """DARTS' second-order architecture gradient (eq. 7, Hessian-vector product by eq. 8).

    Args:
        weights: the network weights ``w`` (modified in place during the call, restored after).
        alphas: the architecture parameters.
        train_loss: computes ``L_train(w, alpha)`` with the current tensors.
        valid_loss: computes the architecture objective ``L_val(w, alpha)``.
        xi: the virtual step's learning rate (DARTS: the weights' current one).
        momentum: the weight optimiser's momentum; with ``buffers`` (its momentum buffers,
            None where it has none yet) the virtual step includes it, as DARTS does.
        weight_decay: the weight optimiser's weight decay.
        eps: numerator of the finite-difference step.

    Returns:
        One gradient per alpha.
    """
    original = [w.detach().clone() for w in weights]
    try:
        grads = gradients(train_loss(), weights)
        with torch.no_grad():
            for i, (w, g) in enumerate(zip(weights, grads, strict=True)):
                buffer = buffers[i] if buffers is not None else None
                step = g + weight_decay * w
                if buffer is not None:
                    step = step + momentum * buffer
                w.sub_(xi * step)
        val_grads = gradients(valid_loss(), [*alphas, *weights])
        direct, dw = val_grads[: len(alphas)], val_grads[len(alphas) :]
        radius = eps / torch.cat([g.reshape(-1) for g in dw]).norm().clamp_min(1e-12)
        with torch.no_grad():
            for w, w0, g in zip(weights, original, dw, strict=True):
                w.copy_(w0 + radius * g)
        plus = gradients(train_loss(), alphas)
        with torch.no_grad():
            for w, w0, g in zip(weights, original, dw, strict=True):
                w.copy_(w0 - radius * g)
        minus = gradients(train_loss(), alphas)
    finally:
        with torch.no_grad():
            for w, w0 in zip(weights, original, strict=True):
                w.copy_(w0)
    return [d - xi * (p - m) / (2 * radius) for d, p, m in zip(direct, plus, minus, strict=True)]
