"""Checks the converter (and the ``model`` space) runs on a user's model when the space is built,
so that a model that cannot work fails then, naming the module and the numbers, instead of in
every trial or at export:

- :func:`check_traceable`: one child traced with ``torch.fx``, as ``export`` will (a block
  computing ``int(x.size(1) * ratio)`` in ``forward`` cannot be), naming the module and line;
- :func:`check_output_width`: one forward pass; the output width must be the data's classes;
- :func:`warn_growth`: a log warning when a conversion multiplies the parameter count;
- :func:`probe`: the input and output shapes of some modules on one forward pass.
"""

from __future__ import annotations

import copy
import linecache
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from nasforge.core.arch import Value
from nasforge.core.errors import ConfigError
from nasforge.nn import mutables

__all__ = ["Shape", "probe", "replace", "default_arch", "check_traceable", "check_output_width", "warn_growth"]

log = logging.getLogger("nasforge.nn.convert")

Shape = tuple[int, ...]

_TORCH = str(Path(torch.__file__).parent)


def probe(
    model: nn.Module, modules: Mapping[str, nn.Module], input_shape: Sequence[int]
) -> dict[str, tuple[Shape, Shape]]:
    """Input and output shapes of ``modules`` (by path) on one forward pass of two zero images."""
    shapes: dict[str, tuple[Shape, Shape]] = {}

    def recorder(path: str) -> Callable[..., None]:
        def record(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if (
                path not in shapes
                and inputs
                and isinstance(inputs[0], torch.Tensor)
                and isinstance(output, torch.Tensor)
            ):
                shapes[path] = (tuple(inputs[0].shape), tuple(output.shape))

        return record

    hooks = [module.register_forward_hook(recorder(path)) for path, module in modules.items()]
    try:
        _run(model, input_shape)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def _run(model: nn.Module, input_shape: Sequence[int]) -> Any:
    """The model's output on two zero images (eval mode, no grad; the mode is restored)."""
    was_training = model.training
    try:
        model.eval()
        parameter = next(model.parameters(), None)
        x = torch.zeros(2, *input_shape, device=None if parameter is None else parameter.device)
        with torch.no_grad():
            return model(x)
    except Exception as exc:
        raise ConfigError(
            f"the model does not run on inputs of shape {tuple(input_shape)}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        model.train(was_training)


def replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent), name, new)


def default_arch(model: nn.Module) -> dict[str, Value]:
    """Every choice at its largest (ordered ones: widths, kernels, depths) or first candidate."""
    return {
        name: max(c.candidates) if c.ordered else c.candidates[0]  # type: ignore[type-var]
        for name, c in mutables.collect_choices(model).items()
    }


def frozen_child(model: nn.Module, arch: Mapping[str, Value]) -> nn.Module:
    """The frozen child of a copy of ``model`` on ``arch``, telling no handler (a check's child)."""
    silent = copy.deepcopy(model)
    for _, module in mutables.iter_mutables(silent):
        if isinstance(module, mutables.LayerChoice):
            module.handlers = []
    return mutables.frozen_copy(silent, arch)[0]


def check_traceable(model: nn.Module) -> None:
    """Trace one child of ``model`` (:func:`default_arch`; the model itself when it holds no
    choice) with ``torch.fx``, as ``export`` does; ConfigError naming the module and the line."""
    arch = default_arch(model)
    child = frozen_child(model, arch) if arch else model
    try:
        fx.symbolic_trace(child)
    except Exception as exc:
        raise ConfigError(_trace_message(child, exc)) from None


def _trace_message(child: nn.Module, exc: BaseException) -> str:
    paths = {id(module): path for path, module in child.named_modules()}
    where, line = "", ""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        owner = frame.f_locals.get("self")
        if id(owner) in paths and not frame.f_code.co_filename.startswith(_TORCH):
            path = paths[id(owner)] or "the model itself"
            where = f" in module {path!r} ({type(owner).__name__})"
            code = linecache.getline(frame.f_code.co_filename, tb.tb_lineno).strip()
            line = f", {frame.f_code.co_filename}:{tb.tb_lineno}: `{code}`"
        tb = tb.tb_next
    return (
        f"the model cannot be traced with torch.fx{where}{line} ({type(exc).__name__}: {exc}). Exporting a "
        "child (nasforge export) traces it, so the search could not export its result: keep tensor values "
        "and shapes out of Python control flow and int()/float() (compute sizes such as "
        "int(channels * ratio) in __init__), or wrap the function with torch.fx.wrap"
    )


def check_output_width(model: nn.Module, input_shape: Sequence[int], num_classes: int) -> None:
    """Run ``model`` once (its default child); ConfigError unless it gives ``(batch, num_classes)``."""
    out = _run(model, input_shape)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != num_classes:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        width = out.shape[-1] if isinstance(out, torch.Tensor) and out.dim() else got
        raise ConfigError(
            f"the model's output is {got} for a batch of 2 on inputs {tuple(input_shape)}: {width} classes per "
            f"example, but the data has {num_classes} classes; make the classifier's output width {num_classes} "
            "(a factory taking num_classes gets the data's)"
        )


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def warn_growth(original: nn.Module, converted: nn.Module, factor: float = 2.0) -> None:
    """Log a warning when the largest child of ``converted`` (every op choice at its candidate
    with the most parameters) has over ``factor`` times the parameters of ``original``."""
    before = _params(original)
    arch = default_arch(converted)
    biggest: list[str] = []
    for path, module in mutables.iter_mutables(converted):
        if isinstance(module, mutables.LayerChoice):
            sizes = [_params(module.path_op(i)) for i in range(len(module.values))]
            arch[module.name] = module.values[sizes.index(max(sizes))]
            biggest.append(f"{path!r} -> {arch[module.name]!r} ({max(sizes)} params, was {sizes[0]})")
    if not before or not biggest:
        return
    after = _params(frozen_child(converted, arch))
    if after > factor * before:
        log.warning(
            "convert: the largest child has %d parameters, %.1fx the original model's %d (e.g. %s); "
            "check the rule matches only the modules you meant (conv3x3 matches dense convs only; "
            "{type: Conv2d, kernel_size: 3, groups: N} names others)",
            after, after / before, before, "; ".join(biggest[:3]),
        )  # fmt: skip
