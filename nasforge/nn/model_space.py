"""A search space over one model holding mutables (:mod:`nasforge.nn.mutables`) and elastic
layers (:mod:`nasforge.nn.elastic`): NNI's ``ModelSpace``, as a
:class:`~nasforge.core.space.SearchSpace`.

It sits above both modules, which is why it has a file of its own: the supernet of a model with
elastic layers is an :class:`~nasforge.nn.elastic.ElasticSupernet`, and elastic layers build on
the mutables.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from torch import nn

from nasforge.core.arch import Arch, Choice
from nasforge.core.errors import ConfigError
from nasforge.core.space import SearchSpace
from nasforge.nn.elastic import ElasticSupernet, elastic_kinds
from nasforge.nn.mutables import (
    Mixable,
    MutableSupernet,
    collect_choices,
    frozen_copy,
    iter_mutables,
    notify_freeze,
    reset_parameters,
    unweighted_mutables,
    weighted_message,
)

__all__ = ["Mode", "ModelSpace"]


#: Execution modes a supernet may be asked for: one path at a time, or candidates mixed by weights.
Mode = Literal["single", "weighted"]


class ModelSpace(SearchSpace):
    """The search space of a model holding mutables.

    Args:
        model: the network; it also serves as the supernet (weights shared by slicing).
        constraints: predicates on an arch; an arch is valid when all hold, so sampling,
            mutation and enumeration (and thus every strategy) only propose archs meeting them.
        inherit: :meth:`build` keeps the model's weights outside its mutables (a pretrained
            stem and head) and re-initialises only what the mutables froze to (the chosen ops,
            which handlers such as ``InheritWeights`` then fill); False re-initialises all.
    """

    def __init__(
        self, model: nn.Module, constraints: Sequence[Callable[[Arch], bool]] = (), inherit: bool = False
    ) -> None:
        self.model = model
        self.constraints = tuple(constraints)
        self.inherit = inherit
        self._choices = collect_choices(model)
        if not self._choices:
            raise ValueError("ModelSpace: the model holds no mutable (LayerChoice, InputChoice, ValueChoice, Repeat)")

    def choices(self) -> Mapping[str, Choice]:
        return self._choices

    def is_valid(self, arch: Arch) -> bool:
        return all(constraint(arch) for constraint in self.constraints)

    def effective(self, arch: Arch) -> Arch:
        """``arch`` with the choices it leaves inactive (nested in a candidate not picked, in a
        block beyond the chosen depth) at their first candidate (:func:`nasforge.nn.active.effective_arch`)."""
        from nasforge.nn.active import effective_arch

        return effective_arch(self.model, self._choices, arch)

    def build(self, arch: Arch) -> nn.Module:
        """The frozen child with fresh weights (``reset_parameters`` under the global torch RNG,
        which estimators seed per trial); parameters outside resettable modules keep the model's,
        and with ``inherit`` every parameter outside the mutables' frozen modules does.
        Handlers then see ``on_freeze(..., fresh=True)`` (e.g. to inherit the original's weights)."""
        child, frozen = frozen_copy(self.model, self.validate(arch))
        if self.inherit:
            in_child = {id(module) for module in child.modules()}
            for _, mutable in iter_mutables(self.model):
                if id(frozen[id(mutable)]) in in_child:
                    reset_parameters(frozen[id(mutable)])  # type: ignore[arg-type]
        else:
            reset_parameters(child)
        notify_freeze(self.model, child, frozen, fresh=True)
        return child

    def supernet(self) -> MutableSupernet:
        """A copy of the model as a supernet (each call starts from the model's own weights); an
        :class:`~nasforge.nn.elastic.ElasticSupernet` when the model holds elastic layers,
        so that weighted mode (differentiable strategies, the architecture generator) mixes
        their kernels, widths and depths too."""
        network = copy.deepcopy(self.model)
        if any(isinstance(module, Mixable) for _, module in iter_mutables(network)):
            return ElasticSupernet(network)
        return MutableSupernet(network)

    def elastic_kinds(self) -> dict[str, str]:
        """Each elastic choice's dimension (``kernel``, ``depth``, ``width``), for progressive
        shrinking (the ``ofa`` estimator); ConfigError when the model holds no elastic layer."""
        kinds = elastic_kinds(self.model)
        if not kinds:
            raise ConfigError(
                "this model space holds no elastic layer (ElasticConv2d, ElasticBatchNorm2d, ElasticSequential, "
                "Repeat); make one with nasforge.nn.convert.convert(model, rule, width=[...], depth=True)"
            )
        return dict(kinds)

    def supports(self, mode: Mode) -> bool:
        """Whether the supernet runs in ``mode``: ``single`` always; ``weighted`` (differentiable
        methods) only when every mutable is a LayerChoice, an InputChoice or an elastic layer."""
        return mode == "single" or not unweighted_mutables(self.model)

    def require(self, mode: Mode, by: str) -> None:
        """Raise ConfigError naming ``by`` (e.g. ``"strategy 'darts'"``) unless ``mode`` is supported.

        Estimators and strategies call it up front, before any training, where the space has it:
        through :func:`nasforge.core.capabilities.require_mode` (spaces without modes run all).
        """
        if not self.supports(mode):
            raise ConfigError(weighted_message(by, unweighted_mutables(self.model)))
