"""Final training of a chosen arch, and the model folder it leaves behind.

A model folder holds ``model.yaml`` (the space, data, arch and settings that made it),
``weights.pt`` and ``metrics.json``; ``nasforge test`` and ``nasforge export`` read it back.

Training starts from fresh weights, or (``init_from``) from the weights the arch inherits from
the supernet a one-shot search left in its run directory: fine-tuning instead of training from
scratch. The folder then records that run in ``metrics.json`` (``inherited_from``) and
``model.yaml`` (``init_from``).

A model folder is written whole (a temporary folder renamed into place) and a folder that holds
one is never replaced unless asked (``force``): :func:`free_model_folder` picks a new name.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from torch import nn

if TYPE_CHECKING:
    from nasforge.hardware.latency import LatencyModel

from nasforge.core.arch import Arch
from nasforge.core.atomic import atomic_write_folder, folder_in_use
from nasforge.core.errors import CheckpointError, ConfigError
from nasforge.core.registry import ComponentSpec
from nasforge.core.seeding import derive_seed
from nasforge.core.space import ConstrainedSpace, SearchSpace
from nasforge.estimators.supernet import inherited_child
from nasforge.hardware.latency import find_latency_model
from nasforge.nn.counters import count_flops, count_params
from nasforge.runner.config import absolute_paths
from nasforge.spaces.hparams import apply_hparams, hparams_of
from nasforge.tasks.model_folder import METRICS_FILE, MODEL_FILE, WEIGHTS_FILE, load_teacher
from nasforge.tasks.splits import DataSplits
from nasforge.tasks.training import TrainSettings, evaluate_model, train_model

__all__ = [
    "final_settings",
    "free_model_folder",
    "check_model_folder",
    "initial_model",
    "train_arch",
    "train_final",
]

log = logging.getLogger("nasforge")


def free_model_folder(path: str | Path) -> Path:
    """``path`` if nothing is there yet, else the first free ``path-2``, ``path-3``, ..."""
    path = Path(path)
    number = 2
    candidate = path
    while folder_in_use(candidate):
        candidate = path.with_name(f"{path.name}-{number}")
        number += 1
    return candidate


def check_model_folder(out: str | Path, force: bool = False) -> None:
    """Raise a :class:`CheckpointError` when ``out`` already holds something and ``force`` is off
    (called before training, so no time is spent on a model that could not be saved)."""
    if folder_in_use(out) and not force:
        raise CheckpointError(
            f"{out} already exists; a trained model is never replaced. Write elsewhere (--out DIR), "
            "or replace it on purpose with --force (force=True in Python)"
        )


def _spec_dict(spec: ComponentSpec) -> dict[str, Any]:
    """``spec`` as config, with the files it names as absolute paths (see :func:`absolute_paths`)."""
    return absolute_paths({"type": spec.type, **spec.options})


def _network_spec(space: SearchSpace, spec: ComponentSpec) -> dict[str, Any]:
    """The space config a model folder records: for a constrained space (``latency_bounded``),
    its inner space's. The constraint only narrowed what the search could pick; the network
    rebuilds without it, and without the files it reads (a latency table)."""
    inner = spec.options.get("inner")
    if isinstance(space, ConstrainedSpace) and isinstance(inner, dict):
        return _spec_dict(ComponentSpec.model_validate(inner))
    return _spec_dict(spec)


def initial_model(space: SearchSpace, arch: Arch, *, seed: int, init_from: str | Path | None = None) -> nn.Module:
    """The network final training starts from: ``space.build(arch)`` with seeded fresh weights,
    or with the weights ``arch`` inherits from the supernet of the one-shot run in ``init_from``.

    Inherited weights include the supernet's batch-norm statistics, so before any training the
    model gives exactly the supernet's outputs on the arch's path.

    Raises:
        CheckpointError: ``init_from`` holds no supernet checkpoint, its supernet is not this
            space's, or the arch's child from it does not load into ``space.build(arch)``.
    """
    space.validate(arch)
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(seed, "final-init"))
        model = space.build(arch)
    if init_from is None:
        return model
    child = inherited_child(init_from, space, arch)
    try:
        model.load_state_dict(child.state_dict())
    except RuntimeError as exc:
        raise CheckpointError(
            f"the weights of {space.format(arch)} in the supernet of {init_from} do not load into the network "
            f"this space builds for it ({str(exc).splitlines()[0]}); inheriting weights needs a space whose "
            f"supernet children are its built networks, such as nb201"
        ) from None
    return model


def train_final(
    space: SearchSpace,
    space_spec: ComponentSpec,
    data: DataSplits,
    data_spec: ComponentSpec,
    arch: Arch,
    settings: TrainSettings,
    *,
    seed: int,
    out_dir: str | Path,
    device: str = "cpu",
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    init_from: str | Path | None = None,
    latency: LatencyModel | None = None,
    force: bool = False,
) -> dict[str, float]:
    """Train ``arch`` on the whole training set (train + valid), test it once, save the folder.

    The folder ``out_dir`` is written whole once training ends; if it already holds something,
    a :class:`CheckpointError` is raised before training unless ``force`` (then it is replaced).

    ``init_from``: a one-shot run directory whose supernet gives the initial weights (see
    :func:`initial_model`); None trains from scratch.
    ``latency``: the latency model the search used; the trained model is then timed on this
    machine as its table was, and ``latency_predicted_ms``, ``latency_measured_ms`` and
    ``latency_measured_over_predicted`` join the metrics (and the log).

    Returns the metrics (``test_acc``, ``test_loss``, ``params``, ``flops``, ``train_seconds``;
    ``test_metric`` with the settings' ``metric``).
    """
    check_model_folder(out_dir, force)
    model = initial_model(space, arch, seed=seed, init_from=init_from)
    input_shape = (1, data.in_channels, *data.input_size)  # batch of one, as exported models see it
    report = train_model(
        model,
        data.train_and_valid,
        settings,
        seed=derive_seed(seed, "final-train"),
        device=device,
        progress=progress,
        teacher=load_teacher(settings, data),
    )
    test = evaluate_model(model, data.test, batch_size=settings.eval_batch_size, device=device, metric=settings.make_metric())
    metrics = {
        "test_acc": test.acc,
        "test_loss": test.loss,
        **({} if test.metric is None else {"test_metric": test.metric}),
        "final_train_acc": report.train_acc[-1] if report.train_acc else float("nan"),
        "params": float(count_params(model)),
        "flops": float(count_flops(model.cpu(), input_shape[1:])),
        "train_seconds": report.seconds,
        "epochs": float(report.epochs),
    }
    if latency is not None:
        metrics.update(latency.compare(model, arch, input_shape))
    out = Path(out_dir)
    description = {
        "arch": space.format(arch),
        "space": _network_spec(space, space_spec),
        "data": _spec_dict(data_spec),
        "seed": seed,
        "train": settings.model_dump(),
        "input_shape": list(input_shape),
        "input_normalization": data.normalization,
    }
    recorded: dict[str, Any] = dict(metrics)
    if init_from is not None:
        description["init_from"] = recorded["inherited_from"] = str(Path(init_from).resolve())
    buffer = io.BytesIO()
    torch.save(model.cpu().state_dict(), buffer)
    files = {
        WEIGHTS_FILE: buffer.getvalue(),
        METRICS_FILE: json.dumps(recorded, indent=2).encode(),
        MODEL_FILE: yaml.safe_dump(description, sort_keys=False).encode(),
    }
    try:
        atomic_write_folder(out, files, replace=force)  # whole: weights never apart from their arch
    except FileExistsError:
        check_model_folder(out, force)  # written meanwhile by another process
        raise
    return metrics


def final_settings(
    train: Mapping[str, Any] | None, arch: Arch, hparams: Mapping[str, Any] | None = None, *, where: str = ""
) -> TrainSettings:
    """The settings final training of ``arch`` uses: ``train`` (a config's ``train`` section),
    overridden by the arch's own ``hp.`` choices (``with_hparams``, hpo spaces), then by ``hparams``.

    Raises:
        ConfigError: the settings do not validate (``where`` starts the message).
    """
    try:
        return apply_hparams(TrainSettings.model_validate(train or {}), {**hparams_of(arch), **(hparams or {})})
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None


def train_arch(
    space: SearchSpace,
    space_spec: ComponentSpec,
    data: DataSplits,
    data_spec: ComponentSpec,
    arch: Arch,
    train: Mapping[str, Any] | None,
    *,
    seed: int,
    out_dir: str | Path,
    hparams: Mapping[str, Any] | None = None,
    device: str = "cpu",
    estimator: Any = None,
    init_from: str | Path | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    report: Callable[[str], None] | None = None,
    where: str = "",
    force: bool = False,
) -> dict[str, float]:
    """The final training step of ``nasforge search``/``train`` and of a pipeline's ``train`` step:
    :func:`final_settings`, then :func:`train_final`, timing the model against the latency model
    of the space (or of ``estimator``) when there is one. ``report`` is told what is about to run."""
    check_model_folder(out_dir, force)
    settings = final_settings(train, arch, hparams, where=where)
    if report is not None:
        start = "from scratch" if init_from is None else f"from the weights of the supernet in {init_from}"
        report(
            f"training the arch {start} on train+valid for {settings.epochs} epochs, "
            "then testing it once on the held-out test set"
        )
    return train_final(
        space, space_spec, data, data_spec, arch, settings, seed=seed, out_dir=out_dir, device=device,
        progress=progress, init_from=init_from, latency=find_latency_model(space, estimator), force=force,
    )
