"""Which decisions of a model holding mutables matter for one arch: its *effective* arch.

A nested choice only matters when its parent picks the candidate holding it, and the choices in
a block of a :class:`~nasforge.nn.mutables.Repeat` (or an elastic depth) only when the chosen
depth runs that block (see :mod:`nasforge.nn.mutables`). :func:`effective_arch` sets every other
choice to its first candidate, so two archs building the same network get the same effective
arch: :meth:`nasforge.nn.model_space.ModelSpace.effective`, which deduplication and mutation
compare.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from nasforge.core.arch import Arch, Choice, Value
from nasforge.nn.elastic import ElasticSequential
from nasforge.nn.mutables import LayerChoice, Mutable, Repeat, held_values

__all__ = ["active_labels", "effective_arch"]


def _inactive_modules(model: nn.Module, arch: Mapping[str, Value]) -> set[int]:
    """Ids of every module inside a candidate not picked, or a block beyond the chosen depth."""
    inactive: set[int] = set()
    for module in model.modules():
        if id(module) in inactive:
            continue
        dropped: list[nn.Module] = []
        if isinstance(module, LayerChoice) and module.name in arch:
            picked = module.values.index(arch[module.name]) if arch[module.name] in module.values else None
            dropped = [op for i, op in enumerate(module.ops) if i != picked]
        elif isinstance(module, (Repeat, ElasticSequential)) and module.depth.label in arch:
            dropped = list(module.blocks[int(arch[module.depth.label]) :])  # type: ignore[arg-type]
        for root in dropped:
            inactive.update(id(m) for m in root.modules())
    return inactive


def active_labels(model: nn.Module, arch: Mapping[str, Value]) -> set[str]:
    """The choice labels ``arch`` can change the network through: those of a mutable (or a value
    a module holds) outside every candidate and block the arch leaves out. A label shared by an
    active and an inactive mutable is active."""
    inactive = _inactive_modules(model, arch)
    labels: set[str] = set()
    for module in model.modules():
        if id(module) not in inactive and isinstance(module, Mutable):
            labels.update(choice.name for choice in module.mutable_choices())
    for _, module, _, value in held_values(model):
        if id(module) not in inactive:
            labels.update(leaf.label for leaf in value.leaves())
    return labels


def effective_arch(model: nn.Module, choices: Mapping[str, Choice], arch: Arch) -> Arch:
    """``arch`` with every choice that cannot change the network set to its first candidate."""
    active = active_labels(model, arch)
    if all(name in active for name in arch):
        return arch
    return Arch({name: value if name in active or name not in choices else choices[name].candidates[0] for name, value in arch.items()})
