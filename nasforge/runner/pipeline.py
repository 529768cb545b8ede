"""Pipelines: named steps (search, train, tune) in one config, run in order, resumable as a whole.

::

    name: demo
    defaults: {seed: 0, data: {type: digits}, space: {type: nb201, C: 8, N: 1}}
    steps:
      search: {kind: search, strategy: evolution, estimator: {type: scratch}, budget: {trials: 20}}
      tune:                              # HPO of the training hyperparameters of the found arch
        kind: tune
        arch: ${search.best}
        hparams: {lr: [0.02, 0.05, 0.1], augment: [none, crop]}
        strategy: random
        estimator: {type: scratch}
        budget: {trials: 6}
      train: {kind: train, arch: ${search.best}, hparams: ${tune.hparams}, train: {epochs: 15}}

A step names its ``kind`` and that kind's options; ``defaults`` fill the options a step does not
set (those its kind accepts; a step's value replaces the default whole). ``${STEP.OUTPUT}`` is an
earlier step's output (``${STEP.metrics.val_acc}`` reaches inside one); a step runs after every
step it references and every step in its ``after`` list, in declaration order otherwise.

Step kinds are registry components of kind ``step``: a function registered with
``@register("step", NAME)`` that returns a :class:`StepKind`, so a plugin can add one. The
built-in kinds and their outputs:

- ``search``: an experiment (the sections of a ``nasforge search`` config, without ``name``,
  ``run_dir`` and ``train``). Outputs ``best`` (the best arch in the space's notation),
  ``value``, ``metrics``, ``hparams`` (the best arch's ``hp.`` choices, if any), ``topk``,
  ``dir``.
- ``tune``: a search over training hyperparameters alone for one ``arch`` of ``space``
  (a ``with_hparams`` space with the arch pinned); options of ``search`` plus ``arch`` and
  ``hparams``. Outputs as ``search``; ``hparams`` is the tuned setting.
- ``train``: final training of ``arch`` on train + valid and one test (``nasforge train``);
  options ``arch``, ``space``, ``data``, ``seed``, ``device``, ``threads``, ``train``
  (``TrainSettings``) and ``hparams`` (overriding ``train``, after the arch's own ``hp.``
  values). Outputs ``dir`` (the model folder), ``metrics``, ``test_acc``; on a space with a
  latency model (``latency_bounded``) ``metrics`` also compares its predicted and measured
  latency, as ``nasforge train`` does.

Every step runs in ``RUN_DIR/STEP/``; a finished step leaves ``done.json`` (its outputs, written
atomically), so ``nasforge pipeline --resume RUN_DIR`` skips finished steps and resumes an
interrupted search or tune step from its own store and checkpoint (the runner's resume).
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydantic
import torch
import yaml
from pydantic import BaseModel, ConfigDict, NonNegativeInt, PositiveInt

from nasforge.core import registry
from nasforge.core.atomic import atomic_write_bytes
from nasforge.core.errors import CheckpointError, ConfigError, NasforgeError
from nasforge.core.registry import ComponentSpec, register
from nasforge.core.seeding import derive_seed
from nasforge.core.threads import pinned_threads
from nasforge.core.trial import Trial
from nasforge.runner.config import ExperimentConfig, parse_config
from nasforge.runner.experiment import (
    TOPK_FILE,
    arch_from_text,
    build_experiment,
    resolve_device,
    save_run_config,
    write_topk,
)
from nasforge.runner.final import train_arch
from nasforge.runner.loop import STORE_FILE, SearchResult
from nasforge.runner.rundir import RunLock, clean_leftovers, require_writable
from nasforge.spaces.hparams import hparams_of
from nasforge.tasks.model_folder import METRICS_FILE, MODEL_FILE
from nasforge.tasks.training import TrainSettings

__all__ = [
    "PipelineConfig",
    "StepKind",
    "load_pipeline",
    "load_run",
    "plan",
    "run_pipeline",
    "step_kinds",
    "PIPELINE_FILE",
    "DONE_FILE",
]

log = logging.getLogger("nasforge")

#: The pipeline's config as run, in its run directory (what ``--resume`` reads back).
PIPELINE_FILE = "pipeline.yaml"
#: A finished step's marker in its folder: its kind and outputs.
DONE_FILE = "done.json"

_REFERENCE = re.compile(r"\$\{([^}]*)\}")
_STEP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

#: ``on_trial(step, trial, result)``: called after every trial of a search or tune step.
OnTrial = Callable[[str, Trial, SearchResult], None]


class PipelineConfig(BaseModel):
    """A pipeline, as read from YAML (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "pipeline"
    run_dir: str | None = None
    defaults: dict[str, Any] = {}
    steps: dict[str, dict[str, Any]]

    def resolved_run_dir(self) -> Path:
        """``run_dir`` if set, else ``runs/<name>``."""
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name


class TrainStep(BaseModel):
    """The options of a ``train`` step."""

    model_config = ConfigDict(extra="forbid")

    arch: str
    space: ComponentSpec
    data: ComponentSpec = ComponentSpec(type="digits")
    seed: NonNegativeInt = 0
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    threads: PositiveInt | None = None
    train: dict[str, Any] = {}
    hparams: dict[str, Any] = {}


# -- the kinds -------------------------------------------------------------------------------


def _search_config(name: str, options: Mapping[str, Any], step_dir: Path) -> ExperimentConfig:
    return parse_config({**options, "name": name, "run_dir": str(step_dir)}, f"pipeline step {name!r}")


def _tune_config(name: str, options: Mapping[str, Any], step_dir: Path) -> ExperimentConfig:
    options = dict(options)
    missing = [key for key in ("arch", "hparams", "space") if key not in options]
    if missing:
        raise ConfigError(f"pipeline step {name!r} (tune) needs {', '.join(missing)} (set in the step or in defaults)")
    inner = options.pop("space")
    space = {
        "type": "with_hparams",
        "inner": {"type": inner} if isinstance(inner, str) else inner,
        "arch": options.pop("arch"),
        "hparams": options.pop("hparams"),
    }
    return _search_config(name, {**options, "space": space}, step_dir)


def _train_options(name: str, options: Mapping[str, Any], step_dir: Path) -> TrainStep:
    where = f"pipeline step {name!r} (train)"
    for model, prefix, values in ((TrainStep, "", options), (TrainSettings, "train.", options.get("train", {}))):
        try:
            model.model_validate(values)
        except pydantic.ValidationError as exc:
            details = "; ".join(f"{prefix}{'.'.join(map(str, e['loc']))} = {e.get('input')!r}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"{where}: {details}") from None
    step = TrainStep.model_validate(options)
    registry.validate_options("space", step.space.type, step.space.options, where=f"{where}: space", require_all=False)
    registry.validate_options("dataset", step.data.type, step.data.options, where=f"{where}: data", require_all=False)
    return step


def _run_search(name: str, config: ExperimentConfig, step_dir: Path, on_trial: OnTrial | None) -> dict[str, Any]:
    """Run (or resume, when its folder holds trials) one search; its outputs."""
    experiment = build_experiment(config, f"pipeline step {name!r}")
    save_run_config(step_dir, config)
    resume = (step_dir / STORE_FILE).is_file()
    if resume:
        log.info("step %s: resuming its search from %s", name, step_dir)
    runner = experiment.runner(step_dir, None if on_trial is None else lambda t, r: on_trial(name, t, r))
    try:
        result = runner.run(resume=resume)
    finally:
        runner.store.close()
    chosen = write_topk(step_dir, experiment.space, result, config.top_k)
    if not chosen:
        raise NasforgeError(f"pipeline step {name!r}: no trial completed feasibly, so later steps have no arch to use")
    best = chosen[0]
    return {
        "best": experiment.space.format(best.arch),
        "value": best.values[0],
        "metrics": best.metrics,
        "hparams": hparams_of(best.arch),
        "topk": str(step_dir / TOPK_FILE),
        "dir": str(step_dir),
    }


def _run_train(name: str, step: TrainStep, step_dir: Path, on_trial: OnTrial | None) -> dict[str, Any]:
    """Train ``step.arch`` on train + valid, test it once; the model folder is ``STEP/model``."""
    if step.threads is not None:
        torch.set_num_threads(step.threads)
    where = f"pipeline step {name!r}"
    data = registry.create("dataset", step.data.type, step.data.options, where=f"{where}: data").load(
        seed=derive_seed(step.seed, "data")
    )
    space = registry.create("space", step.space.type, step.space.options, context=data.context(), where=f"{where}: space")
    arch = arch_from_text(space, step.arch)
    out = step_dir / "model"
    if (out / MODEL_FILE).is_file() and (out / METRICS_FILE).is_file():  # trained before a kill: never again
        log.info("step %s: its model in %s was trained already; kept", name, out)
        metrics = json.loads((out / METRICS_FILE).read_text())
        return {"dir": str(out), "metrics": metrics, "test_acc": metrics["test_acc"]}
    metrics = train_arch(
        space,
        step.space,
        data,
        step.data,
        arch,
        step.train,
        hparams=step.hparams,
        seed=step.seed,
        out_dir=out,
        device=resolve_device(step.device),
        where=where,
    )
    return {"dir": str(out), "metrics": metrics, "test_acc": metrics["test_acc"]}


@dataclass(frozen=True)
class StepKind:
    """One kind of step: the options it takes, how they are checked, how it runs, what it outputs."""

    options: frozenset[str]
    outputs: tuple[str, ...]
    prepare: Callable[[str, Mapping[str, Any], Path], Any]
    run: Callable[[str, Any, Path, OnTrial | None], dict[str, Any]]


_SEARCH_OPTIONS = frozenset(ExperimentConfig.model_fields) - {"name", "run_dir", "train"}
_SEARCH_OUTPUTS = ("best", "value", "metrics", "hparams", "topk", "dir")


@register("step", "search")
def search_step() -> StepKind:
    """An experiment (a `nasforge search` config's sections); outputs the best arch and its scores."""
    return StepKind(_SEARCH_OPTIONS, _SEARCH_OUTPUTS, _search_config, _run_search)


@register("step", "tune")
def tune_step() -> StepKind:
    """A search over training hyperparameters alone for one `arch`; outputs as `search`."""
    return StepKind(_SEARCH_OPTIONS | {"arch", "hparams"}, _SEARCH_OUTPUTS, _tune_config, _run_search)


@register("step", "train")
def train_step() -> StepKind:
    """Final training of `arch` on train + valid and one test; outputs the model folder and metrics."""
    return StepKind(frozenset(TrainStep.model_fields), ("dir", "metrics", "test_acc"), _train_options, _run_train)


def step_kinds() -> dict[str, StepKind]:
    """The registered step kinds (built-ins and plugins') by name."""
    kinds = {}
    for reg in registry.registrations("step"):
        kind = reg.target()
        if not isinstance(kind, StepKind):
            raise ConfigError(f"step kind {reg.name!r} ({reg.target.__module__}) returned {type(kind).__name__}, not a StepKind")
        kinds[reg.name] = kind
    return kinds


# -- references and order ----------------------------------------------------------------------


def _references(value: Any) -> list[tuple[str, list[str]]]:
    """Every ``${step.path}`` inside ``value`` (nested), as (step, [output, key, ...])."""
    if isinstance(value, str):
        found = []
        for match in _REFERENCE.finditer(value):
            parts = match.group(1).split(".")
            if len(parts) < 2 or not all(parts):
                raise ConfigError(f"reference {match.group(0)!r} must name a step and one of its outputs: ${{STEP.OUTPUT}}")
            found.append((parts[0], parts[1:]))
        return found
    if isinstance(value, Mapping):
        return [ref for item in value.values() for ref in _references(item)]
    if isinstance(value, (list, tuple)):
        return [ref for item in value for ref in _references(item)]
    return []


def _lookup(outputs: Mapping[str, Mapping[str, Any]], step: str, path: list[str], text: str) -> Any:
    value: Any = outputs[step]
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            raise ConfigError(f"reference {text!r}: step {step!r} has no output {'.'.join(path)!r}")
        value = value[key]
    return value


def _resolve(value: Any, outputs: Mapping[str, Mapping[str, Any]]) -> Any:
    """``value`` with every reference replaced: a whole-string reference by the output itself,
    one inside a longer string by its text."""
    if isinstance(value, str):
        whole = _REFERENCE.fullmatch(value)
        if whole:
            return _lookup(outputs, *_split(whole.group(1)), value)
        return _REFERENCE.sub(lambda m: str(_lookup(outputs, *_split(m.group(1)), m.group(0))), value)
    if isinstance(value, Mapping):
        return {key: _resolve(item, outputs) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, outputs) for item in value]
    return value


def _split(reference: str) -> tuple[str, list[str]]:
    step, *path = reference.split(".")
    return step, path


def _kind(name: str, spec: Mapping[str, Any]) -> StepKind:
    kind = spec.get("kind")
    kinds = step_kinds()
    if kind not in kinds:
        close = difflib.get_close_matches(str(kind), list(kinds), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        what = "has no `kind`" if kind is None else f"has unknown kind {kind!r}"
        raise ConfigError(f"pipeline step {name!r} {what}.{hint} Step kinds: {', '.join(kinds)}.")
    return kinds[kind]


def _step_options(config: PipelineConfig, name: str) -> dict[str, Any]:
    """A step's options: its own, then the defaults its kind accepts (without ``kind``/``after``)."""
    spec = config.steps[name]
    kind = _kind(name, spec)
    own = {key: value for key, value in spec.items() if key not in ("kind", "after")}
    unknown = [key for key in own if key not in kind.options]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(kind.options), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"pipeline step {name!r} ({spec['kind']}) has unknown option {unknown[0]!r}.{hint} "
            f"It accepts: kind, after, {', '.join(sorted(kind.options))}."
        )
    return {**{k: v for k, v in config.defaults.items() if k in kind.options}, **own}


def _dependencies(config: PipelineConfig, name: str) -> list[str]:
    """The steps ``name`` needs: those it references and those in its ``after`` list."""
    spec = config.steps[name]
    after = spec.get("after", [])
    if isinstance(after, str):
        after = [after]
    needed = list(after)
    for step, path in _references(_step_options(config, name)):
        needed.append(step)
        if step in config.steps and step != name:
            outputs = _kind(step, config.steps[step]).outputs
            if path[0] not in outputs:
                raise ConfigError(
                    f"pipeline step {name!r} references ${{{step}.{'.'.join(path)}}}, but a "
                    f"{config.steps[step]['kind']} step outputs only: {', '.join(outputs)}"
                )
    for step in needed:
        if step == name:
            raise ConfigError(f"pipeline step {name!r} depends on itself")
        if step not in config.steps:
            close = difflib.get_close_matches(str(step), list(config.steps), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"pipeline step {name!r} depends on unknown step {step!r}.{hint} Steps: {', '.join(config.steps)}.")
    return list(dict.fromkeys(needed))


def plan(config: PipelineConfig) -> list[str]:
    """The order to run the steps in: dependencies first, declaration order otherwise.

    Raises:
        ConfigError: an unknown kind, option, step or output; a cycle (the message shows it).
    """
    if not config.steps:
        raise ConfigError("the pipeline has no steps")
    for name in config.steps:
        if not _STEP_NAME.match(name):
            raise ConfigError(f"pipeline step name {name!r} must be a letter or _ followed by letters, digits, _ or -")
    allowed = set().union(*(kind.options for kind in step_kinds().values()))
    unknown = [key for key in config.defaults if key not in allowed]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(allowed), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"pipeline defaults has unknown key {unknown[0]!r}.{hint} No step kind accepts it.")
    needs = {name: _dependencies(config, name) for name in config.steps}
    order: list[str] = []
    while len(order) < len(needs):
        ready = [name for name in needs if name not in order and all(dep in order for dep in needs[name])]
        if not ready:
            raise ConfigError(f"pipeline steps form a cycle (each needs the next): {' -> '.join(_cycle(needs, order))}")
        order.append(ready[0])
    return order


def _cycle(needs: Mapping[str, list[str]], done: list[str]) -> list[str]:
    """One dependency cycle among the steps not yet ``done`` (for the error message)."""
    path: list[str] = [next(name for name in needs if name not in done)]
    while True:
        following = next(dep for dep in needs[path[-1]] if dep not in done)
        if following in path:
            return [*path[path.index(following) :], following]
        path.append(following)


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read and check a pipeline YAML (kinds, options, references, cycles) before anything runs.

    Steps with no references are validated whole (components and options); the others are
    validated when their references are known, just before they run.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"pipeline file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read pipeline file {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping with `steps`, got {type(raw).__name__}")
    try:
        config = PipelineConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid pipeline {path}: {details}") from None
    for name in plan(config):
        options = _step_options(config, name)
        if not _references(options):
            _kind(name, config.steps[name]).prepare(name, options, Path(name))
    return config


# -- running -----------------------------------------------------------------------------------


def run_pipeline(
    config: PipelineConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    report: Callable[[str], None] | None = None,
    on_trial: OnTrial | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every step in order in ``run_dir/STEP``; returns each step's outputs.

    With ``resume=True`` the steps marked done are skipped (their outputs read back) and an
    interrupted search or tune step continues from its own store. ``report`` receives one line
    per step; ``on_trial`` is called after every trial of a search or tune step.
    """
    run_dir = Path(run_dir)
    with RunLock(run_dir):  # one writer at a time
        if resume:
            require_writable(run_dir, "resume")
            clean_leftovers(run_dir)
        return _run_steps(config, run_dir, resume, report, on_trial)


def _run_steps(
    config: PipelineConfig, run_dir: Path, resume: bool, report: Callable[[str], None] | None, on_trial: OnTrial | None
) -> dict[str, dict[str, Any]]:
    say = report or (lambda line: log.info("%s", line))
    order = plan(config)
    if not resume:
        if (run_dir / PIPELINE_FILE).exists():
            raise CheckpointError(
                f"{run_dir} already holds a pipeline; resume it with `nasforge pipeline --resume {run_dir}`, "
                "or choose another run_dir"
            )
        atomic_write_bytes(
            run_dir / PIPELINE_FILE,
            yaml.safe_dump(config.model_copy(update={"run_dir": str(run_dir)}).model_dump(), sort_keys=False).encode(),
        )
    outputs: dict[str, dict[str, Any]] = {}
    for number, name in enumerate(order, start=1):
        kind_name = config.steps[name]["kind"]
        step_dir = run_dir / name
        marker = step_dir / DONE_FILE
        if marker.is_file():
            outputs[name] = json.loads(marker.read_text())["outputs"]
            say(f"step {number}/{len(order)} {name} ({kind_name}): done earlier, skipped")
            continue
        say(f"step {number}/{len(order)} {name} ({kind_name}): running in {step_dir}")
        kind = _kind(name, {"kind": kind_name})
        prepared = kind.prepare(name, _resolve(_step_options(config, name), outputs), step_dir)
        step_dir.mkdir(parents=True, exist_ok=True)
        with pinned_threads(None):  # a step's `threads` (set by the step) hold for that step only
            outputs[name] = kind.run(name, prepared, step_dir, on_trial)
        atomic_write_bytes(marker, json.dumps({"kind": kind_name, "outputs": outputs[name]}, indent=2).encode())
        say(f"step {number}/{len(order)} {name} ({kind_name}): finished; outputs in {marker}")
    return outputs


def load_run(run_dir: str | Path) -> PipelineConfig:
    """The pipeline config saved in a pipeline's run directory (for ``--resume``)."""
    path = Path(run_dir) / PIPELINE_FILE
    if not path.is_file():
        raise CheckpointError(f"cannot resume {run_dir}: it holds no {PIPELINE_FILE} (is it a pipeline run directory?)")
    return load_pipeline(path)
