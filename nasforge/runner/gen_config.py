"""``nasforge gen-config``: a sample config for a space, derived from constructor signatures.

The chosen default of each part (or the strategy and estimator asked for) is written out with
all its options; every other registered component compatible with the space is listed below it
as a commented alternative, so the file doubles as a catalogue. A component declares which
spaces it fits with a tag ``space:NAME`` (none means it fits every space) and what it needs in
class attributes (:mod:`nasforge.core.capabilities`); only fitting alternatives are listed.

Options without a default (a wrapped space's ``inner``, a user's ``factory``) are written with
the component's ``example_options`` (a class attribute: values that validate, shown as examples
to replace) and named in a comment; one with no example is written as null under a
``# FILL IN`` comment naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from nasforge.core import registry
from nasforge.core.capabilities import check_combination, combination_problem
from nasforge.core.component import example_options
from nasforge.core.registry import Registration

__all__ = ["generate_config", "compatible", "FILL_IN"]

#: Starts the comment naming the options of a generated config the user must still set.
FILL_IN = "# FILL IN"

#: Options the runner fills from the data or other components; not for the user to set.
_INJECTED = ("in_channels", "num_classes", "input_size", "space")

_DEFAULTS = {"dataset": "digits", "strategy": "evolution", "estimator": "scratch", "objective": "single"}
_SECTIONS = [("data", "dataset"), ("strategy", "strategy"), ("estimator", "estimator"), ("objective", "objective")]


def compatible(reg: Registration, space: str) -> bool:
    """True unless the component is tagged for other spaces only (``space:NAME`` tags)."""
    wanted = {t.split(":", 1)[1] for t in reg.tags if t.startswith("space:")}
    return not wanted or space in wanted


def _fitting(kind: str, space: str, picked: dict[str, str | None]) -> list[Registration]:
    """The components of ``kind`` that fit ``space`` and the other part picked (strategy or
    estimator: :func:`~nasforge.core.capabilities.combination_problem` finds nothing wrong)."""
    found = [r for r in registry.registrations(kind) if compatible(r, space)]
    if kind == "strategy":
        return [r for r in found if combination_problem(space, r.name, picked.get("estimator")) is None]
    if kind == "estimator":
        return [r for r in found if combination_problem(space, picked.get("strategy"), r.name) is None]
    return found


def _pick(space: str, chosen: dict[str, str | None]) -> dict[str, str | None]:
    """The strategy and estimator to write: the asked ones (ConfigError naming why when they do not
    fit the space or each other), else the defaults where they fit, else the first that fits."""
    check_combination(space, chosen["strategy"], chosen["estimator"])
    picked = dict(chosen)
    for kind in ("strategy", "estimator"):
        if picked[kind] is None:
            fits = [r.name for r in _fitting(kind, space, picked)]
            picked[kind] = _DEFAULTS[kind] if _DEFAULTS[kind] in fits else (fits[0] if fits else None)
    return picked


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):  # an options piece, e.g. a strategy's `adam`
        return _plain(value.model_dump())
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@dataclass(frozen=True)
class _Section:
    """A component's options as gen-config writes them, and which of them the user must see to."""

    options: dict[str, Any]
    examples: list[str]  # options holding the component's example values
    missing: list[str]  # required options with no example (written as null)

    def note(self, section: str) -> str:
        """The comment naming the example values and the options to fill in ("" for none)."""
        lines = [f"# {section}: {', '.join(self.examples)} hold example values; set your own"] if self.examples else []
        if self.missing:
            lines.append(f"{FILL_IN} {section}: {', '.join(self.missing)} (required, no default)")
        return "\n".join(lines)


def _section(kind: str, name: str) -> _Section:
    options = registry.signature_defaults(kind, name, skip=_INJECTED)
    examples = {k: v for k, v in example_options(registry.get(kind, name).target).items() if k in options}
    options.update(examples)
    missing = [o for o in registry.required_options(kind, name, skip=_INJECTED) if o not in examples]
    return _Section({"type": name, **{k: _plain(v) for k, v in options.items()}}, list(examples), missing)


def _dump(key: str, value: Any) -> str:
    return yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False)


def _written(section: str, kind: str, name: str) -> list[str]:
    """The lines of a section: its note (if any), then the section itself."""
    part = _section(kind, name)
    note = part.note(section)
    return ([note] if note else []) + [_dump(section, part.options).rstrip()]


def _alternative(section: str, reg: Registration) -> str:
    """One commented alternative: the section in flow style, what to set, the summary."""
    part = _section(reg.kind, reg.name)
    flow = yaml.safe_dump({section: part.options}, sort_keys=False, default_flow_style=True, width=1000).strip()
    hints = ([f"example values: {', '.join(part.examples)}"] if part.examples else []) + (
        [f"set: {', '.join(part.missing)}"] if part.missing else []
    )
    return "#   " + flow + "".join(f"   # {text}" for text in [*hints, reg.summary] if text)


def generate_config(space: str, *, strategy: str | None = None, estimator: str | None = None) -> str:
    """YAML text of a sample config for ``space`` (an unknown name lists the known ones), with
    ``strategy`` and ``estimator`` (default: evolution and scratch, where they fit the space).

    It validates as written, unless a component has a required option without an example
    value: that option is null and named in a :data:`FILL_IN` comment.

    Alternatives listed are those that fit the space and the other part written (a
    differentiable strategy's alternatives to ``dnas`` are estimators that train architecture
    parameters, :mod:`nasforge.core.capabilities`).

    Raises:
        ConfigError: ``strategy`` or ``estimator`` does not fit the space or each other.
    """
    registry.get("space", space)
    chosen = {"strategy": strategy, "estimator": estimator}
    command = " ".join(["nasforge gen-config --space", space, *(f"--{k} {v}" for k, v in chosen.items() if v)])
    parts = [
        f"# nasforge config for the {space!r} space, generated by `{command}`.",
        "# Each section names a registered component (`type`) and its options, shown at their defaults.",
        "# Alternatives compatible with this space are listed, commented, under each section.",
        _dump("name", f"{space}-search").rstrip(),
        _dump("seed", 0).rstrip(),
        _dump("budget", {"trials": 20, "seconds": 600}).rstrip(),
        *_written("space", "space", space),
    ]
    picked = _pick(space, chosen)
    for section, kind in _SECTIONS:
        candidates = _fitting(kind, space, picked)
        if not candidates:
            continue
        default = picked.get(kind) or (_DEFAULTS[kind] if any(r.name == _DEFAULTS[kind] for r in candidates) else candidates[0].name)
        parts.extend(_written(section, kind, default))
        others = [r for r in candidates if r.name != default]
        if others:
            parts.append(f"# other {section} choices:")
            parts.extend(_alternative(section, reg) for reg in others)
    parts.append(_dump("train", {"epochs": 20}).rstrip() + "   # final training of the best arch; remove to skip")
    return "\n".join(parts) + "\n"
