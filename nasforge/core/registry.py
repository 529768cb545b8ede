"""The component registry: short type names -> classes, with plugin discovery.

Components register with a decorator::

    @register("strategy", "evolution")
    class RegularizedEvolution(Strategy): ...

Configs refer to components by ``type: evolution``; :func:`create` validates the remaining keys
against the constructor's signature (types and ranges come from its annotations) before anything
runs. Built-in components are discovered by importing every module of nasforge's component
packages, so adding a strategy is one file and no edit elsewhere. Plugins add names from the
``nasforge.plugins`` entry-point group and from ``$NASFORGE_HOME/plugins/*.py``.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import logging
import os
import pkgutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, model_validator
from pydantic_core import core_schema

from nasforge.core.errors import ConfigError, UnknownComponentError

__all__ = [
    "KINDS",
    "ComponentSpec",
    "Registration",
    "Registered",
    "register",
    "get",
    "names",
    "registrations",
    "create",
    "create_inner",
    "validate_options",
    "signature_defaults",
    "required_options",
    "load_plugins",
    "nasforge_home",
]

log = logging.getLogger(__name__)

#: The kinds of component, and the package whose modules hold the built-in ones.
KINDS: dict[str, str] = {
    "space": "nasforge.spaces",
    "strategy": "nasforge.strategies",
    "estimator": "nasforge.estimators",
    "objective": "nasforge.objectives",
    "predictor": "nasforge.predictors",
    "dataset": "nasforge.tasks",
    "criterion": "nasforge.tasks",
    "rule": "nasforge.oneshot",
    "cost_model": "nasforge.hardware",
    "encoding": "nasforge.predictors",
    "step": "nasforge.runner",
    "executor": "nasforge.runner",
}

T = TypeVar("T")


class ComponentSpec(BaseModel):
    """``{type: NAME, **options}``; a bare string ``NAME`` is short for ``{type: NAME}``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @property
    def options(self) -> dict[str, Any]:
        """Everything but ``type``: the component's constructor options."""
        return dict(self.model_extra or {})


@dataclass(frozen=True)
class Registration:
    """One registered component."""

    kind: str
    name: str
    target: Callable[..., Any]
    summary: str
    tags: frozenset[str]


_REGISTRY: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
_discovered = False


def register(kind: str, name: str, *, tags: tuple[str, ...] = ()) -> Callable[[T], T]:
    """Class (or factory) decorator registering a component under ``kind``/``name``.

    ``tags`` are free words used for filtering (``nasforge registry strategy --tag multi-objective``)
    and for capability checks (e.g. a space tagged ``supernet``).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")

    def decorator(target: T) -> T:
        existing = _REGISTRY[kind].get(name)
        if existing is not None and existing.target is not target:
            where = f"{existing.target.__module__}.{existing.target.__qualname__}"  # type: ignore[attr-defined]
            raise ValueError(f"{kind} {name!r} is already registered by {where}")
        doc = inspect.getdoc(target) or ""
        _REGISTRY[kind][name] = Registration(kind, name, target, doc.split("\n\n")[0].replace("\n", " "), frozenset(tags))  # type: ignore[arg-type]
        return target

    return decorator


def nasforge_home() -> Path:
    """``$NASFORGE_HOME`` or ``~/.nasforge``: where plugins and caches live."""
    return Path(os.environ.get("NASFORGE_HOME", Path.home() / ".nasforge"))


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for package_name in sorted(set(KINDS.values())):
        package = importlib.import_module(package_name)
        for module in pkgutil.iter_modules(package.__path__, prefix=package_name + "."):
            if not module.name.rsplit(".", 1)[-1].startswith("_"):
                importlib.import_module(module.name)
    load_plugins()


def load_plugins() -> list[str]:
    """Import plugins from the ``nasforge.plugins`` entry points and ``$NASFORGE_HOME/plugins``.

    Returns the names of what was loaded. A plugin that fails to import is reported in the log
    and skipped, so one broken plugin does not take the others down.
    """
    loaded: list[str] = []
    for entry in entry_points(group="nasforge.plugins"):
        try:
            entry.load()
            loaded.append(entry.name)
        except Exception as exc:  # a broken plugin must not stop the others
            log.warning("plugin %s failed to load: %s", entry.name, exc)
    folder = nasforge_home() / "plugins"
    if folder.is_dir():
        for path in sorted(folder.glob("*.py")):
            module_name = f"nasforge_plugin_{path.stem}"
            if module_name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(module_name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
                loaded.append(str(path))
            except Exception as exc:
                del sys.modules[module_name]
                log.warning("plugin %s failed to load: %s", path, exc)
    return loaded


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise UnknownComponentError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")


def registrations(kind: str | None = None, *, tag: str | None = None) -> list[Registration]:
    """Registered components, optionally of one kind and carrying a tag, sorted by name."""
    _discover()
    kinds = [kind] if kind is not None else list(KINDS)
    for k in kinds:
        _check_kind(k)
    found = [reg for k in kinds for reg in _REGISTRY[k].values() if tag is None or tag in reg.tags]
    return sorted(found, key=lambda reg: (reg.kind, reg.name))


def names(kind: str) -> list[str]:
    """The registered names of one kind, sorted."""
    return [reg.name for reg in registrations(kind)]


def get(kind: str, name: str) -> Registration:
    """The registration of ``kind``/``name``; an unknown name lists the registered ones."""
    _discover()
    _check_kind(kind)
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        known = sorted(_REGISTRY[kind])
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownComponentError(
            f"unknown {kind} type {name!r}.{hint} Registered {kind} types: {', '.join(known) or '(none)'}."
        ) from None


@dataclass(frozen=True)
class Registered:
    """Annotation metadata for an option that names a registered component of ``kind``::

        rule: Annotated[str, Registered("rule")] = "spos"

    Validation accepts exactly the names registered when it runs (plugins included) and the
    extra values in ``also`` (``auto``, say); anything else fails with :func:`get`'s message,
    "unknown rule type 'x'. Did you mean ...? Registered rule types: ...".
    """

    kind: str
    also: tuple[str, ...] = ()

    def check(self, value: str) -> str:
        if value not in self.also:
            try:
                get(self.kind, value)
            except UnknownComponentError as exc:
                also = f" Also allowed: {', '.join(self.also)}." if self.also else ""
                raise ValueError(f"{exc}{also}") from None
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))


def _parameters(target: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    init = target.__init__ if inspect.isclass(target) else target  # type: ignore[misc]
    params = dict(inspect.signature(init).parameters)
    params.pop("self", None)
    return {
        name: p for name, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _hints(target: Callable[..., Any]) -> dict[str, Any]:
    init = target.__init__ if inspect.isclass(target) else target  # type: ignore[misc]
    module = sys.modules.get(getattr(target, "__module__", ""), None)
    try:
        import typing

        return typing.get_type_hints(init, globalns=vars(module) if module else None, include_extras=True)
    except Exception:  # unresolvable annotation: validate that parameter as Any
        return {}


def signature_defaults(kind: str, name: str, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The constructor's parameters with their defaults (``None`` for required ones)."""
    target = get(kind, name).target
    return {
        pname: (None if p.default is p.empty else p.default)
        for pname, p in _parameters(target).items()
        if pname not in skip
    }


def required_options(kind: str, name: str, *, skip: tuple[str, ...] = ()) -> list[str]:
    """The constructor's parameters without a default: the options a config must set."""
    return [pname for pname, p in _parameters(get(kind, name).target).items() if p.default is p.empty and pname not in skip]


def _format_validation_error(exc: pydantic.ValidationError, where: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{where}.{loc} = {err.get('input')!r}: {err['msg']}")
    return "; ".join(parts)


def validate_options(
    kind: str,
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    context: Mapping[str, Any] | None = None,
    where: str | None = None,
    require_all: bool = True,
) -> dict[str, Any]:
    """Check ``options`` against ``kind``/``name``'s constructor and return the keyword arguments.

    Types and ranges come from the constructor's annotations (``PositiveInt``,
    ``Annotated[float, Field(gt=0)]``, ``Literal[...]``). ``context`` values (``num_classes``,
    ``space``, ...) fill parameters of the same name that the config did not set. With
    ``require_all=False`` missing required options are not an error (config loading, before
    the context is known).
    """
    registration = get(kind, name)
    options = dict(options or {})
    where = where or f"{kind} {name!r}"
    params = _parameters(registration.target)
    unknown = [key for key in options if key not in params]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(params), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown key {key!r} in {where}.{hint} "
            f"{kind} {name!r} accepts: {', '.join(params) or '(no options)'}."
        )
    for key, value in (context or {}).items():
        if key in params and key not in options:
            options[key] = value
    missing = [p for p, spec in params.items() if spec.default is spec.empty and p not in options]
    if missing and require_all:
        raise ConfigError(f"{where} is missing required option(s): {', '.join(missing)}.")
    hints = _hints(registration.target)
    fields = {
        pname: (hints.get(pname, Any), ... if p.default is p.empty else p.default)
        for pname, p in params.items()
        if pname in options
    }
    model = pydantic.create_model(  # type: ignore[call-overload]
        f"{name}_options", __config__=pydantic.ConfigDict(arbitrary_types_allowed=True, extra="forbid"), **fields
    )
    try:
        validated = model(**options)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"invalid option: {_format_validation_error(exc, where)}") from None
    return {key: getattr(validated, key) for key in options}


def create(
    kind: str,
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    context: Mapping[str, Any] | None = None,
    where: str | None = None,
) -> Any:
    """Validate ``options`` (see :func:`validate_options`), then construct the component.

    A ``ValueError`` raised by the constructor (an inconsistent combination of options) becomes
    a :class:`ConfigError` naming ``where``.
    """
    kwargs = validate_options(kind, name, options, context=context, where=where)
    try:
        return get(kind, name).target(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"invalid option in {where or f'{kind} {name!r}'}: {exc}") from None


def create_inner(kind: str, spec: Mapping[str, Any], *, where: str, context: Mapping[str, Any] | None = None) -> Any:
    """The component a ``{type: NAME, **options}`` mapping names, e.g. the ``inner`` part a
    wrapping component (``with_hparams``, ``latency_bounded``, ``with_latency``) holds.

    Raises:
        ConfigError: ``type`` is missing, or as :func:`create`.
    """
    options = dict(spec)
    name = options.pop("type", None)
    if not isinstance(name, str):
        raise ConfigError(f"{where} needs `type`, the registered name of the {kind} it holds")
    return create(kind, name, options, context=context, where=where)
