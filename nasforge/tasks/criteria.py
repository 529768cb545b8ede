"""Training criteria: cross-entropy, label smoothing, focal, batch-hard triplet, distillation, MixUp.

A :class:`Criterion` is a loss module with one extra step: :meth:`Criterion.prepare` turns a
batch ``(images, labels)`` into ``(inputs, targets)`` before the forward pass, so MixUp can mix
inputs and targets, and distillation can run its teacher on the same inputs. Training loops
call ``inputs, targets = criterion.prepare(images, labels)``, then ``criterion(model(inputs),
targets)``. Randomness (MixUp's draws) comes from torch's global generator, which the training
loops seed.

Criteria are registry components of kind ``criterion`` (``@register("criterion", NAME)``; a
plugin can add one), built by :func:`make_criterion` as ``train: {criterion: NAME,
criterion_options: {...}}`` selects them. The built-in ones:

- ``cross_entropy``: ``label_smoothing`` (default 0).
- ``label_smoothing``: cross-entropy against targets smoothed by ``smoothing`` (default 0.1;
  Szegedy et al. 2016).
- ``focal``: ``-(1 - p_t)**gamma * log p_t`` (Lin et al. 2017, gamma 2).
- ``triplet``: batch-hard triplet loss on the outputs as embeddings (Hermans et al. 2017; margin
  0.2 as FaceNet, Schroff et al. 2015), for metric-learning tasks.
- ``kd``: knowledge distillation from a teacher network (Hinton et al. 2015): :func:`kd_loss`
  with ``temperature`` 4 and ``alpha`` 0.9; the training loop passes the teacher.
- ``mixup``: MixUp (Zhang et al. 2018), ``alpha`` 0.2: inputs and targets mixed with a
  Beta(alpha, alpha) weight and a shuffled copy of the batch.

Or a user's own loss, named by its import path (:data:`UserFunction`, ``"package.module:function"``
or ``"path/to/file.py:function"``): ``function(outputs, labels, **criterion_options)`` returning a
scalar tensor (:class:`UserCriterion`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

import torch
from pydantic import AfterValidator, Field
from torch import Tensor, nn
from torch.nn import functional as F

from nasforge.core import registry
from nasforge.core.component import Component
from nasforge.core.errors import ConfigError, UnknownComponentError
from nasforge.core.registry import Registered, register
from nasforge.tasks.datasets import load_factory

_USER_FUNCTION = r"^.+:[A-Za-z_]\w*$"

__all__ = [
    "Criterion",
    "CrossEntropy",
    "FocalLoss",
    "TripletLoss",
    "KnowledgeDistillation",
    "MixUp",
    "UserCriterion",
    "UserFunction",
    "kd_loss",
    "mixup_batch",
    "CriterionName",
    "CriterionChoice",
    "make_criterion",
]

#: A registered criterion's name (validated against the registry: built-ins and plugins).
CriterionName = Annotated[str, Registered("criterion")]
#: A user's function by import path: ``"package.module:function"`` or ``"path/to/file.py:function"``.
UserFunction = Annotated[str, Field(pattern=_USER_FUNCTION)]


def _criterion_or_function(value: str) -> str:
    if ":" not in value:
        try:
            return Registered("criterion").check(value)
        except ValueError as exc:
            raise ValueError(f"{exc} Or a user's function: 'package.module:function'.") from None
    if not re.match(_USER_FUNCTION, value):
        raise ValueError(f"criterion {value!r} is not a function's import path 'package.module:function'")
    return value


#: A registered criterion's name, or a user's loss function by import path (:data:`UserFunction`).
CriterionChoice = Annotated[str, AfterValidator(_criterion_or_function)]


class Criterion(Component, nn.Module):
    """A loss with a batch-preparation step (identity by default)."""

    def prepare(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Any]:
        """``(inputs, targets)`` for the forward pass and :meth:`forward`."""
        return images, labels

    def forward(self, outputs: Tensor, targets: Any) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@register("criterion", "cross_entropy")
class CrossEntropy(Criterion):
    """Mean cross-entropy, with targets smoothed by ``label_smoothing`` (0: none)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets, label_smoothing=self.label_smoothing)


@register("criterion", "focal")
class FocalLoss(Criterion):
    """Focal loss (Lin et al., ICCV 2017): cross-entropy scaled by ``(1 - p_t)**gamma``, which
    down-weights well-classified samples; the mean over the batch."""

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be at least 0; got {gamma}")
        self.gamma = gamma

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        log_p = F.log_softmax(outputs, dim=1).gather(1, targets[:, None])[:, 0]
        return (-((1.0 - log_p.exp()) ** self.gamma) * log_p).mean()


@register("criterion", "triplet")
class TripletLoss(Criterion):
    """Batch-hard triplet loss (Hermans, Beyer & Leibe 2017) on the outputs as embeddings.

    For each anchor: its farthest sample of the same label and its nearest sample of another
    label (Euclidean distances within the batch); the loss is the mean of
    ``max(0, d(anchor, positive) - d(anchor, negative) + margin)`` over anchors having both.
    """

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin must be at least 0; got {margin}")
        self.margin = margin

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        embeddings = outputs.flatten(1)
        distances = torch.cdist(embeddings, embeddings)
        same = targets[:, None] == targets[None, :]
        eye = torch.eye(len(targets), dtype=torch.bool, device=targets.device)
        positives = same & ~eye
        usable = positives.any(dim=1) & (~same).any(dim=1)
        if not usable.any():
            return outputs.sum() * 0.0  # no anchor with both a positive and a negative
        hardest_positive = distances.masked_fill(~positives, float("-inf")).amax(dim=1)
        hardest_negative = distances.masked_fill(same, float("inf")).amin(dim=1)
        return F.relu(hardest_positive - hardest_negative + self.margin)[usable].mean()


def kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, temperature: float, alpha: float
) -> Tensor:
    """Knowledge distillation (Hinton, Vinyals & Dean 2015):
    ``alpha * T**2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, targets)``.

    The teacher's logits are treated as constants (detached). ``T**2`` keeps the soft term's
    gradients on the scale of the hard term's as ``T`` changes. ``alpha = 0`` is plain
    cross-entropy; ``alpha = 1`` distillation alone (OFA's in-place distillation uses the largest
    subnet's logits as the teacher's).
    """
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits.detach() / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * temperature**2 * soft + (1.0 - alpha) * F.cross_entropy(student_logits, targets)


@register("criterion", "kd")
class KnowledgeDistillation(Criterion):
    """:func:`kd_loss` against a ``teacher`` network run (in eval mode, without gradients) on
    the same inputs; targets are ``(labels, teacher logits)``."""

    def __init__(self, teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.9) -> None:
        super().__init__()
        if temperature <= 0 or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"kd needs temperature > 0 and alpha in [0, 1]; got {temperature}, {alpha}")
        self.teacher = teacher.eval()
        self.temperature = temperature
        self.alpha = alpha

    def prepare(self, images: Tensor, labels: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        with torch.no_grad():
            self.teacher.eval()
            return images, (labels, self.teacher(images))

    def forward(self, outputs: Tensor, targets: tuple[Tensor, Tensor]) -> Tensor:
        labels, teacher_logits = targets
        return kd_loss(outputs, teacher_logits, labels, self.temperature, self.alpha)


def mixup_batch(
    images: Tensor, labels: Tensor, lam: float, order: Tensor
) -> tuple[Tensor, tuple[Tensor, Tensor, float]]:
    """MixUp of a batch with its permutation ``order``: ``lam * x + (1 - lam) * x[order]``, and
    the targets ``(labels, labels[order], lam)``."""
    return lam * images + (1.0 - lam) * images[order], (labels, labels[order], lam)


@register("criterion", "mixup")
class MixUp(Criterion):
    """MixUp (Zhang, Cisse, Dauphin & Lopez-Paz, ICLR 2018): each batch is mixed with a shuffled
    copy of itself by ``lam ~ Beta(alpha, alpha)``, and the loss is the same mix of the
    cross-entropies against both label sets. ``alpha`` 0.2 as the paper's ImageNet runs."""

    def __init__(self, alpha: float = 0.2) -> None:
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"mixup alpha must be above 0; got {alpha}")
        self.alpha = alpha

    def prepare(self, images: Tensor, labels: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, float]]:
        lam = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        return mixup_batch(images, labels, lam, torch.randperm(len(labels)).to(labels.device))

    def forward(self, outputs: Tensor, targets: tuple[Tensor, Tensor, float]) -> Tensor:
        labels, others, lam = targets
        return lam * F.cross_entropy(outputs, labels) + (1.0 - lam) * F.cross_entropy(outputs, others)


class UserCriterion(Criterion):
    """A user's loss function, imported from ``path`` (:data:`UserFunction`):
    ``function(outputs, labels, **options)`` must return a scalar tensor."""

    def __init__(self, path: str, **options: Any) -> None:
        super().__init__()
        self.path = path
        self.function = load_factory(path, what="criterion")
        self.options = options

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        loss = self.function(outputs, targets, **self.options)
        if not isinstance(loss, Tensor) or loss.ndim != 0:
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ConfigError(f"criterion {self.path!r} must return a scalar tensor (the mean loss), got {shape}")
        return loss


@register("criterion", "label_smoothing")
def _label_smoothing(smoothing: float = 0.1) -> CrossEntropy:
    """Cross-entropy against targets smoothed by ``smoothing`` (Szegedy et al. 2016)."""
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1); got {smoothing}")
    return CrossEntropy(label_smoothing=smoothing)


def make_criterion(
    name: str, options: Mapping[str, Any] | None = None, *, teacher: nn.Module | None = None
) -> Criterion:
    """The registered criterion ``name`` (or a user's, by import path) with ``options``; ``kd``
    also needs the ``teacher`` network.

    Raises:
        ConfigError: an unknown name, an unknown or out-of-range option, ``kd`` without a
            teacher, or a user's function that cannot be imported.
    """
    options = dict(options or {})
    if ":" in name:
        return UserCriterion(name, **options)
    try:
        registry.get("criterion", name)
    except UnknownComponentError as exc:
        raise UnknownComponentError(f"{exc} Or a user's function: 'package.module:function'.") from None
    if name == "kd":
        if teacher is None:
            raise ConfigError(
                "criterion 'kd' distils from a teacher network: set `criterion_options: {teacher: MODEL_FOLDER}` "
                "(a folder written by `nasforge train`), or pass the teacher to the training loop"
            )
        options["teacher"] = teacher
    criterion = registry.create("criterion", name, options, where=f"criterion {name!r}")
    if not isinstance(criterion, Criterion):
        raise ConfigError(f"criterion {name!r} built a {type(criterion).__name__}, not a nasforge Criterion")
    return criterion
