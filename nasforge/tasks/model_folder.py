"""A trained model's folder (``model.yaml``, ``weights.pt``, ``metrics.json``, written by
``nasforge train``), read back: the space, data and network it describes, with its weights. The
``kd`` criterion's teacher is such a folder, which is why reading lives here, below the estimators.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.errors import CheckpointError, ConfigError
from nasforge.core.registry import ComponentSpec
from nasforge.core.seeding import derive_seed
from nasforge.core.space import SearchSpace
from nasforge.tasks.splits import DataSplits
from nasforge.tasks.training import TrainSettings

__all__ = ["ModelFolder", "load_model_folder", "load_teacher", "MODEL_FILE", "WEIGHTS_FILE", "METRICS_FILE"]

MODEL_FILE = "model.yaml"
WEIGHTS_FILE = "weights.pt"
METRICS_FILE = "metrics.json"


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


def load_teacher(settings: TrainSettings, data: DataSplits) -> nn.Module | None:
    """The network the ``kd`` criterion distils from: the model folder named by
    ``criterion_options.teacher`` (written by ``nasforge train``), checked to take ``data``'s
    input; None for other criteria or without the option.

    Raises:
        CheckpointError: the folder is not a model folder.
        ConfigError: the teacher was trained on inputs of another shape.
    """
    path = settings.criterion_options.get("teacher")
    if settings.criterion != "kd" or path is None:
        return None
    folder = load_model_folder(str(path))
    expected = (data.in_channels, *data.input_size)
    if folder.input_shape[1:] != expected:
        raise ConfigError(f"kd teacher {path}: it takes inputs {folder.input_shape[1:]}, the data gives {expected}")
    return folder.model
