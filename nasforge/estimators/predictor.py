"""The ``predictor`` estimator: predicts metrics with a performance predictor
(:mod:`nasforge.predictors.models`) instead of measuring them. It learns from a file of measured
archs and/or from the first archs of a search, which it hands to a *teacher* estimator, and
predicts the rest.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import PositiveInt

from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError, DataNotFoundError
from nasforge.core.estimator import Context, Estimator
from nasforge.core.registry import create, register
from nasforge.core.trial import Result
from nasforge.predictors.encodings import Encoder, EncodingName, get_encoder
from nasforge.predictors.models import Predictor

__all__ = ["PredictorEstimator"]


def _read_records(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV file, or the records of a JSON list of objects."""
    if not path.is_file():
        raise DataNotFoundError(f"predictor training data {str(path)!r} does not exist")
    if path.suffix.lower() == ".json":
        records = json.loads(path.read_text())
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ConfigError(f"{path}: expected a JSON list of objects (one per arch)")
        return records
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@register("estimator", "predictor")
class PredictorEstimator(Estimator):
    """Predicts metrics with a performance predictor instead of measuring them.

    It learns from measured archs: the records of ``data`` (a CSV or a JSON list of objects, one
    per arch, with the arch in ``arch_column`` in the space's own notation and one field per
    metric), and/or the first ``warmup`` archs it is asked about, which it hands to the
    ``teacher`` estimator and answers with the teacher's result. Once it has that much data it
    fits one predictor per metric and predicts every further arch; an arch it has measured keeps
    its measured metrics. Predicted results say so in ``extras`` (``source: predicted`` and the
    standard deviation of each metric when the predictor has one).

    Example (YAML)::

        estimator:
          type: predictor
          predictor: gbt
          teacher: nb201_table
          teacher_options: {dataset: cifar10}
          warmup: 100

    Args:
        predictor: registered predictor name.
        predictor_options: options of that predictor.
        encoding: arch encoding (``auto``: path for cell spaces, else one-hot).
        metrics: the metrics to predict.
        data: CSV/JSON file of measured archs.
        arch_column: the field holding the arch in ``data``.
        teacher: the estimator measuring the first ``warmup`` archs: a registered name, or (from
            Python) an estimator instance; None: ``scratch`` (training each arch, the ground
            truth) when there is no ``data``, else no teacher. So ``{type: predictor}`` alone
            trains the first 20 archs from scratch and predicts the rest.
        teacher_options: options of the teacher when it is given by name.
        warmup: how many archs the teacher measures before predictions start.
        seed: seeds the predictors.
    """

    #: Tiny settings for the conformance suite (nasforge.testing.suites).
    conformance_options: ClassVar[dict[str, Any]] = {"teacher": "scratch", "teacher_options": {"epochs": 1, "batch_size": 32}, "warmup": 2}

    def __init__(
        self,
        predictor: str = "gbt",
        predictor_options: dict[str, Any] | None = None,
        encoding: EncodingName = "auto",
        metrics: tuple[str, ...] = ("val_acc",),
        data: str | None = None,
        arch_column: str = "arch",
        teacher: str | Estimator | None = None,
        teacher_options: dict[str, Any] | None = None,
        warmup: PositiveInt = 20,
        seed: int = 0,
    ) -> None:
        if data is None and teacher is None:
            teacher = "scratch"
        if not metrics:
            raise ValueError("name at least one metric to predict")
        if teacher_options and not isinstance(teacher, str):
            raise ValueError("teacher_options need a teacher given by its registered name")
        self.predictor_name = predictor
        self.predictor_options = dict(predictor_options or {})
        create("predictor", predictor, self.predictor_options)  # fail early on a bad name/option
        self.encoding = encoding
        self.metrics = tuple(metrics)
        self.data = data
        self.arch_column = arch_column
        self.teacher = create("estimator", teacher, teacher_options) if isinstance(teacher, str) else teacher
        taught = self.teacher.reported_metrics() if self.teacher is not None else None
        if taught is not None and not set(self.metrics) <= taught:
            missing = ", ".join(m for m in self.metrics if m not in taught)
            raise ConfigError(
                f"predictor: metrics {missing} are not reported by its teacher {type(self.teacher).__name__}, "
                f"which reports: {', '.join(sorted(taught))}"
            )
        self.warmup = warmup if teacher is not None else 0
        self.seed = seed
        self._data: dict[Arch, dict[str, float]] = {}
        self._taught: dict[Arch, dict[str, float]] = {}
        self._loaded = False
        self._encoder: Encoder | None = None
        self._models: dict[str, Predictor] = {}

    def reported_metrics(self) -> frozenset[str] | None:
        """The metrics it predicts (its teacher's or data's, which the teacher is checked for)."""
        return frozenset(self.metrics)

    def _load_data(self, ctx: Context) -> None:
        self._loaded = True
        if self.data is None:
            return
        for i, record in enumerate(_read_records(Path(self.data))):
            if self.arch_column not in record:
                raise ConfigError(f"{self.data}: record {i} has no {self.arch_column!r} field")
            missing = [m for m in self.metrics if m not in record]
            if missing:
                raise ConfigError(f"{self.data}: record {i} lacks metric(s) {', '.join(missing)}")
            arch = ctx.space.parse(str(record[self.arch_column]))
            self._data[arch] = {m: float(record[m]) for m in self.metrics}

    def _fit(self, ctx: Context) -> None:
        measured = {**self._data, **self._taught}
        if len(measured) < 2:
            raise ConfigError(f"the predictor estimator needs at least 2 measured archs, has {len(measured)}")
        self._encoder = get_encoder(self.encoding, ctx.space)
        X = self._encoder(list(measured))
        for metric in self.metrics:
            y = np.array([m[metric] for m in measured.values()])
            options = {**self.predictor_options, "seed": self.seed}
            self._models[metric] = create("predictor", self.predictor_name, options).fit(X, y)

    def estimate(self, arch: Arch, ctx: Context) -> Result:
        if not self._loaded:
            self._load_data(ctx)
        known = self._taught.get(arch) or self._data.get(arch)
        if known is not None:
            return Result(metrics=dict(known), extras={"source": "measured"})
        if self.teacher is not None and len(self._taught) < self.warmup:
            result = self.teacher.estimate(arch, ctx)
            missing = [m for m in self.metrics if m not in result.metrics]
            if missing:
                raise ConfigError(f"the teacher estimator did not measure {', '.join(missing)}")
            self._taught[arch] = {m: float(result.metrics[m]) for m in self.metrics}
            return Result(metrics=result.metrics, cost=result.cost, extras={**result.extras, "source": "teacher"})
        start = time.perf_counter()
        if not self._models:
            self._fit(ctx)
        assert self._encoder is not None
        x = self._encoder([arch])
        metrics: dict[str, float] = {}
        extras: dict[str, Any] = {"source": "predicted"}
        for metric, model in self._models.items():
            if model.has_uncertainty:
                mean, std = model.predict_dist(x)
                extras[f"{metric}_std"] = float(std[0])
            else:
                mean = model.predict(x)
            metrics[metric] = float(mean[0])
        return Result(metrics=metrics, cost={"seconds": time.perf_counter() - start}, extras=extras)

    def state_dict(self) -> dict[str, Any]:
        """What the teacher measured, and its own state; data is read again, predictors refitted."""
        return {
            "taught": [[arch.to_dict(), metrics] for arch, metrics in self._taught.items()],
            "teacher": self.teacher.state_dict() if self.teacher is not None else {},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._taught = {Arch(a): {k: float(v) for k, v in m.items()} for a, m in state["taught"]}
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        self._models = {}
