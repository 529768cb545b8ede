"""Declared capabilities: what a space offers beyond ``choices()``/``build()``, what strategies
and estimators need, and the one check that a space, strategy and estimator fit together.

A space *offers* a capability by having its methods; each capability is a runtime-checkable
:class:`~typing.Protocol` (:data:`PROTOCOLS`), and every component asks through :func:`offers`
or :func:`require` (never ``getattr``/``hasattr``). Strategies and estimators *declare* what they
need as class attributes:

- ``requires`` (both): capabilities the space must offer; ``excludes`` (strategies): ones it
  must not (FBNet prices layers, not DARTS edges).
- ``modes`` (both): supernet execution modes the space must support (``weighted``: mixing
  candidates by weights), checked on spaces that say which they support (:class:`HasModes`).
- ``arch_parameters`` (strategies): how the strategy's architecture parameters must be trained
  (:data:`ArchTraining`), None for a strategy without any; ``trains_arch_parameters``
  (estimators): the way it trains them, None for none; ``needs_arch_parameters`` (estimators):
  it cannot run without them.

:func:`check_combination` applies all of it, on configs (before any data loads), classes or
instances, and raises a one-line :class:`~nasforge.core.errors.ConfigError` naming the parts.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from nasforge.core import registry
from nasforge.core.errors import ConfigError
from nasforge.core.registry import ComponentSpec

if TYPE_CHECKING:
    from nasforge.core.arch import Arch, Choice

__all__ = [
    "Capability",
    "ArchTraining",
    "HasSupernet",
    "HasEdges",
    "HasElasticKinds",
    "HasCostLayers",
    "HasModes",
    "PROTOCOLS",
    "declared",
    "offers",
    "require",
    "require_mode",
    "component_name",
    "spaces_offering",
    "check_combination",
    "combination_problem",
    "parallel_problem",
    "check_parallel",
]


class Capability(str, Enum):
    """What a space may offer beyond ``choices()`` and ``build()``."""

    SUPERNET = "supernet"  #: ``supernet(**options)``: weight sharing (one-shot, differentiable)
    EDGES = "edges"  #: ``edge_choices()`` and ``derive(weights)``: differentiable edges (DARTS cells)
    ELASTIC = "elastic"  #: ``elastic_kinds()``: elastic dimensions (progressive shrinking)
    COST_LAYERS = "cost-layers"  #: ``cost_layers(input_shape)``: its own split into priced layers
    MODES = "modes"  #: ``supports(mode)``/``require(mode, by)``: not every supernet mode works

    def __str__(self) -> str:
        return self.value


#: How a strategy's architecture parameters are trained: jointly with the supernet weights
#: (DARTS and the other differentiable methods: the ``dnas`` estimator), or on a supernet trained
#: first and then frozen (the architecture generator: the ``supernet`` estimator).
ArchTraining = Literal["with-weights", "on-trained-supernet"]


@runtime_checkable
class HasSupernet(Protocol):
    """A space that builds a weight-sharing supernet (:class:`~nasforge.nn.mixed.Supernet`)."""

    def supernet(self, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class HasEdges(Protocol):
    """A space searched over weighted edges (``none`` included) whose archs are derived from the
    edges' weights (DARTS cells: the two strongest inputs of each node)."""

    def edge_choices(self) -> Mapping[str, Choice]: ...

    def derive(self, weights: Mapping[str, Any]) -> Arch: ...


@runtime_checkable
class HasElasticKinds(Protocol):
    """A space whose choices are elastic dimensions (``kernel``, ``depth``, ``width``)."""

    def elastic_kinds(self) -> Mapping[str, str]: ...


@runtime_checkable
class HasCostLayers(Protocol):
    """A space that splits its archs into layers for cost tables itself."""

    def cost_layers(self, input_shape: tuple[int, ...]) -> Sequence[Any]: ...


@runtime_checkable
class HasModes(Protocol):
    """A space whose supernet runs in some modes only (``single``, ``weighted``)."""

    def supports(self, mode: str) -> bool: ...

    def require(self, mode: str, by: str) -> None: ...


#: Each capability's protocol.
PROTOCOLS: dict[Capability, type] = {
    Capability.SUPERNET: HasSupernet,
    Capability.EDGES: HasEdges,
    Capability.ELASTIC: HasElasticKinds,
    Capability.COST_LAYERS: HasCostLayers,
    Capability.MODES: HasModes,
}

#: Each capability in words, and the methods that offer it.
_WHAT: dict[Capability, tuple[str, str]] = {
    Capability.SUPERNET: ("a space that builds a supernet", "supernet()"),
    Capability.EDGES: ("a space whose archs derive from edge weights", "edge_choices() and derive()"),
    Capability.ELASTIC: ("an elastic space", "elastic_kinds()"),
    Capability.COST_LAYERS: ("a space that splits archs into cost layers", "cost_layers()"),
    Capability.MODES: ("a space that names its supernet modes", "supports() and require()"),
}


def _missing(by: str, capability: Capability, space: str) -> str:
    need, methods = _WHAT[capability]
    others = spaces_offering([capability])
    return f"{by} needs {need}, and space {space!r} has no {methods}; spaces with it: {', '.join(others) or '(none)'}"


def _forwards(cls: Any) -> bool:
    """Whether instances of ``cls`` are wrappers offering their ``inner`` component's capabilities
    (the class attribute ``forwards_capabilities`` of spaces and estimators)."""
    return inspect.isclass(cls) and bool(getattr(cls, "forwards_capabilities", False))


def _unwrapped(target: Any) -> Any:
    """A wrapper instance whose capabilities are its ``inner`` component's (``latency_bounded``,
    ``with_latency``: a class attribute ``forwards_capabilities``) stands for that component."""
    while not inspect.isclass(target) and _forwards(type(target)):
        target = target.inner
    return target


def offers(target: Any, capability: Capability) -> bool:
    """Whether ``target`` (a space class or instance) offers ``capability``."""
    target = _unwrapped(target)
    protocol = PROTOCOLS[Capability(capability)]
    if inspect.isclass(target):
        return issubclass(target, protocol)
    return isinstance(target, protocol)


def declared(target: Any) -> list[str]:
    """The names of the capabilities a space class or instance offers, in :class:`Capability` order."""
    return [capability.value for capability in Capability if offers(target, capability)]


def component_name(kind: str, target: Any) -> str:
    """The registered name of a component class or instance (its class name if unregistered)."""
    cls = target if inspect.isclass(target) else type(target)
    for reg in registry.registrations(kind):
        if reg.target is cls:
            return reg.name
    return cls.__name__


def spaces_offering(capabilities: Iterable[Capability]) -> list[str]:
    """The registered spaces offering every one of ``capabilities``."""
    wanted = list(capabilities)
    return [reg.name for reg in registry.registrations("space") if all(offers(reg.target, c) for c in wanted)]


def require(space: Any, capability: Capability, *, by: str) -> None:
    """Raise ConfigError (naming ``by``, e.g. ``"estimator 'dnas'"``) unless ``space`` offers ``capability``."""
    if not offers(space, capability):
        raise ConfigError(_missing(by, capability, component_name("space", _unwrapped(space))))


def require_mode(space: Any, mode: str, *, by: str) -> None:
    """Raise ConfigError unless ``space``'s supernet runs in ``mode`` (spaces that do not say
    which modes they support run in all)."""
    inner = _unwrapped(space)
    if not inspect.isclass(inner) and isinstance(inner, HasModes):
        inner.require(mode, by=by)


# -- one combination -----------------------------------------------------------------------------------


class _Part:
    """One component of a combination: its kind, registered name, class and (if built) instance."""

    def __init__(self, kind: str, given: Any) -> None:
        self.kind = kind
        self.instance: Any = None
        if isinstance(given, (ComponentSpec, Mapping, str)):
            spec = ComponentSpec.model_validate(given)
            reg = registry.get(kind, spec.type)
            inner = spec.options.get("inner")
            if _forwards(reg.target) and isinstance(inner, Mapping) and "type" in inner:
                wrapped = _Part(kind, inner)
                self.name, self.cls, self.reg = f"{spec.type}({wrapped.name})", wrapped.cls, wrapped.reg
                return
            self.name, self.cls, self.reg = spec.type, reg.target, reg
            return
        target = _unwrapped(given)
        if not inspect.isclass(target):
            self.instance, target = target, type(target)
        self.cls = target
        self.name = component_name(kind, target)
        self.reg = next((r for r in registry.registrations(kind) if r.target is target), None)

    @property
    def target(self) -> Any:
        return self.instance if self.instance is not None else self.cls

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r}"

    def attr(self, name: str, default: Any) -> Any:
        return getattr(self.cls, name, default)


def _tagged_spaces(part: _Part) -> set[str]:
    if part.reg is None:
        return set()
    return {tag.split(":", 1)[1] for tag in part.reg.tags if tag.startswith("space:")}


def _names(kind: str, fits: Any) -> str:
    return ", ".join(reg.name for reg in registry.registrations(kind) if fits(reg)) or "(none)"


def combination_problem(space: Any, strategy: Any = None, estimator: Any = None) -> str | None:
    """Why ``space``, ``strategy`` and ``estimator`` cannot search together (one line), or None.

    Each part may be a config section (``{type: NAME, ...}`` or a name), a registered class or a
    built instance; a strategy or estimator may be None (not chosen yet). Configs and classes
    are checked by what their classes declare; instances also by what they support (a user
    model's supernet modes).
    """
    sp = _Part("space", space)
    parts = [_Part(kind, given) for kind, given in (("strategy", strategy), ("estimator", estimator)) if given is not None]
    for part in parts:
        tagged = _tagged_spaces(part)
        if tagged and sp.name not in tagged and (sp.reg is None or sp.reg.name not in tagged):
            return f"{part} fits space(s) {', '.join(sorted(tagged))} only, not {sp}"
        for capability in sorted(part.attr("requires", frozenset()), key=list(Capability).index):
            if not offers(sp.target, capability):
                return _missing(str(part), capability, sp.name)
        for capability in sorted(part.attr("excludes", frozenset()), key=list(Capability).index):
            if offers(sp.target, capability):
                need, methods = _WHAT[capability]
                return f"{part} cannot search {need} ({methods}), and {sp} is one"
        if sp.instance is not None:
            for mode in sorted(part.attr("modes", frozenset())):
                try:
                    require_mode(sp.instance, mode, by=str(part))
                except ConfigError as exc:
                    return str(exc)
    by_kind = {part.kind: part for part in parts}
    st, es = by_kind.get("strategy"), by_kind.get("estimator")
    if st is not None and es is not None:
        wanted = st.attr("arch_parameters", None)
        trains = es.attr("trains_arch_parameters", None)
        if wanted is not None and trains != wanted:
            hows = {"with-weights": "jointly with the supernet weights", "on-trained-supernet": "on a trained, frozen supernet"}
            instead = "does not train them (it would score the untrained parameters' argmax)"
            if trains is not None:
                instead = f"trains them {hows[trains]} instead"
            fits = _names("estimator", lambda r: getattr(r.target, "trains_arch_parameters", None) == wanted)
            return f"{st} has architecture parameters to train {hows[wanted]}, and {es} {instead}; use estimator(s): {fits}"
        if wanted is None and es.attr("needs_arch_parameters", False):
            fits = _names("strategy", lambda r: getattr(r.target, "arch_parameters", None) == trains)
            return f"{es} trains a strategy's architecture parameters, and {st} has none; use strategy(ies): {fits}"
    return None


def check_combination(space: Any, strategy: Any = None, estimator: Any = None) -> None:
    """Raise ConfigError with :func:`combination_problem`'s reason when the parts do not fit."""
    problem = combination_problem(space, strategy, estimator)
    if problem is not None:
        raise ConfigError(problem)


def parallel_problem(strategy: Any, estimator: Any, workers: int, executor: str = "local") -> str | None:
    """Why ``strategy`` and ``estimator`` cannot run ``workers`` trials at once (one line), or None.

    Parts are given as for :func:`combination_problem`. A strategy whose ``pending_policy`` is
    ``refuse`` cannot propose with trials in flight; an estimator with ``parallel_trials = False``
    holds shared state the runner updates between trials (a supernet).
    """
    if workers <= 1:
        return None
    where = f"executor {executor!r} with {workers} workers runs trials in parallel"
    st, es = _Part("strategy", strategy), _Part("estimator", estimator)
    if st.attr("pending_policy", "refuse") == "refuse":
        why = (
            "it trains architecture parameters from one trial to the next"
            if st.attr("arch_parameters", None) is not None
            else "it does not declare how it proposes with trials in flight (pending_policy)"
        )
        return f"{where}, and {st} cannot: {why}; run it with 1 worker (executor: sequential)"
    if not es.attr("parallel_trials", True):
        return (
            f"{where}, and {es} cannot: it trains shared state (a supernet) between trials in the runner; "
            "run it with 1 worker (executor: sequential)"
        )
    return None


def check_parallel(strategy: Any, estimator: Any, workers: int, executor: str = "local") -> None:
    """Raise ConfigError with :func:`parallel_problem`'s reason."""
    problem = parallel_problem(strategy, estimator, workers, executor)
    if problem is not None:
        raise ConfigError(problem)


def supernet_options(space: Any) -> frozenset[str]:
    """The keyword options ``space.supernet()`` takes, as its class declares them (a wrapper's are
    those of the space it holds)."""
    return type(_unwrapped(space)).supernet_options
