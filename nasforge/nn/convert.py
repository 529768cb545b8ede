"""Search spaces generated from a user's own network (ModularNAS, Lin et al., MLSys 2021).

A user keeps their model in plain PyTorch and says *where* to search, not how:

- :func:`convert` takes the model and a **rule** (which modules: every ``nn.Conv2d`` with kernel 3,
  every module of class ``BasicBlock``, every module whose name matches ``layer2.*``) and replaces
  each match with a :class:`~nasforge.nn.mutables.LayerChoice` over **candidates** named in the op
  table (:data:`nasforge.nn.ops.OPS`: ``conv3x3``, ``sep_conv_5x5``, ``mbconv_e6_k5``,
  ``identity``, ...), each built with the shape of the module it replaces (channels in and out,
  stride); the module itself stays as candidate ``"original"`` with its weights, so the arch that
  picks ``"original"`` everywhere is the user's model, output for output.
- Or, with ``width``/``depth``, it turns the matched blocks into **elastic** ones, OFA-style
  (Cai et al., ICLR 2020): the inner channels of each block (a conv whose output reaches only
  other convs, through batch norm and activations) take a width among fractions of the original,
  and a ``nn.Sequential`` of matched blocks keeps its first ``d`` blocks for a chosen depth ``d``.
  The largest setting is the original network; smaller ones run slices of its weights (the
  elastic layers of :mod:`nasforge.nn.elastic`, so the ``ofa`` estimator's progressive
  shrinking trains such a space as well as the ``supernet`` estimator does).
- :class:`Slot` is a placeholder a user may put in a model directly; rule ``None`` matches slots.

The result is a :class:`~nasforge.nn.model_space.ModelSpace`: every discrete strategy searches it, the
``scratch`` and ``supernet`` estimators accept it, and differentiable methods accept the op-choice
form (an elastic space is refused up front by ``ModelSpace.require``, naming the elastic layers).

Handlers (:class:`~nasforge.nn.mutables.Handler`) react to a converted choice's events: built in are
:class:`InheritWeights` (a child built by ``space.build`` starts from the original module's
weights wherever a tensor fits, kernels cropped or padded at the centre) and
:class:`Reinitialise` (the chosen op restarts from fresh weights, even in a supernet's export).
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError
from nasforge.nn import mutables
from nasforge.nn.convert_checks import Shape, check_output_width, check_traceable, probe, replace, warn_growth
from nasforge.nn.convert_elastic import elastic_depth, elastic_width, nothing_elastic
from nasforge.nn.model_space import ModelSpace
from nasforge.nn.ops import OPS

__all__ = [
    "ORIGINAL",
    "Slot",
    "Rule",
    "match",
    "rule_from",
    "convert",
    "convert_model",
    "InheritWeights",
    "Reinitialise",
    "transfer_weights",
]

#: The candidate name under which a converted module keeps the user's own op.
ORIGINAL = "original"

#: ``(qualified name, module) -> bool``: which modules a conversion replaces.
Rule = Callable[[str, nn.Module], bool]


class Slot(nn.Module):
    """A placeholder for a searched op mapping ``in_channels`` to ``out_channels`` with ``stride``.

    With ``default`` (an op name of the op table) the slot runs that op until converted, and the
    op becomes candidate ``"original"``; without, the model runs only once converted.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, default: str | None = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.op = _make_op(default, in_channels, out_channels, stride, "Slot") if default is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.op is None:
            raise RuntimeError(
                f"{self!r} has no op until it is converted: nasforge.nn.convert.convert(model, candidates=[...])"
            )
        return self.op(x)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


# -- rules -------------------------------------------------------------------------------------


def _same(actual: Any, wanted: Any) -> bool:
    """``kernel_size=3`` matches ``(3, 3)``; lists match tuples."""
    if isinstance(actual, tuple) and isinstance(wanted, int):
        return all(a == wanted for a in actual)
    if isinstance(wanted, list):
        wanted = tuple(wanted)
    return bool(actual == wanted)


def _is_type(module: nn.Module, kind: type | str) -> bool:
    if isinstance(kind, str):
        return any(cls.__name__ == kind for cls in type(module).__mro__)
    return isinstance(module, kind)


def match(type: type | str | None = None, name: str | None = None, **attributes: Any) -> Rule:  # noqa: A002
    """The rule matching modules of class ``type`` (a class, or a class name), whose qualified
    name matches the glob ``name`` (``"layer2.*"``), and whose ``attributes`` are equal
    (``kernel_size=3`` also matches ``(3, 3)``). Conditions left out match anything."""

    def rule(path: str, module: nn.Module) -> bool:
        if type is not None and not _is_type(module, type):
            return False
        if name is not None and not fnmatch.fnmatchcase(path, name):
            return False
        return all(hasattr(module, key) and _same(getattr(module, key), value) for key, value in attributes.items())

    return rule


def rule_from(spec: Rule | Callable[[nn.Module], bool] | type | str | Mapping[str, Any] | None) -> Rule:
    """A rule from its short forms.

    ``None``: every :class:`Slot`. A class: its instances. A string: ``"convKxK"`` (every dense
    ``nn.Conv2d`` with kernel K: ``groups=1``, so depthwise convs are left alone), else a class name (``"BasicBlock"``). A mapping: the keywords of
    :func:`match` (``{type: Conv2d, kernel_size: 3, name: "layer*"}``). A callable of
    ``(name, module)`` or of ``module``: used as is.
    """
    if spec is None:
        return match(type=Slot)
    if isinstance(spec, type):
        return match(type=spec)
    if isinstance(spec, str):
        kernel = spec[4:].split("x") if spec.startswith("conv") else []
        if len(kernel) == 2 and kernel[0] == kernel[1] and kernel[0].isdigit():
            return match(type=nn.Conv2d, kernel_size=int(kernel[0]), groups=1)  # dense only
        return match(type=spec)
    if isinstance(spec, Mapping):
        return match(**spec)
    if callable(spec):
        if len(inspect.signature(spec).parameters) == 1:
            return lambda path, module: bool(spec(module))  # type: ignore[call-arg]
        return spec  # type: ignore[return-value]
    raise ConfigError(f"a conversion rule must be None, a class, a string, a mapping or a callable, got {spec!r}")


# -- handlers ----------------------------------------------------------------------------------


def transfer_weights(source: nn.Module, target: nn.Module) -> int:
    """Copy into ``target`` every tensor of ``source`` with the same name and shape; a conv kernel
    of another odd size is cropped or zero-padded at the centre. Returns the tensors copied."""
    available = source.state_dict()
    copied = 0
    with torch.no_grad():
        for key, tensor in target.state_dict().items():
            given = available.get(key)
            if given is None:
                continue
            if given.shape == tensor.shape:
                tensor.copy_(given)
            elif given.dim() == tensor.dim() == 4 and given.shape[:2] == tensor.shape[:2]:
                if (given.shape[2] - tensor.shape[2]) % 2 or (given.shape[3] - tensor.shape[3]) % 2:
                    continue
                tensor.zero_()
                h, w = min(given.shape[2], tensor.shape[2]), min(given.shape[3], tensor.shape[3])
                gy, gx = (given.shape[2] - h) // 2, (given.shape[3] - w) // 2
                ty, tx = (tensor.shape[2] - h) // 2, (tensor.shape[3] - w) // 2
                tensor[:, :, ty : ty + h, tx : tx + w] = given[:, :, gy : gy + h, gx : gx + w]
            else:
                continue
            copied += 1
    return copied


class InheritWeights(mutables.Handler):
    """A child built fresh (``space.build``) takes ``source``'s weights wherever they fit.

    ``source`` is the module the choice replaced, as it was; with candidate ``"original"`` picked
    the child's module equals it exactly, other candidates take the tensors that fit (see
    :func:`transfer_weights`). Exports from a supernet keep the supernet's weights.
    """

    def __init__(self, source: nn.Module) -> None:
        self.source = source

    def on_freeze(self, choice: mutables.LayerChoice, module: nn.Module, *, fresh: bool) -> None:
        if fresh:
            transfer_weights(self.source, module)


class Reinitialise(mutables.Handler):
    """The chosen op restarts from fresh weights in every child, supernet exports included (to
    retrain that op while the rest of the child keeps inherited weights)."""

    def on_freeze(self, choice: mutables.LayerChoice, module: nn.Module, *, fresh: bool) -> None:
        mutables.reset_parameters(module)


# -- conversion --------------------------------------------------------------------------------


def _make_op(name: str, c_in: int, c_out: int, stride: int, where: str) -> nn.Module:
    if name not in OPS:
        close = difflib.get_close_matches(name, list(OPS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where}: unknown candidate op {name!r}.{hint} Known ops: {', '.join(OPS)}")
    try:
        return OPS[name](c_in, c_out, stride)
    except ValueError as exc:
        raise ConfigError(f"{where}: candidate {name!r} ({c_in}->{c_out} channels, stride {stride}): {exc}") from None


def _keeps_size(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` keeps H x W (up to its stride) as the op candidates do: odd kernel, padding
    ``dilation * (kernel - 1) / 2`` (or ``'same'``). Only then do its channels and stride alone
    tell the shapes a replacement must keep."""
    if conv.padding == "same":
        return True
    padding = (0, 0) if conv.padding == "valid" else conv.padding
    return all(
        k % 2 == 1 and p == d * (k - 1) // 2
        for k, p, d in zip(conv.kernel_size, padding, conv.dilation, strict=True)
    )


def _io(path: str, module: nn.Module, probed: Mapping[str, tuple[Shape, Shape]]) -> tuple[int, int, int]:
    """``(in channels, out channels, stride)`` a replacement of ``module`` must keep."""
    if path in probed:
        shape_in, shape_out = probed[path]
        if len(shape_in) != 4 or len(shape_out) != 4:
            raise ConfigError(
                f"converting {path!r}: op candidates map images (N, C, H, W), but it maps {shape_in} to {shape_out}"
            )
        return shape_in[1], shape_out[1], max(1, round(shape_in[2] / shape_out[2]))
    if isinstance(module, Slot):
        return module.in_channels, module.out_channels, module.stride
    if isinstance(module, nn.Conv2d) and module.stride[0] == module.stride[1] and _keeps_size(module):
        return module.in_channels, module.out_channels, int(module.stride[0])
    raise ConfigError(
        f"cannot tell the shape of {path!r} ({type(module).__name__}); pass input_shape (C, H, W) so the "
        "converter runs the model once and reads it"
    )


def _op_choice(
    path: str,
    module: nn.Module,
    source: nn.Module | None,
    candidates: Sequence[str],
    probed: Mapping[str, tuple[Shape, Shape]],
    handlers: Sequence[mutables.Handler],
    inherit: bool,
) -> mutables.LayerChoice:
    """The LayerChoice replacing ``module``: ``"original"`` (when there is one), then ``candidates``."""
    c_in, c_out, stride = _io(path, module, probed)
    device = next(module.parameters(), torch.zeros(())).device
    options: dict[str, nn.Module] = {}
    original = module.op if isinstance(module, Slot) else module
    if original is not None:
        options[ORIGINAL] = original
    for name in candidates:
        if name != ORIGINAL:
            options[name] = _make_op(name, c_in, c_out, stride, f"converting {path!r}").to(device)
    if path in probed:
        in_shape, out_shape = probed[path]
        for name, op in options.items():
            was_training = op.training
            with torch.no_grad():
                got = tuple(op.eval()(torch.zeros(in_shape, device=device)).shape)
            op.train(was_training)
            if got != out_shape:
                raise ConfigError(
                    f"converting {path!r}: candidate {name!r} gives shape {got} where the module gives {out_shape}"
                )
    chosen_handlers = [*handlers, *([InheritWeights(source)] if inherit and source is not None else [])]
    return mutables.LayerChoice(options, label=path, handlers=chosen_handlers)


# -- entry points ------------------------------------------------------------------------------


def convert_model(
    model: nn.Module,
    rule: Rule | Callable[[nn.Module], bool] | type | str | Mapping[str, Any] | None = None,
    candidates: Sequence[str] = (),
    *,
    width: Sequence[float] | None = None,
    depth: bool = False,
    input_shape: Sequence[int] | None = None,
    inherit: bool = False,
    handlers: Sequence[mutables.Handler] = (),
    num_classes: int | None = None,
) -> nn.Module:
    """A copy of ``model`` with the modules ``rule`` matches made searchable (``model`` is untouched).

    Args:
        model: the user's network.
        rule: which modules (see :func:`rule_from`; None: every :class:`Slot`).
        candidates: op names (``OPS``) each match may become besides ``"original"``; or leave
            empty and give ``width``/``depth`` for elastic blocks.
        width: fractions of the original inner widths of each matched block (1.0 is always in).
        depth: make each ``nn.Sequential`` of matched blocks keep its first ``d`` blocks.
        input_shape: ``(C, H, W)`` of one input; needed when the shapes to keep cannot be read
            from the matched modules (anything but ``nn.Conv2d`` and :class:`Slot`) and for
            ``depth``; given, every candidate is checked to keep its module's output shape.
        inherit: attach :class:`InheritWeights` to every op choice (op candidates only).
        handlers: further handlers for every op choice (op candidates only).
        num_classes: with ``input_shape``, the model is run once and must give ``(batch,
            num_classes)`` (ConfigError naming both widths otherwise).

    A conversion whose largest child has over twice the model's parameters logs a warning.
    Modules inside mutables the model already holds are left as they are. Matches nested in
    other matches become nested choices (a block's ``"original"`` holds its converted convs).
    """
    if isinstance(candidates, str):  # one op name, e.g. a YAML scalar where a list was meant
        candidates = [candidates]
    if candidates and (width is not None or depth):
        raise ConfigError(
            "convert: give op candidates or elastic width/depth, not both; to combine them convert twice "
            "(convert_model, then convert) with a rule each"
        )
    if not candidates and width is None and not depth:
        raise ConfigError("convert: nothing to search; give candidates (op names) or width/depth")
    if not candidates and (inherit or handlers):
        raise ConfigError("convert: inherit and handlers act on op choices; elastic layers inherit by slicing already")
    if width is not None and not all(0 < f <= 1 for f in width):
        raise ConfigError(f"convert: width fractions must be in (0, 1], got {list(width)}")
    if num_classes is not None and input_shape is not None:
        check_output_width(model, input_shape, num_classes)
    pristine = model
    model = copy.deepcopy(model)
    rule_fn = rule_from(rule)
    inside_mutable = {id(sub) for _, m in mutables.iter_mutables(model) for sub in m.modules()}  # left as the user wrote them
    matches = [
        (path, module)
        for path, module in model.named_modules()
        if path and id(module) not in inside_mutable and rule_fn(path, module)
    ]
    if not matches:
        kinds = sorted({type(m).__name__ for m in model.modules()})
        raise ConfigError(f"convert: rule {rule!r} matches no module of the model; its module classes: {', '.join(kinds)}")
    if candidates:
        probed = probe(model, dict(matches), input_shape) if input_shape is not None else {}
        for path, module in sorted(matches, key=lambda item: -item[0].count(".")):  # innermost first: nesting
            source = pristine.get_submodule(path)
            source = copy.deepcopy(source.op if isinstance(source, Slot) else source) if inherit else None
            choice = _op_choice(path, module, source, candidates, probed, handlers, inherit)
            replace(model, path, choice)
        warn_growth(pristine, model)
        return model
    blockers: list[str] = []
    made = sum(elastic_width(path, block, width, blockers) for path, block in matches) if width is not None else 0
    if depth:
        made += elastic_depth(model, {id(block) for _, block in matches}, input_shape, blockers)
    if not made:
        raise nothing_elastic(rule, len(matches), blockers)
    return model


def convert(
    model: nn.Module,
    rule: Rule | Callable[[nn.Module], bool] | type | str | Mapping[str, Any] | None = None,
    candidates: Sequence[str] = (),
    *,
    width: Sequence[float] | None = None,
    depth: bool = False,
    input_shape: Sequence[int] | None = None,
    inherit: bool = False,
    handlers: Sequence[mutables.Handler] = (),
    constraints: Sequence[Callable[[Arch], bool]] = (),
    num_classes: int | None = None,
) -> ModelSpace:
    """The search space of ``model`` converted by :func:`convert_model` (same arguments), with
    ``constraints`` on its archs. ``model`` itself is left untouched.

    One child is traced with ``torch.fx`` now, as export will (ConfigError naming the module and
    line that cannot be traced); with ``inherit``, children built fresh keep every weight of the
    model outside the chosen ops (stem, head, unmatched layers), not only the matched modules'."""
    converted = convert_model(
        model,
        rule,
        candidates,
        width=width,
        depth=depth,
        input_shape=input_shape,
        inherit=inherit,
        handlers=handlers,
        num_classes=num_classes,
    )
    check_traceable(converted)
    return ModelSpace(converted, constraints=constraints, inherit=inherit)
