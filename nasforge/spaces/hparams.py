"""Training hyperparameters as choices of a space, so every strategy tunes them unchanged.

A hyperparameter is an ordinary :class:`~nasforge.core.arch.Choice` named ``hp.NAME``, where
``NAME`` is a field of :class:`~nasforge.tasks.training.TrainSettings` (``lr``, ``batch_size``,
``weight_decay``, ``epochs``, ``augment``, ...). Strategies see one flat arch of architecture
and hyperparameter choices alike; ``space.build`` ignores the ``hp.`` choices; the ``scratch``
estimator reads them into its training settings (:func:`apply_hparams`). Three spaces:

- ``with_hparams``: another space's choices plus hyperparameters::

      space:
        type: with_hparams
        inner: {type: nb201, C: 8, N: 1}
        hparams: {lr: [0.01, 0.05, 0.1], batch_size: [32, 64], augment: [none, crop_flip]}

  With ``arch:`` (the inner space's notation) the architecture is pinned and only the
  hyperparameters are searched: tuning one network found earlier.
- ``hpo``: hyperparameters alone, for a fixed network a user's factory makes
  (``model: "my_models.py:make_net"``).
- ``params``: named values defined wholly by the config, with no network at all, for
  estimators that build none (the ``command`` estimator, tuning an external program).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar

import pydantic
from pydantic import PositiveInt
from torch import nn

from nasforge.core import registry
from nasforge.core.arch import Arch, Choice, Value
from nasforge.core.errors import ConfigError, InvalidArchError
from nasforge.core.registry import register
from nasforge.core.space import SearchSpace
from nasforge.tasks.datasets import load_factory
from nasforge.tasks.training import TrainSettings

__all__ = ["HP_PREFIX", "WithHparams", "HparamsOnly", "ParamsSpace", "hparams_of", "architecture_of", "apply_hparams"]

#: Prefix of every hyperparameter choice's name.
HP_PREFIX = "hp."

#: The key of :meth:`WithHparams.format`'s JSON that holds the inner space's notation.
_ARCH_KEY = "arch"


def hparams_of(arch: Arch) -> dict[str, Value]:
    """The hyperparameters an arch carries, without the ``hp.`` prefix (empty if none)."""
    return {name[len(HP_PREFIX) :]: value for name, value in arch.items() if name.startswith(HP_PREFIX)}


def architecture_of(arch: Arch) -> Arch:
    """``arch`` without its hyperparameter choices."""
    return Arch({name: value for name, value in arch.items() if not name.startswith(HP_PREFIX)})


def apply_hparams(settings: TrainSettings, hparams: Mapping[str, Any]) -> TrainSettings:
    """``settings`` with ``hparams`` (e.g. :func:`hparams_of` an arch) put in, validated together.

    Raises:
        ValueError: the combination is inconsistent (e.g. ``warmup_epochs`` not below ``epochs``).
    """
    if not hparams:
        return settings
    try:
        return TrainSettings.model_validate({**settings.model_dump(), **hparams})
    except pydantic.ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"hyperparameters {dict(hparams)} do not fit the training settings: {details}") from None


def _choice(name: str, values: Any, where: str) -> Choice:
    """A choice from a config's list of values; numeric lists are ordered."""
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(f"{where}: {name!r} needs a non-empty list of values, got {values!r}")
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    try:
        return Choice(name, tuple(values), ordered=numeric)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _hparam_choices(hparams: Mapping[str, Any], where: str) -> dict[str, Choice]:
    """``hp.NAME`` choices, each value checked against ``TrainSettings.NAME``'s type and range."""
    if not hparams:
        raise ConfigError(f"{where}: `hparams` is empty; name at least one of: {', '.join(TrainSettings.model_fields)}")
    choices = {}
    for name, values in hparams.items():
        field = TrainSettings.model_fields.get(name)
        if field is None:
            raise ConfigError(
                f"{where}: {name!r} is not a training hyperparameter; tunable: {', '.join(TrainSettings.model_fields)}"
            )
        checked = values
        if isinstance(values, (list, tuple)):
            adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(Annotated[field.annotation, field])
            try:
                checked = [adapter.validate_python(v) for v in values]
            except pydantic.ValidationError as exc:
                bad = exc.errors()[0]
                raise ConfigError(f"{where}: hparams.{name} value {bad.get('input')!r} is invalid: {bad['msg']}") from None
        choices[HP_PREFIX + name] = _choice(HP_PREFIX + name, checked, f"{where}: hparams")
    return choices


def _data_context(**values: Any) -> dict[str, Any]:
    """The data-derived values the runner offered (those not None), to pass on to inner parts."""
    return {key: value for key, value in values.items() if value is not None}


@register("space", "with_hparams")
class WithHparams(SearchSpace):
    """Another space's choices plus training hyperparameters ``hp.NAME`` (or, with ``arch``, those alone).

    Args:
        inner: the architecture space's config, ``{type: NAME, ...its options}``.
        hparams: ``{NAME: [candidates]}`` for fields of ``TrainSettings`` (``lr``,
            ``batch_size``, ``weight_decay``, ``epochs``, ``augment``, ...).
        arch: pin the inner architecture (in the inner space's notation); only the
            hyperparameters are then searched.
        in_channels, num_classes, input_size: offered by the runner from the data; passed on
            to ``inner``.

    Archs print as JSON with the inner space's notation under ``"arch"``, e.g.
    ``{"arch": "|nor_conv_3x3~0|+...|", "hp.lr": 0.05}`` (just the ``hp.`` values when pinned).
    """

    #: Values for the required options that `nasforge gen-config` writes as a template.
    example_options: ClassVar[dict[str, Any]] = {"inner": {"type": "nb201", "C": 8, "N": 1}, "hparams": {"lr": [0.02, 0.05, 0.1]}}

    #: Tiny settings for the conformance suite (nasforge.testing.suites).
    conformance_options: ClassVar[dict[str, Any]] = {"inner": {"type": "nb201", "C": 4, "N": 1}, "hparams": {"lr": [0.01, 0.1]}}

    def __init__(
        self,
        inner: dict[str, Any],
        hparams: dict[str, Any],
        arch: str | None = None,
        in_channels: PositiveInt | None = None,
        num_classes: PositiveInt | None = None,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        context = _data_context(in_channels=in_channels, num_classes=num_classes, input_size=input_size)
        self.inner: SearchSpace = registry.create_inner("space", inner, context=context, where="with_hparams.inner")
        clash = [c for c in self.inner.choices() if c.startswith(HP_PREFIX)]
        if clash:
            raise ConfigError(f"with_hparams: the inner space's choice {clash[0]!r} uses the reserved prefix {HP_PREFIX!r}")
        self.fixed: Arch | None = None if arch is None else self.inner.parse(arch)
        self.hparam_choices = _hparam_choices(hparams, "with_hparams")
        arch_choices = {} if self.fixed is not None else dict(self.inner.choices())
        self._choices = {**arch_choices, **self.hparam_choices}

    def choices(self) -> Mapping[str, Choice]:
        return self._choices

    def inner_arch(self, arch: Arch) -> Arch:
        """The inner space's arch of ``arch`` (the pinned one, if any)."""
        return self.fixed if self.fixed is not None else architecture_of(arch)

    def is_valid(self, arch: Arch) -> bool:
        return self.fixed is not None or self.inner.is_valid(architecture_of(arch))

    def effective(self, arch: Arch) -> Arch:
        """The inner space's effective arch, with the hyperparameters (which always matter)."""
        if self.fixed is not None:
            return arch
        inner = self.inner.effective(architecture_of(arch))
        return Arch({name: inner.get(name, value) for name, value in arch.items()})

    def build(self, arch: Arch) -> nn.Module:
        """The inner space's network; hyperparameters do not change it."""
        self.validate(arch)
        return self.inner.build(self.inner_arch(arch))

    def format(self, arch: Arch) -> str:
        hparams = {name: arch[name] for name in self.hparam_choices}
        if self.fixed is not None:
            return json.dumps(hparams, separators=(", ", ": "))
        return json.dumps({_ARCH_KEY: self.inner.format(architecture_of(arch)), **hparams}, separators=(", ", ": "))

    def parse(self, text: str) -> Arch:
        """The form :meth:`format` prints, or the plain JSON of every choice."""
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError:
            loaded = None
        if isinstance(loaded, dict) and isinstance(loaded.get(_ARCH_KEY), str) and _ARCH_KEY not in self._choices:
            inner = self.inner.parse(loaded.pop(_ARCH_KEY))
            if self.fixed is not None and inner != self.fixed:
                raise InvalidArchError(
                    f"arch {self.inner.format(inner)} is not the pinned {self.inner.format(self.fixed)}"
                )
            arch_part = {} if self.fixed is not None else inner.to_dict()
            try:
                return self.validate(Arch({**arch_part, **loaded}))
            except (TypeError, ValueError) as exc:
                raise InvalidArchError(f"cannot parse arch text {text!r}: {exc}") from None
        return super().parse(text)


@register("space", "hpo")
class HparamsOnly(SearchSpace):
    """Training hyperparameters alone, for one fixed network made by a user's factory.

    Args:
        model: ``"package.module:function"`` or ``"path/to/file.py:function"`` returning the
            ``nn.Module``; it is passed ``model_options`` and whichever of ``in_channels``,
            ``num_classes`` and ``input_size`` its signature names.
        hparams: ``{NAME: [candidates]}`` for fields of ``TrainSettings``.
        model_options: keyword arguments of the factory.
        in_channels, num_classes, input_size: offered by the runner from the data.
    """

    #: Values for the required options that `nasforge gen-config` writes as a template.
    example_options: ClassVar[dict[str, Any]] = {"model": "examples/usability_resnet.py:resnet", "hparams": {"lr": [0.02, 0.05, 0.1], "batch_size": [32, 64]}}

    #: Tiny settings for the conformance suite (nasforge.testing.suites).
    conformance_options: ClassVar[dict[str, Any]] = {"model": "nasforge.testing.suites:tiny_model", "hparams": {"lr": [0.01, 0.1]}}

    def __init__(
        self,
        model: str,
        hparams: dict[str, Any],
        model_options: dict[str, Any] | None = None,
        in_channels: PositiveInt | None = None,
        num_classes: PositiveInt | None = None,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        self.factory = load_factory(model)
        accepted = inspect.signature(self.factory).parameters
        context = _data_context(in_channels=in_channels, num_classes=num_classes, input_size=input_size)
        self.model_options = {**{k: v for k, v in context.items() if k in accepted}, **(model_options or {})}
        self._choices = _hparam_choices(hparams, "hpo")
        self.model = model

    def choices(self) -> Mapping[str, Choice]:
        return self._choices

    def build(self, arch: Arch) -> nn.Module:
        """A fresh network from the factory (the same for every arch)."""
        self.validate(arch)
        network = self.factory(**self.model_options)
        if not isinstance(network, nn.Module):
            raise ConfigError(f"hpo: factory {self.model!r} returned a {type(network).__name__}, not an nn.Module")
        return network


@register("space", "params")
class ParamsSpace(SearchSpace):
    """Named values defined wholly by the config, with no network (for the ``command`` estimator).

    Args:
        choices: ``{NAME: [candidates]}``; candidates are strings, numbers or booleans.
            Numeric lists are treated as ordered.
    """

    #: Values for the required options that `nasforge gen-config` writes as a template.
    example_options: ClassVar[dict[str, Any]] = {"choices": {"lr": [0.01, 0.1], "width": [16, 32]}}

    #: It defines values, not a network: the conformance suite does not build it.
    builds_network: ClassVar[bool] = False

    def __init__(self, choices: dict[str, Sequence[Any]]) -> None:
        if not choices:
            raise ConfigError("params: `choices` is empty; give at least one NAME: [values]")
        self._choices = {name: _choice(name, values, "params.choices") for name, values in choices.items()}

    def choices(self) -> Mapping[str, Choice]:
        return self._choices

    def build(self, arch: Arch) -> nn.Module:
        raise ConfigError(
            "the params space defines values, not a network, so it cannot be built; "
            "use an estimator that builds nothing, such as `command`"
        )
