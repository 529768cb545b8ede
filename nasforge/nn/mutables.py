"""Mutables: write a search space as one plain PyTorch model with its decisions inline.

Modelled on NNI's mutables (our own code): a user network holds

- :class:`LayerChoice` (one op among candidates),
- :class:`InputChoice` (one tensor among several inputs, or ``n_chosen`` of them reduced),
- :class:`ValueChoice` values (:mod:`nasforge.nn.values`: ints and floats, and arithmetic on
  them) passed to the value layers of :mod:`nasforge.nn.mutable_layers` (``Conv2d`` kernel size,
  widths, groups and dilation, ``Linear`` widths, ``BatchNorm2d`` width, ``Dropout`` rate), which
  allocate the largest size and run a slice of it (OFA-style weight sharing: a width-16 pick uses
  the first 16 filters, a 3x3 kernel the centre of the 7x7 one), or held by any module as an
  attribute (its ``forward`` reads ``float(self.rate)``; freezing replaces it by its value),
- :class:`Repeat` (a block repeated a chosen number of times: the first ``depth`` copies run).

:class:`~nasforge.nn.model_space.ModelSpace` turns such a model into a :class:`~nasforge.core.space.SearchSpace`: every
decision is a :class:`~nasforge.core.arch.Choice` named by its ``label`` (modules with the same
label follow one decision), ``build(arch)`` is :func:`freeze` (a plain ``nn.Module`` without
mutables, re-initialised), and ``supernet()`` is the model itself as a weight-sharing
:class:`~nasforge.nn.mixed.Supernet`, whose ``export(arch)`` is :func:`freeze` with the
supernet's weights.

**Nested choices.** A candidate of a LayerChoice may hold choices of its own. Every choice is
always present in an arch, active or not; a nested choice only matters when its parent picks the
candidate holding it, so two archs differing only in an inactive choice build the same network.

**Defaults.** Before any arch is set, a model runs its first LayerChoice candidate, input 0, the
largest value of each ValueChoice and the largest depth of each Repeat, so it is usable as is.

**Handlers** (ModularNAS' parameter handlers, Lin et al., MLSys 2021): a :class:`Handler` attached
to a LayerChoice is told when an arch changes its value (``on_choice_changed``) and when it is
frozen into a child (``on_freeze``), and may transform the module then: inherit weights,
re-initialise. :mod:`nasforge.nn.convert` provides the built-in ones.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from nasforge.core.arch import Arch, Choice, Value
from nasforge.core.errors import ConfigError
from nasforge.nn import mixed
from nasforge.nn.values import ValueChoice, ValueExpr, largest, leaves, now

__all__ = [
    "Mutable",
    "ValueLayer",
    "Mixable",
    "Handler",
    "ValueChoice",
    "ValueExpr",
    "LayerChoice",
    "InputChoice",
    "Repeat",
    "MutableSupernet",
    "activate",
    "collect_choices",
    "filled",
    "freeze",
    "reset_parameters",
    "iter_mutables",
    "held_values",
    "ChosenInputs",
    "frozen_copy",
    "notify_freeze",
    "unweighted_mutables",
    "weighted_message",
]


def _largest(value: Any) -> Any:
    return largest(value)


def _now(value: Any) -> Any:
    return now(value)


class Mutable:
    """What every mutable module offers :class:`ModelSpace`: its choices, how an arch sets it,
    and the plain module it freezes to.

    Subclass it (with ``nn.Module``) for a mutable of your own and implement the three methods;
    :class:`ModelSpace`, :func:`activate` and :func:`freeze` find it by this base class
    (:mod:`nasforge.nn.elastic` is built this way)."""

    def mutable_choices(self) -> list[Choice]:
        raise NotImplementedError

    def set_arch(self, arch: Mapping[str, Value]) -> None:
        raise NotImplementedError

    def frozen(self, memo: dict[int, object]) -> nn.Module:
        """The plain module for the current setting; ``memo`` maps nested mutables to theirs."""
        raise NotImplementedError


@runtime_checkable
class Mixable(Protocol):
    """A mutable that mixes its candidates by weights in a supernet's weighted mode (the elastic
    layers of :mod:`nasforge.nn.elastic`), besides LayerChoice and InputChoice."""

    def mix(self, weights: Mapping[str, Tensor]) -> None:
        """Mix by ``weights[label]`` (one weight per candidate) until the next ``set_arch``."""


class ValueLayer(Mutable):
    """A layer whose sizes may be ValueChoices; it is set through the ValueChoice objects, so
    a subclass implements only :meth:`value_choices` and :meth:`Mutable.frozen`."""

    def value_choices(self) -> list[ValueChoice]:
        raise NotImplementedError

    def mutable_choices(self) -> list[Choice]:
        return [v.choice for v in self.value_choices()]

    def set_arch(self, arch: Mapping[str, Value]) -> None:
        for value in self.value_choices():
            if isinstance(value, ValueChoice):
                value.set(arch[value.label])
            else:  # a WidthChoice (nasforge.nn.elastic)
                value.current = int(arch[value.label])  # type: ignore[arg-type]


def _only_choices(*values: object) -> list[ValueChoice]:
    """The choices behind ``values`` (derived values give the choices they follow)."""
    return leaves(*values)


class Handler:
    """Reacts to a :class:`LayerChoice`'s events; subclass and override what you need.

    Handlers are shared, not copied, when a model is deep-copied (a supernet, a frozen child), so
    they should hold no per-model state.
    """

    def on_choice_changed(self, choice: LayerChoice, value: Value) -> None:
        """``choice`` now runs candidate ``value`` (a different one than before)."""

    def on_freeze(self, choice: LayerChoice, module: nn.Module, *, fresh: bool) -> None:
        """``module`` is what ``choice`` froze to, inside a child; change it in place.

        ``fresh`` is True for :meth:`ModelSpace.build` (the child was just re-initialised) and
        False for :func:`freeze` and supernet export (the child keeps the model's weights).
        """

    def __deepcopy__(self, memo: dict[int, object]) -> Handler:
        return self


class LayerChoice(mixed.MixedOp, Mutable):
    """One op among ``candidates`` (a list: values are indices 0..n-1; a dict: values are its keys).

    ``handlers`` are told of value changes and freezes (see :class:`Handler`).
    """

    def __init__(
        self,
        candidates: Sequence[nn.Module] | Mapping[str, nn.Module],
        label: str,
        handlers: Sequence[Handler] = (),
    ) -> None:
        named = dict(candidates) if isinstance(candidates, Mapping) else dict(enumerate(candidates))
        super().__init__(label, named)
        self.activate(self.values[0])
        self.handlers = list(handlers)

    def mutable_choices(self) -> list[Choice]:
        return [Choice(self.name, tuple(self.values))]

    def set_arch(self, arch: Mapping[str, Value]) -> None:
        before = self.active
        self.activate(arch[self.name])
        if self.active != before:
            for handler in self.handlers:
                handler.on_choice_changed(self, arch[self.name])

    def frozen(self, memo: dict[int, object]) -> nn.Module:
        return copy.deepcopy(self.path_op(int(self.active)), memo)  # type: ignore[arg-type]


class InputChoice(mixed.MixedInput, Mutable):
    """``n_chosen`` of ``n_candidates`` input tensors (called with their list), NNI's InputChoice.

    With ``n_chosen=1`` (the default) the values are indices and the module returns the picked
    tensor; with more, the values are the picked indices as a string (``"0,2"``) and the picks are
    reduced by ``reduction``: ``sum``, ``mean`` or ``concat`` (along channels).
    """

    def __init__(
        self, n_candidates: int, label: str, n_chosen: int = 1, reduction: Literal["sum", "mean", "concat"] = "sum"
    ) -> None:
        super().__init__(label, n_candidates)
        if not 1 <= n_chosen <= n_candidates:
            raise ValueError(f"InputChoice {label!r}: n_chosen must be in 1..{n_candidates}, got {n_chosen}")
        if reduction not in ("sum", "mean", "concat"):
            raise ValueError(f"InputChoice {label!r}: reduction must be sum, mean or concat, got {reduction!r}")
        self.n_chosen, self.reduction = n_chosen, reduction
        self.subsets = [",".join(map(str, c)) for c in itertools.combinations(range(n_candidates), n_chosen)]
        self.chosen: tuple[int, ...] = tuple(range(n_chosen))
        self.activate(0 if n_chosen == 1 else self.subsets[0])

    def activate(self, value: Value) -> None:
        if self.n_chosen == 1:
            super().activate(value)
            return
        if value not in self.subsets:
            raise mixed.InvalidArchError(f"{value!r} is not a valid pick of {self.name!r}; allowed: {self.subsets}")
        self.chosen = tuple(int(i) for i in str(value).split(","))
        self.active, self.weights = value, None  # type: ignore[assignment]

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        if self.n_chosen == 1:
            return super().forward(inputs)
        return _reduce([inputs[i] for i in self.chosen], self.reduction)

    def mutable_choices(self) -> list[Choice]:
        if self.n_chosen > 1:
            return [Choice(self.name, tuple(self.subsets))]
        return [Choice(self.name, tuple(range(self.n_inputs)))]

    def set_arch(self, arch: Mapping[str, Value]) -> None:
        self.activate(arch[self.name])

    def frozen(self, memo: dict[int, object]) -> nn.Module:
        if self.n_chosen > 1:
            return ChosenInputs(self.chosen, self.reduction)
        return mixed._Frozen(int(self.active))  # type: ignore[arg-type]


def _reduce(tensors: list[Tensor], reduction: str) -> Tensor:
    if reduction == "concat":
        return torch.cat(tensors, dim=1)
    total = tensors[0]
    for tensor in tensors[1:]:
        total = total + tensor
    return total / len(tensors) if reduction == "mean" else total


class ChosenInputs(nn.Module):
    """What an :class:`InputChoice` with ``n_chosen > 1`` freezes to: its picks, reduced."""

    def __init__(self, chosen: Sequence[int], reduction: str) -> None:
        super().__init__()
        self.chosen, self.reduction = tuple(chosen), reduction

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        return _reduce([inputs[i] for i in self.chosen], self.reduction)


def filled(module: nn.Module, tensors: Mapping[str, Tensor | None], training: bool) -> nn.Module:
    """``module`` (made by ``skip_init``: freezing never draws random numbers) holding copies of
    ``tensors`` (on their device and dtype), in the given mode: what a value layer's
    :meth:`~Mutable.frozen` returns."""
    device_of = next(t for t in tensors.values() if t is not None)
    module = module.to(device=device_of.device, dtype=device_of.dtype)
    state = {name: t.detach().clone() for name, t in tensors.items() if t is not None}
    module.load_state_dict(state)
    return module.train(training)


class Repeat(nn.Module, Mutable):
    """``block_factory(i)`` for the largest depth; the first ``depth`` blocks run, in sequence.

    Args:
        block_factory: builds block ``i`` from its index ``i`` (0, 1, ...; blocks may hold choices
            of their own); or a module (deep-copied per block) or a list of modules, as NNI's.
        depth: a ValueChoice of depths, or ``(min, max)`` for every depth between (needs ``label``).
        label: the choice name when ``depth`` is a range.
    """

    def __init__(
        self,
        block_factory: Callable[[int], nn.Module] | nn.Module | Sequence[nn.Module],
        depth: ValueChoice | tuple[int, int],
        label: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(depth, ValueChoice):
            if label is None:
                raise ValueError("Repeat: a (min, max) depth needs a label")
            low, high = depth
            depth = ValueChoice(list(range(low, high + 1)), label=label)
        self.depth = depth
        if isinstance(block_factory, nn.Module):
            template = block_factory
            blocks = [copy.deepcopy(template) for _ in range(int(depth.largest))]
        elif isinstance(block_factory, Sequence):
            blocks = list(block_factory)
            if len(blocks) < depth.largest:
                raise ValueError(f"Repeat {depth.label!r}: {len(blocks)} blocks given for depth up to {depth.largest}")
        else:
            blocks = [block_factory(i) for i in range(int(depth.largest))]
            empty = [name for name, p in blocks[0].named_parameters() if p.numel() == 0] if blocks else []
            if empty or not all(isinstance(b, nn.Module) for b in blocks):
                raise ValueError(
                    f"Repeat {depth.label!r}: block_factory(0) built {blocks[0]!r:.80}"
                    + (f" with empty parameters ({', '.join(empty)})" if empty else ", not an nn.Module")
                    + ". Repeat calls block_factory with the block's index i (0, 1, ...), not a width: "
                    "pass a function of the index, e.g. `lambda i: Block(channels)`, or a module to copy"
                )
        self.blocks = nn.ModuleList(blocks)

    def mutable_choices(self) -> list[Choice]:
        return [self.depth.choice]

    def set_arch(self, arch: Mapping[str, Value]) -> None:
        self.depth.set(arch[self.depth.label])

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks[: self.depth.current]:
            x = block(x)
        return x

    def frozen(self, memo: dict[int, object]) -> nn.Module:
        return nn.Sequential(*(copy.deepcopy(block, memo) for block in self.blocks[: self.depth.current]))


def iter_mutables(model: nn.Module) -> Iterator[tuple[str, Mutable]]:
    for path, module in model.named_modules():
        if isinstance(module, Mutable):
            yield path, module


def held_values(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, ValueExpr]]:
    """``(path, module, attribute, value)`` for every ValueChoice (or derived value) a plain
    module holds as an attribute (e.g. a float choice the user's ``forward`` reads with
    ``float(self.rate)``): decisions of the space too, replaced by their value on freezing."""
    for path, module in model.named_modules():
        if not isinstance(module, Mutable):
            for name, value in vars(module).items():
                if isinstance(value, ValueExpr):
                    yield path, module, name, value


def _all_choices(model: nn.Module) -> Iterator[tuple[str, Choice]]:
    for path, module in iter_mutables(model):
        for choice in module.mutable_choices():
            yield path, choice
    for path, _, name, value in held_values(model):
        for leaf in value.leaves():
            yield f"{path}.{name}" if path else name, leaf.choice


def collect_choices(model: nn.Module) -> dict[str, Choice]:
    """The model's decisions by label, in first-appearance order; one label, one decision."""
    found: dict[str, Choice] = {}
    for path, choice in _all_choices(model):
        seen = found.setdefault(choice.name, choice)
        if seen.candidates != choice.candidates:
            raise ValueError(
                f"label {choice.name!r} is used with different candidates: {list(seen.candidates)} "
                f"and {list(choice.candidates)} (at {path or 'the model'})"
            )
    return found


def activate(model: nn.Module, arch: Mapping[str, Value]) -> None:
    """Set every mutable of ``model`` to ``arch`` (nested ones too, active or not)."""
    _set_all([m for _, m in iter_mutables(model)], _held_leaves(model), arch)


def _held_leaves(model: nn.Module) -> list[ValueChoice]:
    return [leaf for *_, value in held_values(model) for leaf in value.leaves()]


def _set_all(mutables: list[Mutable], leaves: list[ValueChoice], arch: Mapping[str, Value]) -> None:
    for module in mutables:
        module.set_arch(arch)
    for leaf in leaves:
        leaf.set(arch[leaf.label])


def freeze(model: nn.Module, arch: Mapping[str, Value]) -> nn.Module:
    """A plain copy of ``model`` on ``arch``: each mutable replaced by what it runs, with its weights.

    LayerChoice -> the chosen op, InputChoice -> a fixed pick, value layers -> ``nn.Conv2d`` /
    ``nn.Linear`` / ``nn.BatchNorm2d`` with the sliced weights, Repeat -> ``nn.Sequential`` of the
    first ``depth`` blocks. The copy shares no tensor with ``model`` and holds no mutable.
    Handlers see ``on_freeze(..., fresh=False)``.
    """
    child, frozen = frozen_copy(model, arch)
    notify_freeze(model, child, frozen, fresh=False)
    return child


def frozen_copy(model: nn.Module, arch: Mapping[str, Value]) -> tuple[nn.Module, dict[int, object]]:
    """The frozen child, and what each mutable (by ``id``) froze to."""
    activate(model, arch)
    memo: dict[int, object] = {}
    for _, module in reversed(list(iter_mutables(model))):  # innermost first: parents copy their frozen children
        memo[id(module)] = module.frozen(memo)
    if isinstance(model, Mutable):
        return memo[id(model)], memo  # type: ignore[return-value]
    child = copy.deepcopy(model, memo)
    for _, module, name, value in held_values(child):
        setattr(module, name, now(value))
    return child, memo


def notify_freeze(model: nn.Module, child: nn.Module, frozen: Mapping[int, object], *, fresh: bool) -> None:
    """Tell the handlers of every LayerChoice whose frozen module made it into ``child``."""
    in_child = {id(module) for module in child.modules()}
    for _, module in iter_mutables(model):
        if isinstance(module, LayerChoice) and id(frozen[id(module)]) in in_child:
            for handler in module.handlers:
                handler.on_freeze(module, frozen[id(module)], fresh=fresh)  # type: ignore[arg-type]


def reset_parameters(module: nn.Module) -> None:
    """Re-initialise every submodule of ``module`` that has ``reset_parameters`` (global torch RNG)."""
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()


def unweighted_mutables(model: nn.Module) -> list[str]:
    """The mutables that cannot mix candidates by weights (all but LayerChoice, InputChoice and
    :class:`Mixable` ones)."""
    return [
        f"{type(module).__name__} at {path!r} ({', '.join(c.name for c in module.mutable_choices())})"
        for path, module in iter_mutables(model)
        if not isinstance(module, (mixed.MixedOp, mixed.MixedInput, Mixable)) or getattr(module, "n_chosen", 1) > 1
    ]


class MutableSupernet(mixed.Supernet):
    """A mutable model as a :class:`~nasforge.nn.mixed.Supernet`: ``activate`` sets every
    mutable, ``export`` is :func:`freeze`; ``set_weights`` works only for models whose every
    mutable is a LayerChoice, an InputChoice or :class:`Mixable` (mixed by
    :class:`~nasforge.nn.elastic.ElasticSupernet`)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__(network)
        self._unsupported = unweighted_mutables(network)
        # found once: activate runs for every path of every training step
        self._mutables = [m for _, m in iter_mutables(network)]
        self._held = _held_leaves(network)

    def activate(self, arch: Arch) -> None:
        _set_all(self._mutables, self._held, arch)

    def set_weights(self, weights: Mapping[str, Tensor]) -> None:
        if self._unsupported:
            raise ConfigError(weighted_message("set_weights (differentiable search)", self._unsupported))
        super().set_weights(weights)

    def export(self, arch: Arch) -> nn.Module:
        return freeze(self.network, arch)


def weighted_message(by: str, unsupported: list[str]) -> str:
    return (
        f"{by} mixes candidates by weights, which a ModelSpace supports only for LayerChoice, "
        f"InputChoice and the elastic layers (nasforge.nn.elastic); this model also has "
        f"{'; '.join(unsupported)}. Use a discrete strategy, "
        "or the one-shot 'supernet' estimator"
    )
