"""From a validated config to live components, a search, and the trained winner."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.atomic import atomic_write_bytes
from nasforge.core.capabilities import check_combination
from nasforge.core.errors import ConfigError
from nasforge.core.estimator import Estimator
from nasforge.core.objective import Objective
from nasforge.core.registry import ComponentSpec
from nasforge.core.seeding import derive_seed
from nasforge.core.space import SearchSpace
from nasforge.core.strategy import Strategy
from nasforge.core.trial import Trial
from nasforge.runner.config import SECTION_KINDS, ExperimentConfig, absolute_paths, dump_config
from nasforge.runner.loop import Runner, SearchResult

__all__ = ["Experiment", "build_experiment", "resolve_device", "write_topk", "CONFIG_FILE", "TOPK_FILE"]

log = logging.getLogger("nasforge")

CONFIG_FILE = "config.yaml"
TOPK_FILE = "topk.yaml"


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without one is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA device is available; use 'cpu' or 'auto'")
    return device


@dataclass
class Experiment:
    """The live components of one config."""

    config: ExperimentConfig
    data: Any
    space: SearchSpace
    strategy: Strategy
    estimator: Estimator
    objective: Objective
    device: str
    source: str = "config"

    def runner(self, run_dir: Path | None = None, on_trial: Callable[[Trial, SearchResult], None] | None = None) -> Runner:
        """A runner for this experiment writing to ``run_dir`` (default: the config's)."""
        return Runner(
            self.space,
            self.strategy,
            self.estimator,
            self.objective,
            budget=self.config.budget,
            seed=self.config.seed,
            run_dir=run_dir if run_dir is not None else self.config.resolved_run_dir(),
            data=self.data,
            device=self.device,
            checkpoint_seconds=self.config.checkpoint_seconds,
            on_trial=on_trial,
        )


def build_experiment(config: ExperimentConfig, source: str = "config", *, with_strategy: bool = True) -> Experiment:
    """Load the data and construct every component, validating options against each other.

    Values derived from the data (``in_channels``, ``num_classes``, ``input_size``) are offered
    to the space, strategy (budgets count FLOPs at the data's size) and estimator; the estimator
    is also offered the space.

    Raises:
        ConfigError: among others, before any data loads, when the space, strategy and estimator
            cannot search together (:func:`~nasforge.core.capabilities.check_combination`).
    """
    check_combination(config.space, config.strategy, config.estimator)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    data = None
    context: dict[str, Any] = {}
    if config.data is not None:
        source_obj = registry.create("dataset", config.data.type, config.data.options, where=f"{source}: data")
        data = source_obj.load(seed=derive_seed(config.seed, "data"))
        context.update(data.context())
    space = registry.create("space", config.space.type, config.space.options, context=context, where=f"{source}: space")
    objective = registry.create("objective", config.objective.type, config.objective.options, where=f"{source}: objective")
    strategy = registry.create(
        "strategy", config.strategy.type, config.strategy.options, context=context, where=f"{source}: strategy"
    )
    estimator = registry.create(
        "estimator", config.estimator.type, config.estimator.options, context={**context, "space": space}, where=f"{source}: estimator"
    )
    check_combination(space, strategy, estimator)  # what the built space supports (a user model's modes)
    return Experiment(config, data, space, strategy, estimator, objective, device, source)


def write_topk(run_dir: Path, space: SearchSpace, result: SearchResult, k: int) -> list[Trial]:
    """Write the top-k (or, for several objectives, the Pareto front) to ``run_dir/topk.yaml``."""
    chosen = result.pareto_front() if result.objective.n_objectives > 1 else result.best(k)
    entries = [
        {
            "rank": rank,
            "trial": t.number,
            "arch": space.format(t.arch),
            "values": dict(zip(result.objective.names, t.values)),
            "metrics": t.metrics,
        }
        for rank, t in enumerate(chosen, start=1)
    ]
    atomic_write_bytes(run_dir / TOPK_FILE, yaml.safe_dump({"archs": entries}, sort_keys=False).encode())
    return chosen


def save_run_config(run_dir: Path, config: ExperimentConfig) -> None:
    """Write the resolved config into the run directory (what ``--resume`` reads back), with the
    files its components name (latency tables, factories) as absolute paths."""
    sections = {
        name: ComponentSpec.model_validate(absolute_paths({"type": spec.type, **spec.options}))
        for name in SECTION_KINDS
        if (spec := getattr(config, name)) is not None
    }
    resolved = config.model_copy(update={"run_dir": str(run_dir), **sections})
    atomic_write_bytes(run_dir / CONFIG_FILE, dump_config(resolved).encode())


def arch_from_text(space: SearchSpace, text: str, index: int = 0) -> Arch:
    """An arch from its notation, or from a YAML file written by ``nasforge derive``/``topk.yaml``."""
    path = Path(text)
    if len(text) < 4096 and path.suffix in (".yaml", ".yml", ".json", ".txt") and path.is_file():
        loaded = yaml.safe_load(path.read_text())
        if isinstance(loaded, dict) and "archs" in loaded:
            archs = loaded["archs"]
            if not 0 <= index < len(archs):
                raise ConfigError(f"{path} holds {len(archs)} archs; --index {index} is out of range")
            entry = archs[index]
            text = entry["arch"] if isinstance(entry, dict) else str(entry)
        elif isinstance(loaded, str):
            text = loaded.strip()
        elif isinstance(loaded, dict):
            text = json.dumps(loaded)
    return space.parse(text)
