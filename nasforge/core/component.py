"""What every registered component class declares for the tools around it (gen-config, the
conformance suites), as typed class attributes rather than attributes probed by name.

Each kind's base class (``SearchSpace``, ``Strategy``, ``Estimator``, ``Objective``, ``Predictor``,
``Criterion``, ...) inherits :class:`Component`; a component registered as a plain function
(some criteria, the pipeline's step kinds) declares nothing and gets the defaults.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["Component", "ConformanceOptions", "example_options", "conformance_options"]

#: Tiny options for the conformance suites, or a function of a scratch folder (where it may write
#: the files they name) returning them.
ConformanceOptions = Mapping[str, Any] | Callable[[Path], Mapping[str, Any]]


class Component:
    """Mixin of the component base classes: declarations that tools read."""

    #: Values for required options that ``nasforge gen-config`` writes as a template to replace.
    example_options: ClassVar[Mapping[str, Any]] = {}
    #: Tiny settings for the conformance suites (``nasforge.testing.suites``); None: the example options.
    conformance_options: ClassVar[ConformanceOptions | None] = None


def _declaring(target: object) -> type[Component] | None:
    return target if inspect.isclass(target) and issubclass(target, Component) else None


def example_options(target: object) -> Mapping[str, Any]:
    """``target``'s declared example options (none for a component that is a function)."""
    cls = _declaring(target)
    return cls.example_options if cls is not None else {}


def conformance_options(target: object, scratch: Path) -> dict[str, Any]:
    """The options the conformance suites build ``target`` with: its ``conformance_options``
    (called with ``scratch`` when a function), else its example options."""
    cls = _declaring(target)
    declared = cls.conformance_options if cls is not None else None
    if declared is None:
        return dict(example_options(target))
    return dict(declared(scratch) if callable(declared) else declared)
