"""Experiment configs: YAML in, typed and validated models out, before anything runs.

A config names one component per part by its registered type, with that component's options
beside it::

    seed: 0
    data: {type: digits}
    space: {type: nb201, C: 8, N: 1}
    strategy: {type: evolution, population_size: 10, sample_size: 5}
    estimator: {type: scratch, epochs: 3}
    objective: {type: single, metric: val_acc}
    budget: {trials: 40, seconds: 240}
    train: {epochs: 20}          # optional: train the winner after the search

Every mistake is reported as a :class:`ConfigError` naming the file, the key and what is allowed.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt

from nasforge.core import registry
from nasforge.core.errors import ConfigError
from nasforge.core.registry import ComponentSpec
from nasforge.runner.loop import Budget

__all__ = [
    "ExperimentConfig",
    "load_config",
    "parse_config",
    "dump_config",
    "absolute_paths",
    "SECTION_KINDS",
    "PATH_OPTIONS",
]

#: Config sections that name a registered component, and the component kind of each.
SECTION_KINDS: dict[str, str] = {
    "data": "dataset",
    "space": "space",
    "strategy": "strategy",
    "estimator": "estimator",
    "objective": "objective",
}


class ExperimentConfig(BaseModel):
    """A whole search, as read from YAML. See the module docstring for an example."""

    model_config = ConfigDict(extra="forbid")

    name: str = "search"
    seed: NonNegativeInt = 0
    run_dir: str | None = Field(default=None, description="default: runs/<name>")
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    threads: PositiveInt | None = None
    data: ComponentSpec | None = ComponentSpec(type="digits")
    space: ComponentSpec
    strategy: ComponentSpec
    estimator: ComponentSpec
    objective: ComponentSpec = ComponentSpec(type="single")
    budget: Budget
    top_k: PositiveInt = 5
    checkpoint_seconds: PositiveFloat = 30.0
    executor: ComponentSpec = Field(
        default=ComponentSpec(type="sequential"), description="where trials run: sequential, local (workers: N), ..."
    )
    tensorboard: bool = Field(default=False, description="write TensorBoard event files under RUN_DIR/tb (nasforge[tensorboard])")
    train: dict[str, Any] | None = Field(default=None, description="final training of the best arch (TrainSettings)")

    def resolved_run_dir(self) -> Path:
        """The run directory: ``run_dir`` if set, else ``runs/<name>``."""
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name


def _describe(errors: Sequence[Any], source: str, allowed: Sequence[str]) -> str:
    messages = []
    for err in errors:
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            key = str(err["loc"][-1])
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            messages.append(f"unknown key {loc!r} in {source}.{hint} Allowed top-level keys: {', '.join(allowed)}.")
        elif err["type"] == "missing":
            messages.append(f"{source} is missing the required key {loc!r}.")
        else:
            messages.append(f"{source}: {loc} = {err.get('input')!r} is invalid: {err['msg']}.")
    return " ".join(messages)


def _set_dotted(raw: dict[str, Any], assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like key.subkey=value")
    key, _, text = assignment.partition("=")
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {assignment!r}: the value is not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str):  # `strategy: evolution` shorthand, then strategy.x=...
            child = {"type": child}
        node[part] = child if isinstance(child, dict) else {}
        node = node[part]
    node[parts[-1]] = value


def parse_config(raw: Any, source: str = "<config>", overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Validate a config already read into Python objects (see :func:`load_config`)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must hold a mapping of sections (space, strategy, ...), got {type(raw).__name__}")
    raw = dict(raw)
    for assignment in overrides:
        _set_dotted(raw, assignment)
    try:
        config = ExperimentConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ConfigError(_describe(exc.errors(), source, list(ExperimentConfig.model_fields))) from None
    for section, kind in SECTION_KINDS.items():
        spec: ComponentSpec | None = getattr(config, section)
        if spec is not None:
            registry.validate_options(kind, spec.type, spec.options, where=f"{source}: {section}", require_all=False)
    registry.validate_options("executor", config.executor.type, config.executor.options, where=f"{source}: executor")
    if config.train is not None:
        from nasforge.tasks.training import TrainSettings

        try:
            TrainSettings.model_validate(config.train)
        except pydantic.ValidationError as exc:
            details = "; ".join(
                f"train.{'.'.join(map(str, e['loc']))} = {e.get('input')!r}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"invalid final-training settings in {source}: {details}") from None
    return config


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read and validate a YAML config; ``overrides`` are ``key.subkey=value`` strings."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"malformed YAML in {path}{where}: {problem}") from None
    return parse_config(raw, str(path), overrides)


#: Component options that name a file; :func:`absolute_paths` makes them absolute where a run
#: saves its config, so the run (resumed, trained, tested) works from any working directory.
PATH_OPTIONS = frozenset({"table", "cost_model", "latency_table", "factory"})


def _absolute(option: str, value: str) -> str:
    if option != "factory":
        return str(Path(value).resolve())
    module_part, sep, function = value.rpartition(":")  # "path/to/file.py:function" or "package.module:function"
    if sep and (module_part.endswith(".py") or "/" in module_part or "\\" in module_part):
        return f"{Path(module_part).resolve()}:{function}"
    return value


def absolute_paths(value: Any) -> Any:
    """``value`` (options, nested mappings and lists) with the relative files named by
    :data:`PATH_OPTIONS` resolved against the working directory, as the components read them."""
    if isinstance(value, dict):
        return {
            key: _absolute(key, item) if key in PATH_OPTIONS and isinstance(item, str) else absolute_paths(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [absolute_paths(item) for item in value]
    return value


def dump_config(config: ExperimentConfig) -> str:
    """The config as YAML (the resolved form saved in each run directory)."""
    data = config.model_dump(mode="json", exclude_none=False)
    for section in SECTION_KINDS:
        spec = getattr(config, section)
        data[section] = None if spec is None else {"type": spec.type, **spec.options}
    return yaml.safe_dump(data, sort_keys=False)
