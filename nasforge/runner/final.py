"""Final training of a chosen arch, and the model folder it leaves behind.

A model folder holds ``model.yaml`` (the space, data, arch and settings that made it),
``weights.pt`` and ``metrics.json``; ``nasforge test`` and ``nasforge export`` read it back.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.errors import CheckpointError
from nasforge.core.seeding import derive_seed
from nasforge.core.space import SearchSpace
from nasforge.objectives.counters import count_flops, count_params
from nasforge.runner.checkpoint import atomic_write_bytes
from nasforge.runner.config import ComponentSpec
from nasforge.tasks.data import DataSplits
from nasforge.tasks.training import TrainSettings, evaluate, train_model

__all__ = ["ModelFolder", "train_final", "load_model_folder", "MODEL_FILE", "WEIGHTS_FILE", "METRICS_FILE"]

log = logging.getLogger("nasforge")

MODEL_FILE = "model.yaml"
WEIGHTS_FILE = "weights.pt"
METRICS_FILE = "metrics.json"


def _spec_dict(spec: ComponentSpec) -> dict[str, Any]:
    return {"type": spec.type, **spec.options}


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
) -> dict[str, float]:
    """Train ``arch`` on the whole training set (train + valid), test it once, save the folder.

    Returns the metrics (``test_acc``, ``test_loss``, ``params``, ``flops``, ``train_seconds``).
    """
    space.validate(arch)
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(seed, "final-init"))
        model = space.build(arch)
    input_shape = (1, data.in_channels, *data.input_size)  # batch of one, as exported models see it
    report = train_model(
        model, data.train_and_valid, settings, seed=derive_seed(seed, "final-train"), device=device, progress=progress
    )
    test_acc, test_loss = evaluate(model, data.test, batch_size=settings.eval_batch_size, device=device)
    metrics = {
        "test_acc": test_acc,
        "test_loss": test_loss,
        "final_train_acc": report.train_acc[-1] if report.train_acc else float("nan"),
        "params": float(count_params(model)),
        "flops": float(count_flops(model.cpu(), input_shape[1:])),
        "train_seconds": report.seconds,
        "epochs": float(report.epochs),
    }
    out = Path(out_dir)
    description = {
        "arch": space.format(arch),
        "space": _spec_dict(space_spec),
        "data": _spec_dict(data_spec),
        "seed": seed,
        "train": settings.model_dump(),
        "input_shape": list(input_shape),
        "input_normalization": data.normalization,
    }
    buffer = io.BytesIO()
    torch.save(model.cpu().state_dict(), buffer)
    atomic_write_bytes(out / WEIGHTS_FILE, buffer.getvalue())
    atomic_write_bytes(out / METRICS_FILE, json.dumps(metrics, indent=2).encode())
    atomic_write_bytes(out / MODEL_FILE, yaml.safe_dump(description, sort_keys=False).encode())
    return metrics


@dataclass
class ModelFolder:
    """A trained model read back from its folder."""

    model: nn.Module
    arch: Arch
    space: SearchSpace
    data: DataSplits
    description: dict[str, Any]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The input shape the model was trained on, batch of one."""
        return tuple(self.description["input_shape"])


def load_model_folder(folder: str | Path) -> ModelFolder:
    """Rebuild the space, data and network of a model folder and load its weights."""
    folder = Path(folder)
    if not (folder / MODEL_FILE).is_file():
        raise CheckpointError(f"{folder} is not a model folder: {MODEL_FILE} is missing (make one with `nasforge train`)")
    description = yaml.safe_load((folder / MODEL_FILE).read_text())
    data_spec = ComponentSpec.model_validate(description["data"])
    space_spec = ComponentSpec.model_validate(description["space"])
    data = registry.create("dataset", data_spec.type, data_spec.options, where=f"{folder / MODEL_FILE}: data").load(
        seed=derive_seed(int(description["seed"]), "data")
    )
    space = registry.create(
        "space", space_spec.type, space_spec.options, context=data.context(), where=f"{folder / MODEL_FILE}: space"
    )
    arch = space.parse(description["arch"])
    model = space.build(arch)
    try:
        state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except FileNotFoundError:
        raise CheckpointError(f"{folder / WEIGHTS_FILE} is missing") from None
    except (RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{folder / WEIGHTS_FILE} is corrupt or does not fit the arch: {str(exc).splitlines()[0]}") from None
    return ModelFolder(model.eval(), arch, space, data, description)
