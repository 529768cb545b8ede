"""The search-space contract.

A space enumerates its choices, samples and validates archs, parses and prints them in its own
notation, and builds the child network of an arch as a plain ``nn.Module``.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Container, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nasforge.core.arch import Arch, Choice
from nasforge.core.component import Component
from nasforge.core.errors import ConfigError, InvalidArchError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["SearchSpace", "ConstrainedSpace"]

#: Spaces up to this size may be enumerated to find the archs a search has not seen yet.
ENUMERATE_LIMIT = 1_000_000

#: Draws rejection sampling makes before it gives up finding a valid arch.
_SAMPLE_TRIES = 10_000


class SearchSpace(Component, ABC):
    """Base class of every search space.

    Subclasses implement :meth:`choices` and :meth:`build`; they may override :meth:`parse` and
    :meth:`format` for a notation of their own, and :meth:`is_valid` for constraints between
    choices (sampling, enumeration and validation then respect them).

    What a space offers beyond that (a supernet, differentiable edges, elastic dimensions, cost
    layers, supernet modes) it offers by having the methods of a protocol of
    :mod:`nasforge.core.capabilities`; :func:`~nasforge.core.capabilities.declared` lists them.
    """

    #: True for a wrapper whose capabilities are those of the space it holds (``self.inner``).
    forwards_capabilities: ClassVar[bool] = False
    #: False for spaces of values with no network (``params``): ``build`` is not theirs to answer.
    builds_network: ClassVar[bool] = True
    #: The keyword options its ``supernet()`` takes (``partial_channels``, ``layers``, ``affine``).
    supernet_options: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def choices(self) -> Mapping[str, Choice]:
        """The decisions of this space, by name, in a fixed order."""

    @abstractmethod
    def build(self, arch: Arch) -> nn.Module:
        """The standalone child network of ``arch`` (validated first)."""

    def is_valid(self, arch: Arch) -> bool:
        """Extra constraints between choices; the default space has none."""
        return True

    def effective(self, arch: Arch) -> Arch:
        """The canonical form of ``arch``: every choice that cannot change the network (a nested
        choice inside a candidate its parent did not pick, a block beyond the chosen depth) set to
        a fixed value, so two archs building the same network have the same effective arch.
        Deduplication and :meth:`mutate` compare effective archs. Default: ``arch`` itself (every
        choice always matters)."""
        return arch

    def validate(self, arch: Arch) -> Arch:
        """Return ``arch`` if it fits this space, else raise naming the bad choice."""
        choices = self.choices()
        missing = [name for name in choices if name not in arch]
        if missing:
            raise InvalidArchError(f"arch is missing choice(s) {', '.join(map(repr, missing))}")
        extra = [name for name in arch if name not in choices]
        if extra:
            raise InvalidArchError(
                f"arch has unknown choice(s) {', '.join(map(repr, extra))}; "
                f"this space's choices: {', '.join(choices)}"
            )
        for name, choice in choices.items():
            choice.index(arch[name])
        if not self.is_valid(arch):
            raise InvalidArchError(f"arch {self.format(arch)} breaks a constraint of the space")
        return arch

    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly drawn valid arch (rejection sampling against :meth:`is_valid`)."""
        for _ in range(_SAMPLE_TRIES):
            arch = Arch({name: choice.sample(rng) for name, choice in self.choices().items()})
            if self.is_valid(arch):
                return arch
        raise RuntimeError(f"{type(self).__name__}: no valid arch found in {_SAMPLE_TRIES:,} samples")

    def sample_unseen(self, rng: np.random.Generator, seen: Container[Arch], tries: int = 100) -> Arch | None:
        """A uniformly drawn valid arch not in ``seen``; None once every arch has been seen.

        Rejection sampling first; after ``tries`` misses a space of at most a million archs is
        enumerated and an unseen arch drawn from the rest. A larger space that misses ``tries``
        times in a row gives None too (it is then practically exhausted for a search).
        """
        for _ in range(tries):
            arch = self.sample(rng)
            if arch not in seen:
                return arch
        if self.size() > ENUMERATE_LIMIT:
            return None
        unseen = [arch for arch in self.enumerate() if arch not in seen]
        return unseen[int(rng.integers(len(unseen)))] if unseen else None

    def neighbours(self, arch: Arch) -> list[Arch]:
        """Every valid arch that differs from ``arch`` in exactly one choice and builds another
        network (its :meth:`effective` arch differs), in a fixed order."""
        found = []
        effective = self.effective(arch)
        for name, choice in self.choices().items():
            for value in choice.candidates:
                if value != arch[name]:
                    candidate = arch.with_value(name, value)
                    if self.is_valid(candidate) and self.effective(candidate) != effective:
                        found.append(candidate)
        return found

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """A random valid neighbour: one choice changed to another of its candidates, so that the
        network changes (a choice that is inactive in ``arch`` alone is never the change).

        Returns ``arch`` itself only when it has no such neighbour.
        """
        choices = [c for c in self.choices().values() if len(c) > 1]
        effective = self.effective(arch)
        for _ in range(100):
            choice = choices[int(rng.integers(len(choices)))] if choices else None
            if choice is None:
                return arch
            others = [v for v in choice.candidates if v != arch[choice.name]]
            candidate = arch.with_value(choice.name, others[int(rng.integers(len(others)))])
            if self.is_valid(candidate) and self.effective(candidate) != effective:
                return candidate
        options = self.neighbours(arch)
        return options[int(rng.integers(len(options)))] if options else arch

    def size(self) -> int:
        """How many archs the unconstrained product of choices holds."""
        return math.prod(len(choice) for choice in self.choices().values())

    def enumerate(self) -> Iterator[Arch]:
        """Every valid arch, in a fixed (lexicographic) order."""
        choices = self.choices()
        for values in itertools.product(*(choice.candidates for choice in choices.values())):
            arch = Arch(zip(choices, values))
            if self.is_valid(arch):
                yield arch

    def parse(self, text: str) -> Arch:
        """Parse an arch written in this space's notation (default: the JSON form)."""
        return self.validate(Arch.parse(text))

    def format(self, arch: Arch) -> str:
        """This space's notation for ``arch`` (default: the JSON form)."""
        return str(arch)


class ConstrainedSpace(SearchSpace):
    """``inner`` with one more constraint: archs failing ``predicate`` are not in the space.

    Everything that samples, mutates, enumerates or validates through the space (strategies,
    supernet training rules, the runner's check of each asked arch) then sees only archs that
    pass, so none of them needs to know what the constraint is about (a latency bound, say).
    Attributes the wrapper does not define (``supernet``, ``named``, ...) are the inner space's,
    and so are its capabilities (``forwards_capabilities``).

    Args:
        inner: the space to constrain (not modified).
        predicate: True for the archs that stay in the space.
        description: what the constraint is, for error messages ("latency <= 12 ms").
    """

    forwards_capabilities: ClassVar[bool] = True

    def __init__(self, inner: SearchSpace, predicate: Callable[[Arch], bool], description: str = "a constraint") -> None:
        self.inner = inner
        self.predicate = predicate
        self.description = description

    def __getattr__(self, name: str) -> Any:
        if name == "inner" or name.startswith("__"):  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def choices(self) -> Mapping[str, Choice]:
        return self.inner.choices()

    def build(self, arch: Arch) -> nn.Module:
        return self.inner.build(self.validate(arch))

    def is_valid(self, arch: Arch) -> bool:
        return self.inner.is_valid(arch) and self.predicate(arch)

    def effective(self, arch: Arch) -> Arch:
        return self.inner.effective(arch)

    def sample(self, rng: np.random.Generator) -> Arch:
        """An arch drawn by the inner space's own sampler that passes the predicate (uniform over
        the archs that pass, when the inner sampler is uniform)."""
        for _ in range(_SAMPLE_TRIES):
            arch = self.inner.sample(rng)
            if self.predicate(arch):
                return arch
        raise ConfigError(
            f"no arch of {type(self.inner).__name__} drawn in {_SAMPLE_TRIES:,} samples meets {self.description}; "
            "loosen the constraint"
        )

    def size(self) -> int:
        """The inner space's size: an upper bound, as counting the archs that pass the predicate
        would mean enumerating them."""
        return self.inner.size()

    def validate(self, arch: Arch) -> Arch:
        self.inner.validate(arch)
        if not self.predicate(arch):
            raise InvalidArchError(f"arch {self.inner.format(arch)} breaks {self.description}")
        return arch

    def parse(self, text: str) -> Arch:
        return self.validate(self.inner.parse(text))

    def format(self, arch: Arch) -> str:
        return self.inner.format(arch)
