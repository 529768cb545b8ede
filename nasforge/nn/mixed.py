"""Weight sharing: modules that hold every candidate of a choice, and the supernet around them.

A supernet is an ordinary network in which each decision is a :class:`MixedOp` (one of
several ops) or an :class:`MixedInput` (a subset of incoming tensors). Several modules may share
one choice name (NB201's cells all follow the same cell arch): activating an arch sets every
module of that name. :meth:`Supernet.export` freezes a path by replacing each choice module with
its chosen candidate, so the exported child holds exactly the supernet's weights and gives exactly
its outputs on that path.

Two modes: *single path* (``activate(arch)``: only the chosen candidate runs, as SPOS, FairNAS,
ENAS need) and *weighted* (``set_weights({name: tensor})``: candidates are mixed by the given
weights, as differentiable methods need; zero weights skip their candidate, and a zero weight that
carries a gradient runs its candidate without an autograd graph).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from nasforge.core.arch import Arch, Value
from nasforge.core.errors import InvalidArchError

__all__ = ["MixedOp", "MixedInput", "Supernet"]


class MixedOp(nn.Module):
    """One op among candidates, labelled by the choice ``name`` it implements.

    Args:
        name: the choice name (several modules may share one).
        candidates: choice value -> module, in the choice's candidate order.
    """

    def __init__(self, name: str, candidates: Mapping[Value, nn.Module]) -> None:
        super().__init__()
        self.name = name
        self.values: list[Value] = list(candidates)
        self.ops = nn.ModuleList(candidates.values())
        self.active: int | None = None
        self.weights: Tensor | None = None
        self.paths: frozenset[int] | None = None  # weighted mode: candidates allowed to run (None: all)
        self.dropout: dict[int, float] = {}  # weighted mode, training: dropout on candidates' outputs
        self._chosen: nn.Module | None = None  # ops[active], kept to skip ModuleList indexing per call

    def activate(self, value: Value) -> None:
        """Run only the candidate ``value`` from now on (single-path mode)."""
        try:
            self.active = self.values.index(value)
        except ValueError:
            raise InvalidArchError(f"{value!r} is not a candidate of {self.name!r}; allowed: {self.values}") from None
        object.__setattr__(self, "_chosen", self.ops[self.active])  # a plain reference, not a submodule
        self.weights = None

    def set_weights(self, weights: Tensor) -> None:
        """Mix the candidates by ``weights`` (one per candidate) from now on."""
        if weights.shape != (len(self.ops),):
            raise ValueError(f"{self.name}: expected {len(self.ops)} weights, got shape {tuple(weights.shape)}")
        self.weights = weights
        self.paths = None
        self.active = None
        object.__setattr__(self, "_chosen", None)

    def set_dropout(self, rates: Mapping[Value, float]) -> None:
        """Weighted mode, training: dropout of rate ``rates[value]`` on those candidates' outputs
        (P-DARTS' dropout after skip connections); values not candidates here are ignored."""
        self.dropout = {self.values.index(v): float(p) for v, p in rates.items() if v in self.values and p > 0}

    def restrict(self, indices: Sequence[int]) -> None:
        """Weighted mode: run only the candidates at ``indices``, even where the others' weight
        carries a gradient: GDAS's sampled op, ProxylessNAS' two sampled paths. The weights of the
        others are added to the output as they are (GDAS: zero-valued, with a gradient), so every
        weight gets a gradient. Reset by the next :meth:`set_weights`."""
        if self.weights is None:
            raise RuntimeError(f"{self.name}: restrict() needs weights; call set_weights first")
        self.paths = frozenset(int(i) for i in indices)

    def chosen(self) -> nn.Module:
        """The active candidate module."""
        if self.active is None:
            raise RuntimeError(f"choice {self.name!r} has no active candidate; call Supernet.activate first")
        return self.ops[self.active]

    def path_op(self, index: int) -> nn.Module:
        """The module computing candidate ``index`` on this choice's input, as a single path
        runs and exports it (the candidate itself here; partial-channel choices wrap it)."""
        return self.ops[index]

    def forward(self, *inputs: Tensor) -> Tensor:
        if self._chosen is not None:
            return self._chosen(*inputs)
        if self.weights is None:
            return self.chosen()(*inputs)
        out: Tensor | None = None
        for i, (weight, op) in enumerate(zip(self.weights, self.ops, strict=True)):
            if self.paths is not None and i not in self.paths:
                if weight.requires_grad:
                    # GDAS' forward (search_cells.py ``forward_gdas`` of D-X-Y/AutoDL-Projects) adds
                    # the weights of the ops it does not run: zero-valued, so the output is the
                    # same, but every weight (and so every alpha) gets a gradient.
                    out = weight if out is None else out + weight
                continue
            zero = weight.item() == 0
            if weight.requires_grad or not zero:
                # A zero weight that carries a gradient (a closed binary gate) needs only the
                # candidate's output, for d loss / d weight: nothing flows back through it, so it
                # runs without a graph and keeps no activations (ProxylessNAS' one-path memory).
                with torch.set_grad_enabled(torch.is_grad_enabled() and not zero):
                    y = op(*inputs)
                if i in self.dropout:
                    y = nn.functional.dropout(y, self.dropout[i], self.training)
                term = weight * y
                out = term if out is None else out + term
        assert out is not None, f"{self.name}: every weight is zero"
        return out


class MixedInput(nn.Module):
    """Sums a chosen subset of incoming tensors (DARTS-style node inputs).

    The choice value is a tuple-free encoding: an ``int`` index picks one input. Nodes that take
    several inputs use one MixedInput per input slot.
    """

    def __init__(self, name: str, n_inputs: int) -> None:
        super().__init__()
        self.name = name
        self.n_inputs = n_inputs
        self.active: int | None = None
        self.weights: Tensor | None = None

    def activate(self, value: Value) -> None:
        """Pick input ``value`` (an index)."""
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < self.n_inputs:
            raise InvalidArchError(f"{value!r} is not a valid input of {self.name!r}; allowed: 0..{self.n_inputs - 1}")
        self.active = value
        self.weights = None

    def set_weights(self, weights: Tensor) -> None:
        """Mix the inputs by ``weights``."""
        if weights.shape != (self.n_inputs,):
            raise ValueError(f"{self.name}: expected {self.n_inputs} weights, got shape {tuple(weights.shape)}")
        self.weights = weights
        self.active = None

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        if self.weights is None:
            if self.active is None:
                raise RuntimeError(f"choice {self.name!r} has no active input; call Supernet.activate first")
            return inputs[self.active]
        return sum(w * x for w, x in zip(self.weights, inputs, strict=False))  # type: ignore[return-value]


class _Frozen(nn.Module):
    """What an MixedInput becomes on export: a fixed pick of its inputs."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        return inputs[self.index]


class Supernet(nn.Module):
    """Wraps a network holding :class:`MixedOp`/:class:`MixedInput` modules.

    The choice modules are collected once, here, so build the network completely before
    wrapping it; :meth:`activate` then costs one call per choice module, whatever the size of
    the network (it runs before every training step).

    Args:
        network: the weight-sharing network.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self._choices: list[tuple[str, MixedOp | MixedInput]] = list(_choice_modules(network))

    def choice_modules(self) -> Iterator[tuple[str, MixedOp | MixedInput]]:
        """Every choice module with its qualified module name."""
        return iter(self._choices)

    def choice_names(self) -> list[str]:
        """The distinct choice names, in first-appearance order."""
        return list(dict.fromkeys(module.name for _, module in self._choices))

    def activate(self, arch: Arch) -> None:
        """Single-path mode: every choice module runs the candidate ``arch`` picks."""
        for _, module in self._choices:
            if module.name not in arch:
                raise InvalidArchError(f"arch has no value for choice {module.name!r}")
            module.activate(arch[module.name])

    def set_weights(self, weights: Mapping[str, Tensor]) -> None:
        """Weighted mode: mix candidates by ``weights[choice name]``."""
        for _, module in self._choices:
            module.set_weights(weights[module.name])

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)

    def export(self, arch: Arch) -> nn.Module:
        """A standalone copy of the network on ``arch``'s path, with the supernet's weights.

        Each choice module is replaced by a copy of its chosen candidate (an MixedInput by a
        fixed pick); the candidates off the path are never copied. The child shares no tensor
        with the supernet, and its parameter names are those of the network with the choice
        modules removed, e.g. ``cells.0.edges.3.conv.weight``.
        """
        self.activate(arch)
        memo: dict[int, object] = {}
        for _, module in self._choices:
            if id(module) not in memo:
                active = int(module.active)  # type: ignore[arg-type]
                frozen = module.path_op(active) if isinstance(module, MixedOp) else _Frozen(active)
                memo[id(module)] = copy.deepcopy(frozen, memo)
        return copy.deepcopy(self.network, memo)


def _choice_modules(network: nn.Module) -> Iterator[tuple[str, MixedOp | MixedInput]]:
    for path, module in network.named_modules():
        if isinstance(module, (MixedOp, MixedInput)):
            yield path, module
