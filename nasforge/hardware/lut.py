"""Cost lookup tables: an arch's FLOPs, parameters or latency as a sum of per-layer costs.

OSNASLib's formulation of search under a budget: ``cost(a) = constant + sum over layers of
cost(layer, candidate picked by a)``, and the search looks for the best arch with
``cost(a) <= C``. A :class:`CostTable` holds those per-layer costs for one space at one input
shape and answers :meth:`~CostTable.predict` (an arch's cost), :meth:`~CostTable.expected` (the
cost expected under per-choice probabilities, differentiable: the penalty of the architecture
generator) and :meth:`~CostTable.bounds`.

Decomposition. A space describes its layers by a method ``cost_layers(input_shape) ->
list[CostLayer]``: each :class:`CostLayer` names the choices whose values select its candidate
and maps each combination of values to the module that runs (None: nothing runs). Spaces without
the method are decomposed through their supernet: every :class:`MixedOp` module is a layer
selected by its own choice, with the input shape it sees in a forward pass (as
:func:`~nasforge.hardware.profile.profile_space` does). Blockwise spaces, NB201 and DARTS cells
decompose that way; a space whose choice modules nest (MnasNet's layer counts around its block
choices, OFA's depth) writes ``cost_layers`` itself, with layers selected by two choices
(block and depth) whose candidate is None where the depth drops the layer.

Costs: FLOPs and parameters come from :mod:`nasforge.nn.counters` applied to each
candidate at its input shape; the constant (stem, head, classifier) is the counter on one whole
child minus its layers, so for spaces whose work is all inside modules ``predict`` equals the
counters on the child exactly. Latency comes from a :class:`~nasforge.hardware.profile.LatencyTable`
(``nasforge profile``), its ``overhead_ms`` the constant.

Example:
    >>> table = build_cost_table(FBNetSpace(input_size=(32, 32)), "flops", (3, 32, 32))  # doctest: +SKIP
    >>> table.predict(arch) == count_flops(space.build(arch), (3, 32, 32))  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, PositiveFloat
from torch import Tensor, nn

from nasforge.core.arch import Value
from nasforge.core.atomic import atomic_write_bytes
from nasforge.core.capabilities import HasCostLayers, HasSupernet
from nasforge.core.errors import ConfigError
from nasforge.core.space import SearchSpace
from nasforge.hardware.profile import LatencyTable, choice_inputs, profile_space
from nasforge.nn.counters import count_flops, count_params
from nasforge.nn.mixed import MixedOp

__all__ = [
    "CostMetric",
    "CostBudget",
    "CostLayer",
    "CostTable",
    "cost_layers",
    "build_cost_table",
    "load_cost_table",
    "budget_table",
]

#: The metrics a table can hold, named as the estimators report them.
CostMetric = Literal["flops", "params", "latency_ms"]


class CostBudget(BaseModel):
    """A hard budget on one cost: archs with ``cost > max`` are never asked.

    Attributes:
        metric: ``flops``, ``params`` or ``latency_ms``.
        max: the largest allowed cost (FLOPs and parameters as counts, latency in ms).
        table: a table file: one saved by :meth:`CostTable.save`, or a latency table from
            ``nasforge profile``. Without one, FLOPs and parameter tables are built from the
            space at the data's input size; latency needs a file.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: CostMetric
    max: PositiveFloat
    table: Path | None = None


@dataclass(frozen=True)
class CostLayer:
    """One layer of an arch's decomposition.

    Attributes:
        name: a label for messages (e.g. the module path).
        choices: the choices whose values select this layer's candidate.
        candidates: one entry per combination of those values (in ``choices`` order): the module
            that runs, or None where the layer is absent (a dropped layer costs nothing).
        input_shape: the input of one sample (no batch dimension).
    """

    name: str
    choices: tuple[str, ...]
    candidates: Mapping[tuple[Value, ...], nn.Module | None]
    input_shape: tuple[int, ...]


def _key(values: Sequence[Value]) -> str:
    """A table key for one combination of choice values (``"k3_e6"``, ``"k5_e3|2"``)."""
    return "|".join(str(v) for v in values)


def _supernet_layers(space: SearchSpace, input_shape: Sequence[int]) -> list[CostLayer]:
    """Every MixedOp module of ``space.supernet()`` as a layer selected by its own choice."""
    if not isinstance(space, HasSupernet):
        raise ConfigError(
            f"{type(space).__name__} has neither cost_layers() nor supernet(), so its archs cannot be split into layers"
        )
    supernet = space.supernet()
    paths = {id(module): path for path, module in supernet.choice_modules()}
    layers = []
    for module, shape in choice_inputs(space, supernet, (1, *input_shape)):
        if not isinstance(module, MixedOp):
            continue
        ops = [module.path_op(i) for i in range(len(module.values))]
        if any(isinstance(m, MixedOp) for op in ops for m in op.modules()):
            raise ConfigError(
                f"{type(space).__name__}: choice {module.name!r} holds other choices; nested choices do not split "
                "into layers by themselves, so the space must describe its layers with a cost_layers() method"
            )
        candidates = {(value,): op for value, op in zip(module.values, ops, strict=True)}
        layers.append(CostLayer(paths[id(module)], (module.name,), candidates, tuple(shape[1:])))
    return layers


def cost_layers(space: SearchSpace, input_shape: Sequence[int]) -> list[CostLayer]:
    """The layers of ``space``'s archs at ``input_shape`` (one sample, no batch dimension):
    ``space.cost_layers(input_shape)`` where the space has it, else its supernet's choice modules."""
    if isinstance(space, HasCostLayers):
        return list(space.cost_layers(tuple(input_shape)))
    return _supernet_layers(space, input_shape)


@dataclass
class CostTable:
    """Per-layer costs of one metric for one space at one input shape; JSON round-trips.

    Attributes:
        metric: what the costs measure (``flops``, ``params``, ``latency_ms``).
        input_shape: one sample's input (no batch dimension).
        candidates: choice -> its candidates, in the space's order (the order of
            :meth:`expected`'s probability vectors).
        layers: ``{"name", "choices": [...], "costs": {key: cost}}`` per layer; a key is the
            layer's choice values joined by ``|``.
        constant: the cost outside the layers (stem, head, classifier; latency overhead).
    """

    metric: str
    input_shape: list[int]
    candidates: dict[str, list[Value]]
    layers: list[dict[str, Any]]
    constant: float = 0.0
    _grouped: dict[tuple[str, ...], Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    # -- costs ---------------------------------------------------------------------------------

    def predict(self, arch: Mapping[str, Value]) -> float:
        """The cost of ``arch``: the constant plus its candidate's cost in every layer."""
        total = self.constant
        for layer in self.layers:
            key = _key([arch[name] for name in layer["choices"]])
            try:
                total += layer["costs"][key]
            except KeyError:
                raise ConfigError(
                    f"the {self.metric} table has no cost for {key!r} in layer {layer['name']!r}"
                ) from None
        return float(total)

    def _groups(self) -> dict[tuple[str, ...], Tensor]:
        """Layers summed by the choices that select them, as dense tensors over the candidates."""
        if self._grouped is None:
            grouped: dict[tuple[str, ...], np.ndarray] = {}
            for layer in self.layers:
                names = tuple(layer["choices"])
                dense = np.zeros([len(self.candidates[name]) for name in names])
                for index in np.ndindex(*dense.shape):
                    key = _key([self.candidates[name][i] for name, i in zip(names, index, strict=True)])
                    if key not in layer["costs"]:
                        raise ConfigError(f"the {self.metric} table has no cost for {key!r} in layer {layer['name']!r}")
                    dense[index] = layer["costs"][key]
                grouped[names] = grouped[names] + dense if names in grouped else dense
            self._grouped = {names: torch.tensor(dense, dtype=torch.float64) for names, dense in grouped.items()}
        return self._grouped

    def expected(self, probs: Mapping[str, Tensor]) -> Tensor:
        """The cost expected when each choice independently takes its candidates with
        ``probs[choice]`` (a vector in :attr:`candidates` order); differentiable in ``probs``.
        One-hot vectors give :meth:`predict` of that arch."""
        total = torch.tensor(self.constant, dtype=torch.float64)
        for names, dense in self._groups().items():
            term = dense
            for name in reversed(names):  # contract the last choice's axis first
                term = torch.tensordot(term, probs[name].to(torch.float64), dims=([-1], [0]))
            total = total + term
        return total

    def bounds(self) -> tuple[float, float]:
        """The smallest and largest cost of any arch: exact when no two groups of layers share
        a choice (every blockwise and cell space), else a lower and an upper bound."""
        groups = self._groups().values()
        return (
            self.constant + sum(float(dense.min()) for dense in groups),
            self.constant + sum(float(dense.max()) for dense in groups),
        )

    def check(self, space: SearchSpace) -> None:
        """Raise ConfigError unless the table's choices and candidates are ``space``'s."""
        choices = space.choices()
        for name, values in self.candidates.items():
            if name not in choices or list(choices[name].candidates) != list(values):
                raise ConfigError(
                    f"the {self.metric} table does not fit this space: choice {name!r} "
                    f"{'is unknown' if name not in choices else 'has other candidates'} here"
                )

    # -- files ---------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the table as JSON (atomically)."""
        data = {key: value for key, value in self.__dict__.items() if not key.startswith("_")}
        atomic_write_bytes(path, json.dumps(data, indent=1).encode())

    @classmethod
    def load(cls, path: str | Path) -> CostTable:
        """Read a table written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"cost table {path} does not exist")
        try:
            return cls(**json.loads(path.read_text()))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path} is not a cost table: {exc}") from None

    @classmethod
    def from_latency(cls, table: LatencyTable, space: SearchSpace) -> CostTable:
        """A latency (ms) table from a :class:`LatencyTable`: its blocks per layer, its overhead
        as the constant."""
        choices = space.choices()
        layers = [
            {
                "name": f"{entry['choice']}#{i}",
                "choices": [entry["choice"]],
                "costs": {value: table.blocks[key] for value, key in entry["blocks"].items() if key in table.blocks},
            }
            for i, entry in enumerate(table.layers)
        ]
        used = dict.fromkeys(entry["choice"] for entry in table.layers)
        missing = [name for name in used if name not in choices]
        if missing:
            raise ConfigError(f"the latency table has choices this space lacks: {', '.join(missing)}")
        candidates = {name: list(choices[name].candidates) for name in used}
        return cls("latency_ms", list(table.input_shape[1:]), candidates, layers, table.overhead_ms)


_COUNTERS = {"flops": count_flops, "params": lambda module, _shape: count_params(module)}


def build_cost_table(space: SearchSpace, metric: CostMetric, input_shape: Sequence[int]) -> CostTable:
    """The ``metric`` table of ``space`` at ``input_shape`` (one sample, no batch dimension).

    FLOPs and parameters are counted per candidate (each distinct module once); latency is
    measured by :func:`~nasforge.hardware.profile.profile_space` on this machine's CPU. Torch's
    global random state is left as it was (building modules draws initial weights).
    """
    with torch.random.fork_rng(devices=[]):
        return _build_cost_table(space, metric, input_shape)


def _build_cost_table(space: SearchSpace, metric: CostMetric, input_shape: Sequence[int]) -> CostTable:
    if metric == "latency_ms":
        return CostTable.from_latency(profile_space(space, (1, *input_shape)), space)
    if metric not in _COUNTERS:
        raise ConfigError(f"unknown cost metric {metric!r}; allowed: flops, params, latency_ms")
    count = _COUNTERS[metric]
    measured: dict[tuple[int, tuple[int, ...]], float] = {}  # a module shared by layers is counted once

    def cost(module: nn.Module | None, shape: tuple[int, ...]) -> float:
        if module is None:
            return 0.0
        if (id(module), shape) not in measured:
            measured[(id(module), shape)] = float(count(module, shape))
        return measured[(id(module), shape)]

    layers = cost_layers(space, input_shape)
    table_layers = [
        {
            "name": layer.name,
            "choices": list(layer.choices),
            "costs": {_key(values): cost(module, layer.input_shape) for values, module in layer.candidates.items()},
        }
        for layer in layers
    ]
    choices = space.choices()
    used = dict.fromkeys(name for layer in layers for name in layer.choices)
    table = CostTable(metric, list(input_shape), {name: list(choices[name].candidates) for name in used}, table_layers)
    reference = space.sample(np.random.default_rng(0))
    table.constant = float(count(space.build(reference), tuple(input_shape))) - table.predict(reference)
    return table


def load_cost_table(path: str | Path, space: SearchSpace, metric: CostMetric) -> CostTable:
    """A table file for ``space``: a :class:`CostTable` JSON, or a latency table from ``nasforge profile``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"cost table {path} does not exist")
    try:
        is_latency_table = "blocks" in json.loads(path.read_text())
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError(f"cost table {path} is not JSON: {exc}") from None
    table = CostTable.from_latency(LatencyTable.load(path), space) if is_latency_table else CostTable.load(path)
    if table.metric != metric:
        raise ConfigError(f"{path} is a {table.metric} table, but the budget is on {metric}")
    table.check(space)
    return table


def budget_table(budget: CostBudget, space: SearchSpace, input_shape: Sequence[int]) -> CostTable:
    """The table a budget is checked against: its file, or one built from the space."""
    if budget.table is not None:
        return load_cost_table(budget.table, space, budget.metric)
    if budget.metric == "latency_ms":
        raise ConfigError(
            "a latency_ms budget needs a latency table: make one with `nasforge profile` and give it as budget.table"
        )
    return build_cost_table(space, budget.metric, input_shape)
