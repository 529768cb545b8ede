"""Mutables: write a search space as one plain PyTorch model with its decisions inline.

Modelled on NNI's mutables (our own code): a user network holds

- :class:`LayerChoice` (one op among candidates),
- :class:`InputChoice` (one tensor among several inputs),
- :class:`ValueChoice` values passed to the layers here (:class:`Conv2d` kernel size and widths,
  :class:`Linear` widths, :class:`BatchNorm2d` width), which allocate the largest size and run a
  slice of it (OFA-style weight sharing: a width-16 pick uses the first 16 filters, a 3x3 kernel
  the centre of the 7x7 one),
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal, Protocol, runtime_checkable

from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import skip_init

from nasforge.core.arch import Arch, Choice, Value
from nasforge.core.errors import ConfigError
from nasforge.nn import mixed

__all__ = [
    "Mutable",
    "ValueLayer",
    "Mixable",
    "Handler",
    "ValueChoice",
    "LayerChoice",
    "InputChoice",
    "Conv2d",
    "Linear",
    "BatchNorm2d",
    "Repeat",
    "MutableSupernet",
    "activate",
    "collect_choices",
    "filled",
    "freeze",
    "reset_parameters",
    "iter_mutables",
    "frozen_copy",
    "notify_freeze",
    "unweighted_mutables",
    "weighted_message",
]


class ValueChoice:
    """A value (kernel size, width, depth) picked among ``candidates``; ``current`` is the pick.

    Pass the same object (or another with the same label and candidates) to several layers to
    tie them to one decision, e.g. a conv's output width and the batch norm after it.
    """

    def __init__(self, candidates: Sequence[int], label: str) -> None:
        values = tuple(candidates)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            raise ValueError(f"ValueChoice {label!r}: candidates must be positive ints, got {values}")
        self.choice = Choice(label, values, ordered=True)
        self.current: int = max(values)

    @property
    def label(self) -> str:
        return self.choice.name

    @property
    def largest(self) -> int:
        return max(self.choice.candidates)  # type: ignore[type-var,return-value]

    def __repr__(self) -> str:
        return f"ValueChoice({list(self.choice.candidates)}, label={self.label!r})"


def _largest(value: int | ValueChoice) -> int:
    return value.largest if isinstance(value, ValueChoice) else value


def _now(value: int | ValueChoice) -> int:
    return value.current if isinstance(value, ValueChoice) else value


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
            value.current = int(arch[value.label])  # type: ignore[arg-type]


def _only_choices(*values: object) -> list[ValueChoice]:
    return [v for v in values if isinstance(v, ValueChoice)]


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
    """One of ``n_candidates`` input tensors (called with their list); values are indices."""

    def __init__(self, n_candidates: int, label: str) -> None:
        super().__init__(label, n_candidates)
        self.activate(0)

    def mutable_choices(self) -> list[Choice]:
        return [Choice(self.name, tuple(range(self.n_inputs)))]

    def set_arch(self, arch: Mapping[str, Value]) -> None:
        self.activate(arch[self.name])

    def frozen(self, memo: dict[int, object]) -> nn.Module:
        return mixed._Frozen(int(self.active))  # type: ignore[arg-type]


class Conv2d(nn.Conv2d, ValueLayer):
    """``nn.Conv2d`` whose channels and (odd) kernel size may be ValueChoices (groups 1, dilation 1).

    ``padding="same"`` pads ``kernel // 2`` for whichever kernel is picked.
    """

    def __init__(
        self,
        in_channels: int | ValueChoice,
        out_channels: int | ValueChoice,
        kernel_size: int | ValueChoice,
        stride: int = 1,
        padding: int | Literal["same"] = 0,
        bias: bool = True,
    ) -> None:
        super().__init__(_largest(in_channels), _largest(out_channels), _largest(kernel_size), stride, 0, bias=bias)
        if isinstance(kernel_size, ValueChoice) and any(int(k) % 2 == 0 for k in kernel_size.choice.candidates):
            raise ValueError(f"Conv2d: kernel sizes of {kernel_size!r} must be odd to share one centred kernel")
        self.in_choice, self.out_choice, self.kernel_choice = in_channels, out_channels, kernel_size
        self.pad = padding

    def value_choices(self) -> list[ValueChoice]:
        return _only_choices(self.in_choice, self.out_choice, self.kernel_choice)

    def _sliced(self) -> tuple[Tensor, Tensor | None, int, int]:
        cin, cout, k = _now(self.in_choice), _now(self.out_choice), _now(self.kernel_choice)
        start = (self.kernel_size[0] - k) // 2
        weight = self.weight[:cout, :cin, start : start + k, start : start + k]
        bias = self.bias[:cout] if self.bias is not None else None
        return weight, bias, k, k // 2 if self.pad == "same" else int(self.pad)

    def forward(self, x: Tensor) -> Tensor:
        weight, bias, _, padding = self._sliced()
        return F.conv2d(x, weight, bias, self.stride, padding)

    def frozen(self, memo: dict[int, object]) -> nn.Module:
        weight, bias, k, padding = self._sliced()
        conv = skip_init(nn.Conv2d, weight.shape[1], weight.shape[0], k, self.stride, padding, bias=bias is not None)
        return filled(conv, {"weight": weight, "bias": bias}, self.training)


class Linear(nn.Linear, ValueLayer):
    """``nn.Linear`` whose widths may be ValueChoices (the leading slice of the largest)."""

    def __init__(self, in_features: int | ValueChoice, out_features: int | ValueChoice, bias: bool = True) -> None:
        super().__init__(_largest(in_features), _largest(out_features), bias=bias)
        self.in_choice, self.out_choice = in_features, out_features

    def value_choices(self) -> list[ValueChoice]:
        return _only_choices(self.in_choice, self.out_choice)

    def _sliced(self) -> tuple[Tensor, Tensor | None]:
        cin, cout = _now(self.in_choice), _now(self.out_choice)
        return self.weight[:cout, :cin], self.bias[:cout] if self.bias is not None else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, *self._sliced())

    def frozen(self, memo: dict[int, object]) -> nn.Module:
        weight, bias = self._sliced()
        linear = skip_init(nn.Linear, weight.shape[1], weight.shape[0], bias=bias is not None)
        return filled(linear, {"weight": weight, "bias": bias}, self.training)


class BatchNorm2d(nn.BatchNorm2d, ValueLayer):
    """``nn.BatchNorm2d`` whose width may be a ValueChoice: parameters and running statistics are
    the leading slice of the largest (updated in place, so the supernet keeps them)."""

    def __init__(self, num_features: int | ValueChoice, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__(_largest(num_features), eps, momentum)
        self.features_choice = num_features

    def value_choices(self) -> list[ValueChoice]:
        return _only_choices(self.features_choice)

    def channels(self) -> int:
        """The width in use (subclasses with other width objects override it)."""
        return _now(self.features_choice)

    def _slices(self) -> dict[str, Tensor]:
        c = self.channels()
        return {
            "weight": self.weight[:c],
            "bias": self.bias[:c],
            "running_mean": self.running_mean[:c],  # type: ignore[index]
            "running_var": self.running_var[:c],  # type: ignore[index]
            "num_batches_tracked": self.num_batches_tracked,  # type: ignore[dict-item]
        }

    def forward(self, x: Tensor) -> Tensor:
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training:
            self.num_batches_tracked.add_(1)  # type: ignore[union-attr,operator]
            if self.momentum is None:  # a cumulative average (batch-norm recalibration)
                factor = 1.0 / float(self.num_batches_tracked)  # type: ignore[arg-type]
        s = self._slices()
        return F.batch_norm(
            x, s["running_mean"], s["running_var"], s["weight"], s["bias"], self.training, factor, self.eps
        )

    def frozen(self, memo: dict[int, object]) -> nn.Module:
        bn = skip_init(nn.BatchNorm2d, self.channels(), self.eps, self.momentum)
        return filled(bn, self._slices(), self.training)


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
        block_factory: builds block ``i`` (blocks may hold choices of their own).
        depth: a ValueChoice of depths, or ``(min, max)`` for every depth between (needs ``label``).
        label: the choice name when ``depth`` is a range.
    """

    def __init__(
        self, block_factory: Callable[[int], nn.Module], depth: ValueChoice | tuple[int, int], label: str | None = None
    ) -> None:
        super().__init__()
        if not isinstance(depth, ValueChoice):
            if label is None:
                raise ValueError("Repeat: a (min, max) depth needs a label")
            low, high = depth
            depth = ValueChoice(list(range(low, high + 1)), label=label)
        self.depth = depth
        self.blocks = nn.ModuleList(block_factory(i) for i in range(depth.largest))

    def mutable_choices(self) -> list[Choice]:
        return [self.depth.choice]

    def set_arch(self, arch: Mapping[str, Value]) -> None:
        self.depth.current = int(arch[self.depth.label])  # type: ignore[arg-type]

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


def collect_choices(model: nn.Module) -> dict[str, Choice]:
    """The model's decisions by label, in first-appearance order; one label, one decision."""
    found: dict[str, Choice] = {}
    for path, module in iter_mutables(model):
        for choice in module.mutable_choices():
            seen = found.setdefault(choice.name, choice)
            if seen.candidates != choice.candidates:
                raise ValueError(
                    f"label {choice.name!r} is used with different candidates: {list(seen.candidates)} "
                    f"and {list(choice.candidates)} (at {path or 'the model'})"
                )
    return found


def activate(model: nn.Module, arch: Mapping[str, Value]) -> None:
    """Set every mutable of ``model`` to ``arch`` (nested ones too, active or not)."""
    for _, module in iter_mutables(model):
        module.set_arch(arch)


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
    return copy.deepcopy(model, memo), memo


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
        if not isinstance(module, (mixed.MixedOp, mixed.MixedInput, Mixable))
    ]


class MutableSupernet(mixed.Supernet):
    """A mutable model as a :class:`~nasforge.nn.mixed.Supernet`: ``activate`` sets every
    mutable, ``export`` is :func:`freeze`; ``set_weights`` works only for models whose every
    mutable is a LayerChoice, an InputChoice or :class:`Mixable` (mixed by
    :class:`~nasforge.nn.elastic.ElasticSupernet`)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__(network)
        self._unsupported = unweighted_mutables(network)

    def activate(self, arch: Arch) -> None:
        activate(self.network, arch)

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
