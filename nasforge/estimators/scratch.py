"""The train-from-scratch estimator: build the child, train it on ``train``, score it on ``valid``.

The plainest and costliest way to measure an arch, and the ground truth the cheaper estimators
(weight sharing, predictors, zero-cost proxies) approximate.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from pydantic import NonNegativeInt, PositiveInt
from torch import nn

from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError
from nasforge.core.estimator import Context, Estimator
from nasforge.core.registry import register
from nasforge.core.seeding import seeded
from nasforge.core.trial import Result
from nasforge.nn.counters import count_flops, count_params
from nasforge.spaces.hparams import apply_hparams, hparams_of
from nasforge.tasks.augment import AugmentPolicy
from nasforge.tasks.criteria import CriterionChoice, UserFunction
from nasforge.tasks.model_folder import load_teacher
from nasforge.tasks.splits import DataSplits
from nasforge.tasks.training import (
    GradClip,
    LearningRate,
    Momentum,
    TrainSettings,
    UnitFraction,
    WeightDecay,
    train_model,
)

__all__ = ["ScratchTraining"]


@register("estimator", "scratch")
class ScratchTraining(Estimator):
    """Train each arch from scratch with SGD and a cosine schedule; report validation accuracy.

    Options are those of :class:`~nasforge.tasks.training.TrainSettings`. The defaults are a
    short run (5 epochs, batch 64, lr 0.05) that trains a NAS-Bench-201 child with C=8, N=1 on
    the digits dataset in one to two seconds on one CPU core; for NB201's own recipe use
    ``epochs: 200, batch_size: 256, lr: 0.1``.

    Metrics: ``val_acc`` (percent) and ``val_loss`` on the valid split (and ``val_metric``, the
    user's ``metric``, if set), ``train_acc`` and ``train_loss`` of the last epoch, ``params``
    and ``flops`` of the child for one input. Cost:
    ``seconds`` (build, count and train) and ``epochs``. The learning curve goes in ``extras``.
    The trial seed fixes the weight initialisation and the sample order.

    An arch of a space with hyperparameter choices (``with_hparams``, ``hpo``) overrides these
    settings with its ``hp.NAME`` values for its own training; they are kept in ``extras``.
    ``criterion`` selects the training loss (:mod:`nasforge.tasks.criteria`): a name, or a
    user's ``"package.module:function"``; ``kd`` takes its teacher from
    ``criterion_options: {teacher: MODEL_FOLDER}``. ``metric`` is a user's
    ``"package.module:function"`` scoring the validation outputs (higher is better), e.g. for an
    objective ``{type: single, metric: val_metric}``.
    """

    #: Tiny settings for the conformance suite (nasforge.testing.suites).
    conformance_options: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 32}
    reports: ClassVar[frozenset[str] | None] = frozenset({"val_acc", "val_loss", "train_acc", "train_loss", "params", "flops"})

    def __init__(
        self,
        epochs: PositiveInt = 5,
        batch_size: PositiveInt = 64,
        lr: LearningRate = 0.05,
        momentum: Momentum = 0.9,
        nesterov: bool = True,
        weight_decay: WeightDecay = 5e-4,
        grad_clip: GradClip | None = 5.0,
        label_smoothing: UnitFraction = 0.0,
        warmup_epochs: NonNegativeInt = 0,
        augment: AugmentPolicy = "none",
        criterion: CriterionChoice = "cross_entropy",
        criterion_options: dict[str, float | str] | None = None,
        metric: UserFunction | None = None,
    ) -> None:
        if criterion == "kd" and "teacher" not in (criterion_options or {}):
            raise ValueError("criterion 'kd' needs a teacher network: set criterion_options: {teacher: MODEL_FOLDER}")
        self.settings = TrainSettings(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            grad_clip=grad_clip,
            label_smoothing=label_smoothing,
            warmup_epochs=warmup_epochs,
            augment=augment,
            criterion=criterion,
            criterion_options=criterion_options or {},
            metric=metric,
        )
        self._teacher: tuple[object, nn.Module | None] | None = None  # (teacher option, its network)

    def reported_metrics(self) -> frozenset[str] | None:
        """Its metrics, and ``val_metric`` when a user ``metric`` is set."""
        assert self.reports is not None
        return self.reports | ({"val_metric"} if self.settings.metric is not None else set())

    def _kd_teacher(self, settings: TrainSettings, data: DataSplits) -> nn.Module | None:
        """The ``kd`` teacher of ``settings`` (None for other criteria), read once per folder."""
        option = (settings.criterion, settings.criterion_options.get("teacher"))
        if self._teacher is None or self._teacher[0] != option:
            self._teacher = (option, load_teacher(settings, data))
        return self._teacher[1]

    def estimate(self, arch: Arch, ctx: Context) -> Result:
        """Build ``arch`` (weights seeded by ``ctx.seed``), train it on ``ctx.data.train``, score on ``valid``."""
        data = ctx.data
        if data is None:
            raise ConfigError(
                "the scratch estimator trains every arch, so it needs a dataset; "
                "set `data:` in the config (e.g. `data: {type: digits}`)"
            )
        hparams = hparams_of(arch)
        settings = apply_hparams(self.settings, hparams)
        start = time.perf_counter()
        with seeded(ctx.seed, ctx.device):
            model = ctx.space.build(arch)
        params = count_params(model)
        flops = count_flops(model, (data.in_channels, *data.input_size))

        def log_epoch(epoch: int, n_epochs: int, metrics: dict[str, float]) -> None:
            ctx.log.debug(
                "epoch %d/%d: train loss %.4f, train acc %.2f%%",
                epoch,
                n_epochs,
                metrics["train_loss"],
                metrics["train_acc"],
            )
            ctx.report_epoch("epoch", epoch, n_epochs, metrics)

        report = train_model(
            model,
            data.train,
            settings,
            seed=ctx.seed,
            device=ctx.device,
            eval_set=data.valid,
            progress=log_epoch,
            teacher=self._kd_teacher(settings, data),
        )
        assert report.eval_acc is not None and report.eval_loss is not None
        return Result(
            metrics={
                "val_acc": report.eval_acc,
                "val_loss": report.eval_loss,
                **({} if report.eval_metric is None else {"val_metric": report.eval_metric}),
                "train_acc": report.train_acc[-1],
                "train_loss": report.train_loss[-1],
                "params": float(params),
                "flops": float(flops),
            },
            cost={"seconds": time.perf_counter() - start, "epochs": float(report.epochs)},
            extras={"train_loss": report.train_loss, "train_acc": report.train_acc, **({"hparams": hparams} if hparams else {})},
        )
