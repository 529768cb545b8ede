"""Training a supernet under a rule, and scoring one of its paths with inherited weights.

:class:`SupernetTrainer` owns a :class:`~nasforge.nn.mixed.Supernet`, its SGD optimiser
and its position in the training stream. Everything it does is a pure function of the seed and
that position, so :meth:`SupernetTrainer.state_dict` (weights, optimiser, counters) is the
whole state: a run restored from it continues bit for bit as if never stopped.

- The training stream is a sequence of minibatches: epoch ``e`` visits the training set in a
  permutation drawn from ``(seed, e)``; a last partial minibatch is dropped.
- The paths of epoch ``e`` come from a generator seeded by ``(seed, e)``.
- Batch norm is recalibrated before scoring (Guo et al. 2020, SPOS): running statistics are
  reset and re-estimated as a plain average over a fixed set of training minibatches on the
  chosen path, so a score depends on the weights and the arch only, never on what was scored
  before.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, NonNegativeInt, PositiveInt
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, Dataset, TensorDataset

from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError
from nasforge.core.seeding import derive_seed
from nasforge.core.space import SearchSpace
from nasforge.nn.mixed import Supernet
from nasforge.oneshot.rules import TrainingRule
from nasforge.tasks.criteria import Criterion, CrossEntropy
from nasforge.tasks.training import SGDSettings

__all__ = ["SupernetSettings", "SupernetTrainer", "affine_batch_norms", "as_tensors", "recalibrate_bn"]


class _SupernetLength(BaseModel):
    """Passes and batch size of supernet training (a base so they stay the first settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: NonNegativeInt
    batch_size: PositiveInt


class SupernetSettings(SGDSettings, _SupernetLength):
    """How the shared weights are trained and how a path is scored: SGD's knobs
    (:class:`~nasforge.tasks.training.SGDSettings`), passes, and scoring.

    Attributes:
        epochs: passes over the training set before any arch is scored.
        batch_size: samples per minibatch (training, recalibration and minibatch scoring).
        lr: peak SGD learning rate; cosine-decayed to 0 over ``epochs`` (constant for rules
            that train inside the search, ENAS, whose length is not known in advance).
        momentum: SGD momentum.
        nesterov: Nesterov momentum.
        weight_decay: SGD weight decay (applied only to the candidates a step trains).
        grad_clip: clip the gradient's global norm to this; None to leave it alone.
        bn_batches: training minibatches that recalibrate batch norm before scoring; 0 keeps
            the running statistics of training.
        eval_batches: validation minibatches to score on; 0 or None scores on the whole split.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bn_batches: NonNegativeInt
    eval_batches: NonNegativeInt | None


def as_tensors(dataset: Dataset, device: str) -> tuple[Tensor, Tensor]:
    """``(images, labels)`` of a dataset, on ``device`` (tensor datasets without a copy)."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        images, labels = dataset.tensors
    else:
        images, labels = next(iter(DataLoader(dataset, batch_size=max(1, len(dataset)))))  # type: ignore[arg-type]
    return images.to(device), labels.to(device)


def _permutation(n: int, seed: int, device: str) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(device)


def recalibrate_bn(model: nn.Module, batches: Iterator[Tensor]) -> None:
    """Re-estimate every batch norm's running statistics as the plain average over ``batches``.

    Statistics are reset and ``momentum`` set to None (a cumulative average) while the batches
    run in train mode without gradients; momentum and the train/eval mode are restored after.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    try:
        with torch.no_grad():
            for images in batches:
                model(images)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)


def affine_batch_norms(model: nn.Module) -> nn.Module:
    """``model`` (changed in place) with every batch norm without learnable scale and shift given
    them, at scale 1 and shift 0: the same function, with the parameters (and ``state_dict``
    keys) of an affine network. Children of ``affine=False`` supernets become the networks the
    space builds, for counting their parameters and loading into ``space.build(arch)``."""
    for module in model.modules():
        if isinstance(module, _BatchNorm) and not module.affine:
            like = module.running_mean if module.running_mean is not None else torch.zeros(module.num_features)
            module.affine = True
            module.weight = nn.Parameter(torch.ones_like(like))
            module.bias = nn.Parameter(torch.zeros_like(like))
    return model


class SupernetTrainer:
    """Trains a supernet's shared weights under a rule and scores paths with them.

    Subclasses change how it trains by overriding :meth:`learning_rate` (the schedule),
    :meth:`backward_paths` (the loss of a step's paths) and :meth:`train_epoch` (which paths
    each step trains); :meth:`minibatch` gives the training stream.

    Args:
        supernet: the weight-sharing network (moved to ``device``).
        space: the space whose archs the supernet runs (the rules sample from it).
        rule: which paths each optimiser step trains.
        settings: optimiser, schedule and scoring settings.
        seed: fixes the data order, the paths and the recalibration and scoring minibatches.
        device: torch device.
        criterion: the training loss (:mod:`nasforge.tasks.criteria`); default cross-entropy.
    """

    def __init__(
        self,
        supernet: Supernet,
        space: SearchSpace,
        rule: TrainingRule,
        settings: SupernetSettings,
        *,
        seed: int,
        device: str = "cpu",
        criterion: Criterion | None = None,
    ) -> None:
        self.supernet = supernet.to(device)
        self.space = space
        self.rule = rule
        self.settings = settings
        self.seed = seed
        self.device = device
        self.optimizer = settings.optimizer(supernet.parameters())
        self.criterion = criterion if criterion is not None else CrossEntropy()
        self._parameters = list(supernet.parameters())  # walking the module tree every step is slow
        #: Epochs of rule-sampled training done.
        self.epochs_done = 0
        #: Minibatches consumed from the training stream.
        self.step = 0
        #: Archs trained one by one (ENAS), each for some steps.
        self.archs_trained = 0
        self._order: tuple[int, Tensor] | None = None

    # -- the training stream -----------------------------------------------------------------

    def steps_per_epoch(self, n_train: int) -> int:
        """Minibatches per epoch (the last partial one is dropped)."""
        steps = n_train // self.settings.batch_size
        if steps == 0:
            raise ConfigError(
                f"supernet batch_size={self.settings.batch_size} is larger than the training split "
                f"({n_train} samples); lower batch_size or use more training data"
            )
        return steps

    def minibatch(self, train: tuple[Tensor, Tensor], step: int) -> tuple[Tensor, Tensor]:
        """Minibatch ``step`` of the training stream (epoch ``e`` in a permutation from ``(seed, e)``)."""
        images, labels = train
        per_epoch = self.steps_per_epoch(len(labels))
        epoch, position = divmod(step, per_epoch)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, _permutation(len(labels), derive_seed(self.seed, "order", epoch), self.device))
        index = self._order[1][position * self.settings.batch_size : (position + 1) * self.settings.batch_size]
        return images[index], labels[index]

    def learning_rate(self, n_train: int) -> float:
        """The learning rate of the next step (:attr:`step`); subclasses override it to change
        the schedule. Here: cosine from ``lr`` to 0 over ``epochs``, constant for rules that
        train the asked archs (ENAS)."""
        total = self.settings.epochs * self.steps_per_epoch(n_train)
        if self.rule.trains_asked_archs or total == 0:
            return self.settings.lr
        return 0.5 * self.settings.lr * (1.0 + math.cos(math.pi * min(self.step, total) / total))

    def backward_paths(self, images: Tensor, labels: Tensor, paths: Sequence[Arch]) -> float:
        """Forward and backward every path of one step on one minibatch, accumulating their
        gradients; returns the summed loss. Subclasses override it to change the per-path loss
        (:class:`~nasforge.oneshot.progressive_shrinking.ShrinkingTrainer` distils from the first path)."""
        loss_sum = 0.0
        inputs, targets = self.criterion.prepare(images, labels)
        for arch in paths:
            self.supernet.activate(arch)
            loss = self.criterion(self.supernet(inputs), targets)
            loss.backward()
            loss_sum += loss.item()
        return loss_sum

    def train_step(self, train: tuple[Tensor, Tensor], paths: Sequence[Arch]) -> float:
        """One optimiser step on the next minibatch: :meth:`learning_rate`, then the gradients of
        :meth:`backward_paths`, clipped; returns the mean loss per path."""
        images, labels = self.minibatch(train, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(len(train[1]))
        if not self.supernet.training:  # train() walks every module: only when needed
            self.supernet.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = self.backward_paths(images, labels, paths)
        if not math.isfinite(loss_sum):
            raise FloatingPointError(
                f"supernet training diverged at step {self.step} (loss {loss_sum}); lower the learning rate"
            )
        if self.settings.grad_clip is not None:
            trained = [p for p in self._parameters if p.grad is not None]  # candidates off the paths have none
            nn.utils.clip_grad_norm_(trained, self.settings.grad_clip)
        self.optimizer.step()
        self.step += 1
        return loss_sum / len(paths)

    def train_epoch(self, train: tuple[Tensor, Tensor]) -> float:
        """One more epoch of rule-sampled training; returns the mean loss per path."""
        per_epoch = self.steps_per_epoch(len(train[1]))
        rng = np.random.default_rng(derive_seed(self.seed, "paths", self.epochs_done))
        losses = [self.train_step(train, self.rule.paths(self.space, rng)) for _ in range(per_epoch)]
        self.epochs_done += 1
        return float(np.mean(losses))

    def train_arch(self, arch: Arch, train: tuple[Tensor, Tensor], steps: int) -> float:
        """``steps`` optimiser steps on ``arch`` alone, continuing the stream (ENAS)."""
        losses = [self.train_step(train, [arch]) for _ in range(steps)]
        self.archs_trained += 1
        return float(np.mean(losses))

    # -- scoring -------------------------------------------------------------------------------

    def _fixed_batches(self, images: Tensor, n: int, purpose: str, start: int = 0) -> Iterator[Tensor]:
        """``n`` minibatches of a fixed permutation of ``images`` (cycling), from ``start``."""
        size = min(self.settings.batch_size, len(images))
        order = _permutation(len(images), derive_seed(self.seed, purpose), self.device)
        per_pass = len(images) // size
        for k in range(start, start + n):
            position = k % per_pass
            yield order[position * size : (position + 1) * size]

    def recalibrate(self, arch: Arch, train: tuple[Tensor, Tensor]) -> None:
        """Activate ``arch`` and recalibrate batch norm on ``bn_batches`` fixed training minibatches."""
        self.supernet.activate(arch)
        if self.settings.bn_batches:
            images = train[0]
            batches = (images[i] for i in self._fixed_batches(images, self.settings.bn_batches, "bn"))
            recalibrate_bn(self.supernet, batches)

    def evaluate(self, arch: Arch, valid: tuple[Tensor, Tensor], *, start: int = 0) -> tuple[float, float]:
        """Accuracy (percent) and mean cross-entropy of ``arch``'s path on ``valid``, in eval mode.

        With ``eval_batches`` set, only that many minibatches of a fixed permutation are used,
        starting at minibatch ``start`` (ENAS moves on by one each arch); else the whole split.
        """
        images, labels = valid
        if self.settings.eval_batches:
            index_batches: list[Tensor | slice] = list(self._fixed_batches(images, self.settings.eval_batches, "eval", start))
        else:
            index_batches = [slice(i, i + 512) for i in range(0, len(labels), 512)]
        self.supernet.activate(arch)
        self.supernet.eval()
        loss_sum, correct, seen = 0.0, 0, 0
        with torch.no_grad():
            for index in index_batches:
                logits = self.supernet(images[index])
                target = labels[index]
                loss_sum += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
                correct += int((logits.argmax(dim=1) == target).sum())
                seen += len(target)
        return 100.0 * correct / seen, loss_sum / seen

    # -- state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser state and stream position: everything to continue exactly."""
        return {
            "supernet": self.supernet.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epochs_done": self.epochs_done,
            "step": self.step,
            "archs_trained": self.archs_trained,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.supernet.load_state_dict(state["supernet"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epochs_done = int(state["epochs_done"])
        self.step = int(state["step"])
        self.archs_trained = int(state["archs_trained"])
