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
from nasforge.core.capabilities import check_combination, check_parallel
from nasforge.core.errors import CheckpointError, ConfigError, NasforgeError
from nasforge.core.estimator import Estimator
from nasforge.core.objective import Objective
from nasforge.core.registry import ComponentSpec
from nasforge.core.seeding import derive_seed
from nasforge.core.space import SearchSpace
from nasforge.core.strategy import Strategy
from nasforge.core.trial import Trial
from nasforge.runner.config import SECTION_KINDS, ExperimentConfig, absolute_paths, dump_config
from nasforge.runner.executors import make_executor
from nasforge.runner.loop import STORE_FILE, Runner, SearchResult
from nasforge.runner.rundir import fingerprint
from nasforge.runner.store import TrialStore

__all__ = [
    "Experiment",
    "build_experiment",
    "resolve_device",
    "top_trials",
    "topk_text",
    "write_topk",
    "load_trials",
    "config_fingerprint",
    "finished_search",
    "record_final",
    "CONFIG_FILE",
    "TOPK_FILE",
]

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
    #: The TensorBoard writer of the last :meth:`runner` (``tensorboard: true``); close it at the end.
    tensorboard: Any = None

    def runner(self, run_dir: Path | None = None, on_trial: Callable[[Trial, SearchResult], None] | None = None) -> Runner:
        """A runner for this experiment writing to ``run_dir`` (default: the config's).

        With ``tensorboard: true`` in the config, each trial is also written to ``run_dir/tb``
        (:class:`~nasforge.runner.tensorboard.TensorBoardObserver`, kept as :attr:`tensorboard`)."""
        run_dir = run_dir if run_dir is not None else self.config.resolved_run_dir()
        if getattr(self.config, "tensorboard", False):
            on_trial = self._with_tensorboard(run_dir, on_trial)
        return Runner(
            self.space,
            self.strategy,
            self.estimator,
            self.objective,
            budget=self.config.budget,
            seed=self.config.seed,
            run_dir=run_dir,
            data=self.data,
            device=self.device,
            checkpoint_seconds=self.config.checkpoint_seconds,
            on_trial=on_trial,
            fingerprint=config_fingerprint(self.config),
            executor=make_executor(self.config.executor),
            data_spec=data_spec(self.config),
        )

    def _with_tensorboard(
        self, run_dir: Path, on_trial: Callable[[Trial, SearchResult], None] | None
    ) -> Callable[[Trial, SearchResult], None]:
        from nasforge.core.differentiable import ArchParameters
        from nasforge.runner.tensorboard import TensorBoardObserver

        if self.tensorboard is not None:
            self.tensorboard.close()
        params = self.strategy if isinstance(self.strategy, ArchParameters) else None
        observer = self.tensorboard = TensorBoardObserver(run_dir, self.objective.names, params)

        def both(trial: Trial, result: SearchResult) -> None:
            observer(trial, result)
            if on_trial is not None:
                on_trial(trial, result)

        return both


def data_spec(config: ExperimentConfig) -> tuple[str, dict[str, Any], int] | None:
    """The config's data section as worker processes load it: ``(type, options, seed)``."""
    if config.data is None:
        return None
    return config.data.type, dict(config.data.options), derive_seed(config.seed, "data")


def config_fingerprint(config: ExperimentConfig) -> dict[str, str]:
    """A hash of each section that decides a search's trials (data, space, strategy, estimator,
    objective), with the files they name made absolute as the saved config holds them. A resumed
    run must match the hashes its store and checkpoint recorded; budget, device, threads, top_k
    and train may change between runs."""
    sections: dict[str, Any] = {}
    for name in SECTION_KINDS:
        spec = getattr(config, name)
        sections[name] = None if spec is None else absolute_paths({"type": spec.type, **spec.options})
    return fingerprint(sections)


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
    executor = make_executor(config.executor)
    check_parallel(config.strategy, config.estimator, executor.workers, config.executor.type)
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


def top_trials(result: SearchResult, k: int, *, whole_front: bool = True) -> list[Trial]:
    """The best ``k`` trials; for several objectives the Pareto front (whole, or its first ``k``
    with ``whole_front=False``)."""
    if result.objective.n_objectives > 1:
        front = result.pareto_front()
        return front if whole_front else front[:k]
    return result.best(k)


def topk_text(space: SearchSpace, result: SearchResult, chosen: list[Trial]) -> str:
    """``chosen`` as the YAML of ``topk.yaml`` (what ``arch_from_text`` reads back)."""
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
    return yaml.safe_dump({"archs": entries}, sort_keys=False)


def write_topk(
    run_dir: Path, space: SearchSpace, result: SearchResult, k: int, *, path: Path | None = None, whole_front: bool = True
) -> list[Trial]:
    """Write the top-k (or, for several objectives, the Pareto front; its first k with
    ``whole_front=False``) to ``path``, by default ``run_dir/topk.yaml``."""
    chosen = top_trials(result, k, whole_front=whole_front)
    atomic_write_bytes(path if path is not None else run_dir / TOPK_FILE, topk_text(space, result, chosen).encode())
    return chosen


def load_trials(run_dir: Path) -> list[Trial]:
    """Every trial in the store of the run in ``run_dir``.

    Raises:
        CheckpointError: ``run_dir`` holds no trial store.
    """
    path = Path(run_dir) / STORE_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir} holds no trials yet ({STORE_FILE} is missing)")
    store = TrialStore(path, readonly=True)  # reading never writes, so read-only runs are readable
    try:
        return store.trials()
    finally:
        store.close()


def record_final(run_dir: Path, folder: Path, trials: int) -> None:
    """Note in the run's store that its winner after ``trials`` trials was trained into ``folder``
    (what :func:`finished_search` reads back, so a resumed finished run does not train again)."""
    store = TrialStore(Path(run_dir) / STORE_FILE)
    try:
        store.set_meta("final", {"dir": str(folder), "trials": trials})
    finally:
        store.close()


def finished_search(run_dir: Path, config: ExperimentConfig) -> dict[str, Any] | None:
    """How the search in ``run_dir`` stopped (``reason``, ``trials``, and ``final``: the model
    folder its winner was trained into, if any), when it stopped under ``config``'s budget with
    every trial of its store; None while it can go on (or never stopped)."""
    path = Path(run_dir) / STORE_FILE
    if not path.is_file():
        return None
    store = TrialStore(path, readonly=True)
    try:
        stopped, final, n = store.get_meta("stopped"), store.get_meta("final"), len(store)
    finally:
        store.close()
    if not stopped or stopped.get("trials") != n or stopped.get("budget") != config.budget.model_dump():
        return None
    return {**stopped, "final": final["dir"] if final and final.get("trials") == n else None}


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
    if len(text) < 4096 and path.suffix in _ARCH_FILE_SUFFIXES and path.is_file():
        try:
            loaded = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
            raise ConfigError(f"cannot read arch file {path}: {type(exc).__name__}: {exc}") from None
        if isinstance(loaded, dict) and "archs" in loaded:
            archs = loaded["archs"]
            if not isinstance(archs, list):
                raise ConfigError(f"{path}: 'archs' must be a list of archs (as derive writes), got {type(archs).__name__}")
            if not 0 <= index < len(archs):
                raise ConfigError(f"{path} holds {len(archs)} archs; --index {index} is out of range")
            entry = archs[index]
            if isinstance(entry, dict) and "arch" not in entry:
                raise ConfigError(f"{path}: entry {index} of 'archs' has no 'arch' key")
            text = str(entry["arch"]) if isinstance(entry, dict) else str(entry)
        elif isinstance(loaded, str):
            text = loaded.strip()
        elif isinstance(loaded, dict):
            text = json.dumps(loaded)
    elif _names_a_file(text) and not path.is_file():
        missing = ConfigError(
            f"arch file {text} {'is a folder' if path.is_dir() else 'does not exist'}; give a YAML file written by "
            "derive (or a run's topk.yaml), or the arch itself in the space's notation or as JSON"
        )
        if path.suffix.lower() in _ARCH_FILE_SUFFIXES or path.is_dir():
            raise missing
        try:  # a notation may hold a '/': only a value the space cannot parse is taken for a path
            return space.parse(text)
        except NasforgeError:
            raise missing from None
    return space.parse(text)


_ARCH_FILE_SUFFIXES = (".yaml", ".yml", ".json", ".txt")


def _names_a_file(text: str) -> bool:
    """Whether ``text`` looks like a file name rather than an arch: one line, not JSON or NB201
    notation, and a file suffix or a folder separator."""
    if len(text) >= 4096 or not text.strip() or any(c.isspace() for c in text) or text[0] in "{[|(":
        return False
    return Path(text).suffix.lower() in _ARCH_FILE_SUFFIXES or "/" in text or "\\" in text
