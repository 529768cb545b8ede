"""Elastic width and depth for the converter (:mod:`nasforge.nn.convert`): which layers of a
user's block can take a width choice, and which sequences of blocks a depth choice.

**Width.** A dense conv whose output reaches only other dense convs, through batch norms,
depthwise convs (one filter per channel: its channels move with the width) and channel-wise ops
(activations of torch, and parameter-free modules of the user's that act on each channel alone,
checked on a random input), gets a width choice; the batch norms and depthwise convs on the way
follow it and the convs reading it slice their input channels.

**Depth.** An ``nn.Sequential`` of matched blocks keeps its first ``d`` blocks (the blocks up to
the last that changes the shape always run); in a flat ``nn.Sequential`` mixing matched blocks
with other modules (MobileNet's ``features``), every run of consecutive matched blocks that keep
the shape, after the block that starts it, gets a depth choice of its own.

What stopped a block from becoming elastic is collected as ``blockers`` for the error message.
"""

from __future__ import annotations

import copy
import operator
from collections import Counter, OrderedDict
from collections.abc import Sequence

import torch
from torch import fx, nn
from torch.nn import functional as F

from nasforge.core.errors import ConfigError
from nasforge.nn import mutables
from nasforge.nn.convert_checks import probe, replace
from nasforge.nn.elastic import ElasticBatchNorm2d, ElasticConv2d, ElasticSequential

__all__ = ["elastic_width", "elastic_depth", "nothing_elastic"]

_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
    nn.Mish, nn.Hardtanh, nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d,
)  # fmt: skip
_PASS_FUNCTIONS = {
    F.relu, F.relu6, F.silu, F.gelu, F.leaky_relu, F.elu, F.hardswish, F.hardsigmoid, F.hardtanh, F.mish, F.dropout,
    torch.relu, torch.sigmoid, torch.tanh, torch.clamp, F.sigmoid, F.tanh,
}  # fmt: skip
_PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "clamp", "mul", "add", "div", "sub"}
_SCALAR_OPS = {operator.add, operator.mul, operator.sub, operator.truediv, torch.add, torch.mul, torch.sub, torch.div}


def _conv_problem(module: nn.Module, depthwise: bool) -> str | None:
    """Why ``module`` cannot be an :class:`~nasforge.nn.elastic.ElasticConv2d` (None: it can)."""
    if type(module) is not nn.Conv2d:
        return "not a plain nn.Conv2d"
    c = module
    if depthwise != (c.groups > 1):
        return None if depthwise else f"grouped (groups={c.groups})"
    if depthwise and not c.groups == c.in_channels == c.out_channels:
        return f"grouped (groups={c.groups} of {c.in_channels} channels; only depthwise and dense convs are elastic)"
    k = c.kernel_size
    if c.dilation != (1, 1):
        return f"dilated ({c.dilation})"
    if k[0] != k[1] or k[0] % 2 == 0 or c.stride[0] != c.stride[1]:
        return f"kernel {k} / stride {c.stride} (square odd kernels only)"
    if c.padding != (k[0] // 2,) * 2 or c.padding_mode != "zeros":
        return f"padding {c.padding} {c.padding_mode} (elastic convs pad kernel // 2 with zeros)"
    return None


def _dense(module: nn.Module | None) -> bool:
    return (
        module is not None
        and isinstance(module, nn.Conv2d)
        and module.groups == 1
        and _conv_problem(module, False) is None
    )


def _depthwise(module: nn.Module | None) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and _conv_problem(module, True) is None


def _acts_per_channel(module: nn.Module) -> bool:
    """Whether a parameter-free ``module`` maps each channel alone (its first half of the channels
    gives the first half of its output), on a random input."""
    x = torch.randn(2, 8, 6, 6, generator=torch.Generator().manual_seed(0))
    probe_module = copy.deepcopy(module).eval()
    try:
        with torch.no_grad():
            full, half = probe_module(x), probe_module(x[:, :4])
    except Exception:
        return False
    return isinstance(full, torch.Tensor) and full.shape == x.shape and torch.allclose(full[:, :4], half, atol=1e-6)


class _Tracer(fx.Tracer):
    """Mutables and the user's own channel-wise modules (activations: ``activations``, found
    before tracing, as running a module while tracing would trace it) stay leaves."""

    def __init__(self, activations: set[int]) -> None:
        super().__init__()
        self.activations = activations

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (
            isinstance(m, mutables.Mutable)
            or id(m) in self.activations
            or super().is_leaf_module(m, module_qualified_name)
        )


def _user_activations(block: nn.Module) -> set[int]:
    """The parameter-free modules of ``block``, not torch's, that act on each channel alone."""
    return {
        id(m)
        for m in block.modules()
        if not type(m).__module__.startswith("torch.")
        and next(m.parameters(), None) is None
        and next(m.buffers(), None) is None
        and _acts_per_channel(m)
    }


def _width_groups(
    path: str, block: nn.Module, blockers: list[str]
) -> list[tuple[str, list[str], list[str], list[str]]]:
    """``(producer conv, batch norms, depthwise convs, consumer convs)`` of every inner width."""
    try:
        activations = _user_activations(block)
        graph = _Tracer(activations).trace(block)
    except Exception as exc:
        raise ConfigError(
            f"elastic width: cannot trace block {path!r} ({type(block).__name__}) with torch.fx: {type(exc).__name__}: {exc}"
        ) from None
    modules = dict(block.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")

    def module_of(node: fx.Node) -> nn.Module | None:
        return modules.get(str(node.target)) if node.op == "call_module" and calls[node.target] == 1 else None

    def norm(module: nn.Module | None) -> bool:
        return type(module) is nn.BatchNorm2d and module.affine and module.track_running_stats

    def channelwise(node: fx.Node) -> bool:
        if not node.args or not isinstance(node.args[0], fx.Node):
            return False
        if node.op == "call_module":
            module = modules[str(node.target)]
            return isinstance(module, _PASS_MODULES) or id(module) in activations
        if node.op == "call_function" and node.target in _SCALAR_OPS:
            return sum(isinstance(a, fx.Node) for a in (*node.args, *node.kwargs.values())) == 1
        if node.op == "call_method" and node.target in ("mul", "add", "div", "sub"):
            return sum(isinstance(a, fx.Node) for a in (*node.args, *node.kwargs.values())) == 1
        return (node.op == "call_function" and node.target in _PASS_FUNCTIONS) or (
            node.op == "call_method" and node.target in _PASS_METHODS
        )

    def describe(node: fx.Node) -> str:
        if node.op == "call_module":
            module = modules[str(node.target)]
            if calls[node.target] > 1:
                return f"{node.target} (called {calls[node.target]} times)"
            problem = _conv_problem(module, module.groups > 1) if isinstance(module, nn.Conv2d) else None
            return f"{node.target} ({type(module).__name__}{': ' + problem if problem else ''})"
        name = getattr(node.target, "__name__", str(node.target))
        return f"{name}() on two tensors (e.g. a residual sum)" if node.op != "output" else "the block's output"

    prefix = f"{path}." if path else ""
    groups = []
    for node in graph.nodes:
        module = module_of(node)
        if not _dense(module):
            if isinstance(module, nn.Conv2d) and module.groups > 1 and not _depthwise(module):
                blockers.append(f"{prefix}{node.target} is {_conv_problem(module, True)}")
            continue
        norms: list[str] = []
        depthwise: list[str] = []
        consumers: list[str] = []
        frontier, inner, seen = list(node.users), True, set()
        while frontier and inner:
            user = frontier.pop()
            if user in seen:
                continue
            seen.add(user)
            target = module_of(user)
            if _dense(target):
                consumers.append(str(user.target))
            elif _depthwise(target):
                depthwise.append(str(user.target))
                frontier.extend(user.users)
            elif norm(target):
                norms.append(str(user.target))
                frontier.extend(user.users)
            elif channelwise(user):
                frontier.extend(user.users)
            else:
                inner = False
                if user.op != "output":
                    blockers.append(f"{prefix}{node.target}'s output reaches {describe(user)}")
        if inner and consumers:
            groups.append((str(node.target), norms, depthwise, consumers))
    return groups


def elastic_width(path: str, block: nn.Module, fractions: Sequence[float], blockers: list[str]) -> int:
    """Make the inner widths of ``block`` ValueChoices (slices of the original layers); returns
    how many it made."""
    in_choice: dict[str, int | mutables.ValueChoice] = {}
    out_choice: dict[str, int | mutables.ValueChoice] = {}
    norms: dict[str, mutables.ValueChoice] = {}
    groups = _width_groups(path, block, blockers)
    for producer, group_norms, depthwise, consumers in groups:
        full = block.get_submodule(producer).out_channels
        widths = sorted({max(1, round(full * f)) for f in fractions} | {full})
        choice = mutables.ValueChoice(widths, label=f"{path}.{producer}.width" if path else f"{producer}.width")
        out_choice[producer] = choice
        in_choice.update(dict.fromkeys(consumers, choice))
        in_choice.update(dict.fromkeys(depthwise, choice))
        out_choice.update(dict.fromkeys(depthwise, choice))
        norms.update(dict.fromkeys(group_norms, choice))
    for name in {*in_choice, *out_choice}:
        conv = block.get_submodule(name)
        elastic = ElasticConv2d(
            in_choice.get(name, conv.in_channels),
            out_choice.get(name, conv.out_channels),
            conv.kernel_size[0],
            conv.stride[0],
            depthwise=conv.groups > 1,
            bias=conv.bias is not None,
        )
        elastic.load_state_dict(conv.state_dict())
        replace(block, name, elastic.to(conv.weight.device).train(conv.training))
    for name, choice in norms.items():
        bn = block.get_submodule(name)
        elastic_bn = ElasticBatchNorm2d(choice, bn.eps, bn.momentum)
        elastic_bn.load_state_dict(bn.state_dict())
        replace(block, name, elastic_bn.to(bn.weight.device).train(bn.training))
    return len(groups)


def elastic_depth(model: nn.Module, matched: set[int], input_shape: Sequence[int] | None, blockers: list[str]) -> int:
    """Give every ``nn.Sequential`` of matched blocks, and every run of matched blocks keeping the
    shape inside a flat ``nn.Sequential``, a depth choice (an
    :class:`~nasforge.nn.elastic.ElasticSequential`); returns how many it made."""
    stages = [
        (path, stage)
        for path, stage in model.named_modules()
        if type(stage) is nn.Sequential and sum(id(block) in matched for block in stage) > 1
    ]
    if not stages:
        blockers.append("depth: no nn.Sequential holds two or more matched blocks")
        return 0
    if input_shape is None:
        raise ConfigError(
            "elastic depth: pass input_shape (C, H, W) so the converter can tell which blocks keep the shape"
        )
    name = {id(stage): path for path, stage in stages}
    blocks = {_at(path, i): block for path, stage in stages for i, block in enumerate(stage) if id(block) in matched}
    shapes = probe(model, blocks, input_shape)

    def keeps(path: str, i: int) -> bool:
        return _at(path, i) in shapes and shapes[_at(path, i)][0] == shapes[_at(path, i)][1]

    made = 0
    for _, stage in stages:
        path = name[id(stage)]
        if path and all(id(block) in matched for block in stage):  # a stage: keep up to the last shape change
            fixed = max([i + 1 for i in range(len(stage)) if not keeps(path, i)], default=1)
            if fixed < len(stage):
                depths = mutables.ValueChoice(list(range(fixed, len(stage) + 1)), label=f"{path}.depth")
                replace(model, path, ElasticSequential(list(stage), depths))
                made += 1
            else:
                blockers.append(f"depth: every block of {path!r} changes the shape")
            continue
        runs: list[list[tuple[int, nn.Module]]] = []  # a matched block, then the matched ones keeping the shape
        for i, block in enumerate(stage):
            if id(block) in matched and runs and runs[-1][0][0] >= 0 and keeps(path, i):
                runs[-1].append((i, block))
            else:
                runs.append([(i if id(block) in matched else -1, block)])
        items: list[nn.Module] = []
        for run in runs:
            if len(run) > 1:
                depths = mutables.ValueChoice(list(range(1, len(run) + 1)), label=f"{_at(path, run[0][0])}.depth")
                items.append(ElasticSequential([b for _, b in run], depths))
                made += 1
            else:
                items.append(run[0][1])
        if len(items) < len(stage):
            stage._modules = OrderedDict((str(i), item) for i, item in enumerate(items))  # in place: the root too
        else:
            blockers.append(f"depth: no two consecutive matched blocks of {path or 'the model'!r} keep the shape")
    return made


def _at(path: str, index: int) -> str:
    return f"{path}.{index}" if path else str(index)


def nothing_elastic(rule: object, matched: int, blockers: list[str]) -> ConfigError:
    """The error for a rule that matched modules none of which became elastic, naming why."""
    why = "; ".join(dict.fromkeys(blockers)) or "no conv feeds another conv inside the matched blocks"
    return ConfigError(
        f"convert: rule {rule!r} matched {matched} module(s) but none became elastic: no inner width (a dense "
        "conv feeding only convs through batch norm, depthwise convs and channel-wise ops) and no nn.Sequential "
        f"of matched blocks with a block to drop. What blocked it: {why}"
    )
