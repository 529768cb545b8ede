"""Supervised training of a classifier: SGD with momentum, cosine learning rate, evaluation.

This is how NAS-Bench-201 trains its cells (SGD, Nesterov momentum 0.9, weight decay 5e-4,
learning rate 0.1 decayed by a cosine to 0, batch 256, 200 epochs). The defaults here keep the
recipe but are sized for short search-time runs on small data: learning rate 0.05, batch 64 and
5 epochs.

Tensor-backed datasets (``TensorDataset``, or concatenations and subsets of them, as every
built-in dataset is) are iterated by indexing the tensors with a seeded permutation, much faster
than a ``DataLoader``; any other dataset goes through a ``DataLoader`` with a seeded generator.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    model_validator,
)
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset, TensorDataset

from nasforge.core.errors import ConfigError
from nasforge.core.seeding import seeded
from nasforge.tasks.augment import AugmentPolicy, augment_batch
from nasforge.tasks.criteria import Criterion, CriterionChoice, UserFunction, make_criterion
from nasforge.tasks.datasets import load_factory

__all__ = [
    "TrainSettings",
    "TrainReport",
    "Evaluation",
    "Metric",
    "train_model",
    "evaluate",
    "evaluate_model",
    "SGDSettings",
    "LearningRate",
    "Momentum",
    "WeightDecay",
    "GradClip",
    "UnitFraction",
]

# -- SGD: the one definition of its knobs, for every trainer (final training, scratch, the
# supernets, DNAS). Estimators whose options are constructor parameters annotate them with these.
#: SGD's (peak) learning rate: above 0.
LearningRate = Annotated[float, Field(gt=0)]
#: Momentum of SGD: 0 (none) up to, not including, 1.
Momentum = Annotated[float, Field(ge=0, lt=1)]
#: SGD's weight decay (L2 penalty): 0 or more.
WeightDecay = Annotated[float, Field(ge=0)]
#: The gradient's global norm is clipped to this (above 0); ``GradClip | None``, None for no clip.
GradClip = Annotated[float, Field(gt=0)]
#: A share in [0, 1), e.g. label smoothing.
UnitFraction = Annotated[float, Field(ge=0, lt=1)]

#: ``progress(epoch, n_epochs, metrics)`` is called after every epoch (epochs count from 1).
Progress = Callable[[int, int, dict[str, float]], None]
#: A user's metric: ``metric(outputs, labels)`` of a whole evaluation set, a number, higher is better.
Metric = Callable[[torch.Tensor, torch.Tensor], Any]


class SGDSettings(BaseModel):
    """SGD's knobs, shared by every trainer (final training, scratch, supernets); each trainer
    keeps its own defaults (these are the scratch/final-training ones).

    Attributes:
        lr: peak learning rate (each trainer's schedule decays it).
        momentum: SGD momentum.
        nesterov: Nesterov momentum (needs ``momentum > 0``).
        weight_decay: L2 penalty, as SGD applies it.
        grad_clip: clip the gradient's global norm to this; None to leave it alone.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: LearningRate = 0.05
    momentum: Momentum = 0.9
    nesterov: bool = True
    weight_decay: WeightDecay = 5e-4
    grad_clip: GradClip | None = 5.0

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDSettings:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        return self

    def optimizer(self, parameters: Any) -> torch.optim.SGD:
        """``torch.optim.SGD`` over ``parameters`` with these settings (``lr`` the initial rate)."""
        return torch.optim.SGD(
            parameters, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov, weight_decay=self.weight_decay
        )


class _TrainLength(BaseModel):
    """Passes and batch size of final/scratch training (a base so they stay the first settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: PositiveInt = 5
    batch_size: PositiveInt = 64


class TrainSettings(SGDSettings, _TrainLength):
    """How to train: the optimiser, the schedule and the loss.

    Attributes:
        epochs: passes over the training set.
        batch_size: samples per step.
        lr: peak learning rate; a cosine decays it to 0 over all steps (after the warm-up).
        momentum: SGD momentum.
        nesterov: Nesterov momentum (needs ``momentum > 0``).
        weight_decay: L2 penalty on every parameter, as NB201 applies it.
        grad_clip: clip the gradient's global norm to this; None to leave it alone.
        label_smoothing: cross-entropy label smoothing (training loss only).
        warmup_epochs: epochs of linear warm-up from 0 to ``lr`` (fewer than ``epochs``).
        eval_batch_size: samples per step when evaluating.
        aux_weight: weight of the auxiliary head's loss, for models that return
            ``(logits, aux_logits)`` in training mode (DARTS uses 0.4).
        drop_path_prob: final drop-path probability for models with a ``drop_path_prob``
            attribute, ramped linearly from 0 over the epochs as DARTS does (DARTS uses 0.2).
        augment: augmentation of each training batch (``none``, ``flip``, ``crop``,
            ``crop_flip``; see :mod:`nasforge.tasks.augment`).
        criterion: the training loss (:mod:`nasforge.tasks.criteria`): ``cross_entropy`` (with
            ``label_smoothing``), ``label_smoothing``, ``focal``, ``triplet``, ``kd``, ``mixup``,
            or a user's ``"package.module:function"`` (``function(outputs, labels, **options)``
            returning the mean loss).
        criterion_options: the criterion's options, e.g. ``{gamma: 2}`` for ``focal``; for
            ``kd``, ``teacher``: a model folder written by ``nasforge train`` (or the training
            loop is given the teacher).
        metric: a user's ``"package.module:function"``: ``function(outputs, labels)`` on the
            whole evaluation set, a number, higher is better; reported as ``val_metric``
            (search) or ``test_metric`` (final training) next to the accuracy.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    label_smoothing: UnitFraction = 0.0
    warmup_epochs: NonNegativeInt = 0
    eval_batch_size: PositiveInt = 512
    aux_weight: NonNegativeFloat = 0.4
    drop_path_prob: UnitFraction = 0.0
    augment: AugmentPolicy = "none"
    criterion: CriterionChoice = "cross_entropy"
    criterion_options: dict[str, float | str] = Field(default_factory=dict)
    metric: UserFunction | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TrainSettings:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} must be fewer than epochs={self.epochs}")
        try:
            make_criterion(self.criterion, self.criterion_options, teacher=nn.Identity())
            self.make_metric()
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def make_criterion(self, teacher: nn.Module | None = None) -> Criterion:
        """The training criterion; ``cross_entropy`` takes :attr:`label_smoothing` unless its
        options set it."""
        options = dict(self.criterion_options)
        if self.criterion == "cross_entropy":
            options.setdefault("label_smoothing", self.label_smoothing)
        return make_criterion(self.criterion, options, teacher=teacher)

    def make_metric(self) -> Metric | None:
        """The user's metric function (imported), or None without one."""
        return None if self.metric is None else load_factory(self.metric, what="metric")

    def lr_at(self, step: int, total_steps: int, steps_per_epoch: int) -> float:
        """Learning rate of optimiser step ``step`` (from 0): linear warm-up, then cosine to 0."""
        warmup = self.warmup_epochs * steps_per_epoch
        if step < warmup:
            return self.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * progress))


@dataclass
class TrainReport:
    """What one training run did.

    Attributes:
        train_loss: mean training loss of each epoch (with label smoothing, if any).
        train_acc: training accuracy of each epoch, in percent, measured on the fly.
        eval_acc: accuracy on ``eval_set`` after training, in percent (None without one).
        eval_loss: mean cross-entropy on ``eval_set`` after training (None without one).
        eval_metric: the settings' ``metric`` on ``eval_set`` (None without either).
        seconds: wall-clock time of training and evaluation.
        epochs: epochs trained.
    """

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    eval_acc: float | None = None
    eval_loss: float | None = None
    eval_metric: float | None = None
    seconds: float = 0.0
    epochs: int = 0


def _tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(images, labels)`` of a tensor-backed dataset, or None when it is not one."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        return dataset.tensors[0], dataset.tensors[1]
    if isinstance(dataset, ConcatDataset):
        parts = [_tensors(d) for d in dataset.datasets]
        if parts and all(p is not None for p in parts):
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])  # type: ignore[index]
    if isinstance(dataset, Subset):
        inner = _tensors(dataset.dataset)
        if inner is not None:
            index = torch.as_tensor(dataset.indices, dtype=torch.long)
            return inner[0][index], inner[1][index]
    return None


def _on_device(dataset: Dataset, device: str) -> tuple[torch.Tensor, torch.Tensor] | Dataset:
    """A tensor-backed dataset's tensors, moved to ``device`` once; any other dataset as is."""
    tensors = _tensors(dataset)
    return dataset if tensors is None else (tensors[0].to(device), tensors[1].to(device))


def _batches(
    source: tuple[torch.Tensor, torch.Tensor] | Dataset,
    batch_size: int,
    *,
    generator: torch.Generator | None,
    device: str,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``source`` (from :func:`_on_device`), shuffled when a generator is given."""
    if isinstance(source, tuple):
        images, labels = source
        n = len(labels)
        order = None if generator is None else torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, batch_size):
            if order is None:
                yield images[start : start + batch_size], labels[start : start + batch_size]
            else:
                index = order[start : start + batch_size]
                yield images[index], labels[index]
        return
    loader = DataLoader(source, batch_size=batch_size, shuffle=generator is not None, generator=generator)
    for images, labels in loader:
        yield images.to(device), labels.to(device)


def _steps_per_epoch(n: int, batch_size: int) -> int:
    steps = math.ceil(n / batch_size)
    return steps - 1 if n > 1 and n % batch_size == 1 else steps


def train_model(
    model: nn.Module,
    train_set: Dataset,
    settings: TrainSettings,
    *,
    seed: int,
    device: str = "cpu",
    eval_set: Dataset | None = None,
    progress: Progress | None = None,
    teacher: nn.Module | None = None,
) -> TrainReport:
    """Train ``model`` in place on ``train_set``, then evaluate it on ``eval_set`` if given.

    The model is moved to ``device``. ``seed`` fixes the sample order and any randomness inside
    the model (dropout, drop-path): the same model, data, settings and seed give identical
    results. The global random state is left as it was. Initialising the model's weights is the
    caller's business (seed torch before building it, as the scratch estimator does).

    A last batch of a single sample is skipped, since batch norm cannot train on one. The loss
    is ``settings.criterion``; ``teacher`` is the network the ``kd`` criterion distils from.

    Raises:
        ValueError: the training set is empty.
        FloatingPointError: the loss became NaN or infinite (the learning rate is too high for
            this model); the epoch is named.
    """
    n = len(train_set)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("cannot train on an empty training set")
    start = time.perf_counter()
    model.to(device)
    optimizer = settings.optimizer(model.parameters())
    criterion = settings.make_criterion(teacher=None if teacher is None else teacher.to(device))
    steps_per_epoch = _steps_per_epoch(n, settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch
    report = TrainReport()
    with seeded(seed, device):
        generator = torch.Generator().manual_seed(seed)
        source = _on_device(train_set, device)
        step = 0
        for epoch in range(1, settings.epochs + 1):
            model.train()
            if settings.drop_path_prob > 0 and hasattr(model, "drop_path_prob"):  # DARTS: ramp linearly from 0
                model.drop_path_prob = settings.drop_path_prob * (epoch - 1) / settings.epochs
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            seen = 0
            for images, labels in _batches(source, settings.batch_size, generator=generator, device=device):
                if len(labels) < 2 and seen > 0:
                    continue
                if settings.augment != "none":
                    images = augment_batch(images, settings.augment)
                for group in optimizer.param_groups:
                    group["lr"] = settings.lr_at(step, total_steps, steps_per_epoch)
                inputs, targets = criterion.prepare(images, labels)
                output = model(inputs)
                if isinstance(output, tuple):  # (logits, auxiliary logits), as DARTS-style networks train
                    logits, aux_logits = output
                    loss = criterion(logits, targets) + settings.aux_weight * criterion(aux_logits, targets)
                else:
                    logits = output
                    loss = criterion(logits, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if settings.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
                optimizer.step()
                step += 1
                loss_sum += loss.detach() * len(labels)
                correct += (logits.detach().argmax(dim=1) == labels).sum()
                seen += len(labels)
            mean_loss = loss_sum.item() / seen
            if not math.isfinite(mean_loss):
                raise FloatingPointError(
                    f"training diverged: loss {mean_loss} in epoch {epoch} (lr={settings.lr}); lower the learning rate"
                )
            report.train_loss.append(mean_loss)
            report.train_acc.append(100.0 * correct.item() / seen)
            report.epochs = epoch
            if progress is not None:
                progress(epoch, settings.epochs, {"train_loss": mean_loss, "train_acc": report.train_acc[-1]})
    if eval_set is not None:
        scores = evaluate_model(
            model, eval_set, batch_size=settings.eval_batch_size, device=device, metric=settings.make_metric()
        )
        report.eval_acc, report.eval_loss, report.eval_metric = scores.acc, scores.loss, scores.metric
    report.seconds = time.perf_counter() - start
    return report


@dataclass(frozen=True)
class Evaluation:
    """A model's scores on a dataset: accuracy (percent), mean cross-entropy, and a user's
    metric (None without one)."""

    acc: float
    loss: float
    metric: float | None = None


def evaluate_model(
    model: nn.Module, dataset: Dataset, *, batch_size: int = 512, device: str = "cpu", metric: Metric | None = None
) -> Evaluation:
    """Score ``model`` on ``dataset`` in eval mode, in one pass; ``metric`` is called once on all
    the outputs and labels. The model's train/eval mode is restored afterwards.

    Raises:
        ConfigError: ``metric`` returned something that is not a number.
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("cannot evaluate on an empty dataset")
    was_training = model.training
    model.to(device).eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for images, labels in _batches(_on_device(dataset, device), batch_size, generator=None, device=device):
                logits = model(images)
                loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum")
                correct += (logits.argmax(dim=1) == labels).sum()
                seen += len(labels)
                if metric is not None:
                    kept.append((logits, labels))
            value = None if metric is None else metric(torch.cat([o for o, _ in kept]), torch.cat([t for _, t in kept]))
    finally:
        model.train(was_training)
    try:
        score = None if value is None else float(value)
    except (TypeError, ValueError):
        name = getattr(metric, "__name__", repr(metric))
        raise ConfigError(f"metric {name!r} must return a number, got {type(value).__name__}") from None
    return Evaluation(100.0 * correct.item() / seen, loss_sum.item() / seen, score)


def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 512, device: str = "cpu") -> tuple[float, float]:
    """Accuracy (percent) and mean cross-entropy of ``model`` on ``dataset``, in eval mode
    (:func:`evaluate_model` without a metric)."""
    scores = evaluate_model(model, dataset, batch_size=batch_size, device=device)
    return scores.acc, scores.loss
