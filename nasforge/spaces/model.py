"""The ``model`` space: a user's own network, named in a config, made searchable by the converter.

::

    space:
      type: model
      factory: "mypkg.models:resnet"        # or "path/to/models.py:resnet"
      convert: {rule: conv3x3, candidates: [sep_conv_3x3, sep_conv_5x5, mbconv_e3_k5]}

``factory`` returns an ``nn.Module``; it is called with the data's ``in_channels``,
``num_classes`` and ``input_size`` where its signature takes them (so the classifier head fits
the data), plus ``options``. ``convert`` holds the arguments of :func:`nasforge.nn.convert.convert`
(``rule``, ``candidates`` or ``width``/``depth``, ``inherit``); without it the model must hold
mutables of its own (:mod:`nasforge.nn.mutables`).

Built, the space has run the model once (its output must be ``(batch, num_classes)`` of the
data) and traced one child with ``torch.fx`` as export will: either failing is a ConfigError
naming the numbers, or the module and line, before any trial runs.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt
from torch import nn

from nasforge.core.errors import ConfigError
from nasforge.core.registry import register
from nasforge.nn.convert import convert_model
from nasforge.nn.convert_checks import check_output_width, check_traceable
from nasforge.nn.model_space import ModelSpace
from nasforge.tasks.datasets import load_factory

__all__ = ["ConvertSettings", "UserModelSpace", "build_user_model"]


class ConvertSettings(BaseModel):
    """The ``convert`` section: the arguments of :func:`nasforge.nn.convert.convert`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: str | dict[str, Any] | None = Field(
        default=None, description="convKxK, a class name, {type, name, attribute: value}, or null for Slots"
    )
    candidates: list[str] = Field(default_factory=list, description="op names besides 'original'")
    width: list[Annotated[float, Field(gt=0, le=1)]] | None = Field(default=None, description="inner-width fractions")
    depth: bool = False
    inherit: bool = False


def build_user_model(factory: str, options: dict[str, Any], context: dict[str, Any]) -> nn.Module:
    """Import ``factory`` (module paths resolve from the working directory too) and call it with
    ``options`` plus the ``context`` values its signature accepts.

    Options the signature does not take are a ConfigError; errors raised inside the factory
    (its own bugs) pass through unchanged.
    """
    function = load_factory(factory)
    signature = inspect.signature(function)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    kwargs = {
        k: v for k, v in context.items() if v is not None and (takes_any or k in signature.parameters) and k not in options
    }
    try:
        signature.bind(**options, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"factory {factory!r} does not take the options {sorted(options)}: {exc}") from None
    model = function(**options, **kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"factory {factory!r} must return a torch.nn.Module, got {type(model).__name__}")
    return model


@register("space", "model", tags=("supernet", "elastic", "user-model"))
class UserModelSpace(ModelSpace):
    """A user's network as a search space: ``factory`` builds it, ``convert`` makes it searchable.

    Args:
        factory: ``"package.module:function"`` or ``"path/to/file.py:function"`` returning the model.
        convert: how to generate the choices (:class:`ConvertSettings`); None when the model
            already holds mutables.
        options: keyword arguments for the factory.
        in_channels, num_classes, input_size: filled in from the data; passed to the factory
            where it takes them, and used to read the shapes the converter must keep.
        seed: seeds torch while the factory and the converter make the model, so its weights
            (which ``inherit`` passes on to the children) are the same in every run; the
            caller's random state is left untouched.
    """

    #: Values for the required options that `nasforge gen-config` writes as a template.
    example_options: ClassVar[dict[str, Any]] = {"factory": "examples/usability_resnet.py:resnet", "convert": {"rule": "conv3x3", "candidates": ["sep_conv_3x3", "conv5x5"]}}

    #: Tiny settings for the conformance suite (nasforge.testing.suites).
    conformance_options: ClassVar[dict[str, Any]] = {"factory": "nasforge.testing.suites:tiny_model", "convert": {"rule": "conv3x3", "candidates": ["sep_conv_3x3", "conv5x5"]}}

    def __init__(
        self,
        factory: str,
        convert: ConvertSettings | None = None,
        options: dict[str, Any] | None = None,
        in_channels: PositiveInt | None = None,
        num_classes: PositiveInt | None = None,
        input_size: tuple[PositiveInt, PositiveInt] | None = None,
        seed: NonNegativeInt = 0,
    ) -> None:
        context = {"in_channels": in_channels, "num_classes": num_classes, "input_size": input_size}
        input_shape = (in_channels, *input_size) if in_channels is not None and input_size is not None else None
        inherit = False
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = build_user_model(factory, dict(options or {}), context)
            if convert is None and input_shape is not None and num_classes is not None:
                check_output_width(model, input_shape, num_classes)
            if convert is not None:
                settings = ConvertSettings.model_validate(convert)  # also a plain mapping, from Python
                inherit = settings.inherit
                model = convert_model(
                    model,
                    settings.rule,
                    settings.candidates,
                    width=settings.width,
                    depth=settings.depth,
                    input_shape=input_shape,
                    inherit=settings.inherit,
                    num_classes=num_classes,
                )
        try:
            super().__init__(model, inherit=inherit)
        except ValueError as exc:
            raise ConfigError(f"space 'model' ({factory}): {exc}; add a convert section to generate choices") from None
        check_traceable(model)  # export traces a child: fail now, naming the module, not after the search
