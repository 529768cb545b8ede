"""TensorBoard event files of a search (``tensorboard: true`` in a config, or ``--tensorboard``).

:class:`TensorBoardObserver` is an on-trial callback of the :class:`~nasforge.runner.loop.Runner`
(no estimator knows of it). Under ``RUN_DIR/tb/`` it writes:

- ``tb/``: per trial (step = trial number) its objective values (``objective/NAME``), the best so
  far (``best/NAME``), its metrics (``metrics/NAME``), cost (``cost/NAME``) and numeric extras
  (``extras/NAME``, e.g. a supernet's training loss); the run-level per-epoch curves of
  weight-sharing estimators (``epoch/supernet/train_loss``, ``epoch/supernet/arch_loss``,
  ``epoch/dnas/train_loss``, ``epoch/dnas/val_acc``, ``epoch/dnas/val_loss``; step = epoch),
  which the estimator hands over in a trial's ``extras["epochs"]`` as ``{NAME: [[epoch, value],
  ...]}`` (the epochs trained since the trial before); for a differentiable strategy the
  architecture weights of each epoch (``alphas/EDGE/CANDIDATE`` scalars and one ``alphas/EDGE``
  histogram, step = epoch, from the strategy's ``snapshot()``);
- ``tb/trials/trial-NNNN/``: one HParams session per trial (the arch's choices and the seed as
  hparams, its metrics and values), and its per-epoch training curves where the estimator
  reported them in the extras as lists (``scratch``: ``epoch/train_loss``, ``epoch/train_acc``).

Needs the ``tensorboard`` package (``pip install 'nasforge[tensorboard]'``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nasforge.core.errors import ConfigError
from nasforge.core.trial import Trial

__all__ = ["TensorBoardObserver", "TB_DIR", "require_tensorboard"]

TB_DIR = "tb"


def require_tensorboard() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``; a ConfigError naming the extra when missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "tensorboard: true (or --tensorboard) needs the tensorboard package: pip install 'nasforge[tensorboard]'"
        ) from None
    return SummaryWriter


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def _hparam(value: Any) -> Any:
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return value
    return str(value)


class TensorBoardObserver:
    """Writes each trial to TensorBoard as it finishes (call it with ``(trial, result)``); call
    :meth:`close` at the end.

    Args:
        run_dir: the run directory (event files go to ``run_dir/tb``).
        objective_names: the names of the objective's values.
        arch_parameters: a differentiable strategy (its ``snapshot()`` is logged per epoch), or None.
    """

    def __init__(
        self, run_dir: str | Path, objective_names: tuple[str, ...] | list[str], arch_parameters: Any = None
    ) -> None:
        self._writer_class = require_tensorboard()
        self.root = Path(run_dir) / TB_DIR
        self.names = list(objective_names)
        self.arch_parameters = arch_parameters
        self.writer = self._writer_class(log_dir=str(self.root))
        self._best: list[float | None] = [None] * len(self.names)
        self._last_epoch: int | None = None
        self._seeded = False

    def __call__(self, trial: Trial, result: Any = None) -> None:
        step = trial.number
        if result is not None and not self._seeded:  # resumed: start from the restored trials
            self._seeded = True
            for earlier in result.trials:
                if earlier is not trial:
                    self._track_best(earlier)
        self._track_best(trial)
        w = self.writer
        w.add_scalar("trial/failed", 0.0 if trial.values else 1.0, step)
        for name, value in zip(self.names, trial.values):
            if _finite(value):
                w.add_scalar(f"objective/{name}", float(value), step)
        for name, best in zip(self.names, self._best):
            if best is not None:
                w.add_scalar(f"best/{name}", best, step)
        for group, values in (("metrics", trial.metrics), ("cost", trial.cost)):
            for name, value in values.items():
                if _finite(value):
                    w.add_scalar(f"{group}/{name}", float(value), step)
        for name, value in trial.extras.items():
            if name != "elapsed" and _finite(value):
                w.add_scalar(f"extras/{name}", float(value), step)
        self._epoch_curves(trial.extras.get("epochs"))
        self._alphas()
        self._session(trial)
        w.flush()

    def _epoch_curves(self, curves: Any) -> None:
        """``extras["epochs"]``: ``{NAME: [[epoch, value], ...]}`` as ``epoch/NAME`` (step = epoch)."""
        if not isinstance(curves, Mapping):
            return
        for name, points in curves.items():
            if not isinstance(points, list):
                continue
            for point in points:
                if isinstance(point, (list, tuple)) and len(point) == 2 and _finite(point[1]):
                    self.writer.add_scalar(f"epoch/{name}", float(point[1]), int(point[0]))

    def _track_best(self, trial: Trial) -> None:
        if not trial.ok or not trial.values:
            return
        for i, value in enumerate(trial.values[: len(self.names)]):
            if _finite(value) and (self._best[i] is None or value > self._best[i]):  # type: ignore[operator]
                self._best[i] = float(value)

    def _alphas(self) -> None:
        if self.arch_parameters is None:
            return
        try:
            snap = self.arch_parameters.snapshot()
        except Exception:  # noqa: BLE001 - a strategy that cannot show its weights yet
            return
        epoch = snap.get("epoch")
        if not isinstance(epoch, int) or epoch == self._last_epoch:
            return
        self._last_epoch = epoch
        import numpy as np

        candidates: Mapping[str, list[Any]] = snap.get("candidates", {})
        for edge, probs in snap.get("probs", {}).items():
            names = candidates.get(edge, list(range(len(probs))))
            for candidate, p in zip(names, probs):
                self.writer.add_scalar(f"alphas/{edge}/{candidate}", float(p), epoch)
            if probs:
                self.writer.add_histogram(f"alphas/{edge}", np.asarray(probs, dtype=np.float64), epoch)
        for name in ("tau",):
            if _finite(snap.get(name)):
                self.writer.add_scalar(f"alphas/{name}", float(snap[name]), epoch)

    def _session(self, trial: Trial) -> None:
        """The trial as an HParams session (its own folder), with its per-epoch curves."""
        from torch.utils.tensorboard.summary import hparams

        params: dict[str, Any] = {"trial": trial.number, "seed": trial.seed, "status": trial.status.value}
        arch = trial.arch
        if isinstance(arch, Mapping):
            params.update({f"arch/{k}": _hparam(v) for k, v in arch.items()})
        else:
            params["arch"] = str(arch)
        metrics = {f"objective/{n}": float(v) for n, v in zip(self.names, trial.values) if _finite(v)}
        metrics.update({f"metrics/{k}": float(v) for k, v in trial.metrics.items() if _finite(v)})
        writer = self._writer_class(log_dir=str(self.root / "trials" / f"trial-{trial.number:04d}"))
        try:
            exp, ssi, sei = hparams(params, metrics)
            files = writer._get_file_writer()
            for summary in (exp, ssi, sei):
                files.add_summary(summary)
            for name, value in metrics.items():
                writer.add_scalar(name, value, trial.number)
            for name, curve in trial.extras.items():
                if isinstance(curve, list) and curve and all(_finite(v) for v in curve):
                    for epoch, value in enumerate(curve, start=1):
                        writer.add_scalar(f"epoch/{name}", float(value), epoch)
        finally:
            writer.close()

    def close(self) -> None:
        self.writer.close()
