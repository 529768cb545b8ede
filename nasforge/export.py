"""Export a child network as plain PyTorch: one readable ``model.py`` and a ``weights.pt``.

The exported folder loads with PyTorch alone (nasforge need not be installed)::

    import model                      # the exported model.py
    net = model.load()                # builds the network and loads weights.pt beside it

How: the child is traced with ``torch.fx``; every leaf module becomes one flat attribute built
from its own constructor arguments (read back from the module's attributes), and the traced
graph becomes ``forward``. The child is traced in eval and in train mode: where the graphs differ
(functional dropout, drop-connect under ``if self.training``), ``forward`` dispatches on
``self.training`` to the two, so the exported model trains like the original. Before anything is written, the generated code is executed and its
outputs compared with the original's, so an export that would not reproduce the model fails
here, loudly, instead of later in a user's deployment.
"""

from __future__ import annotations

import builtins
import copy
import inspect
import io
import keyword
import math
import re
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from nasforge.core.atomic import atomic_write_bytes
from nasforge.core.errors import NasforgeError

__all__ = ["ExportError", "export_model", "generate_source"]


class ExportError(NasforgeError):
    """The model cannot be exported as plain PyTorch (untraceable, or unknown leaf module)."""


def _leaf_constructor(module: nn.Module) -> str:
    """``nn.Conv2d(3, 16, kernel_size=(3, 3), ...)`` rebuilt from the module's own attributes."""
    cls = type(module)
    if not cls.__module__.startswith("torch.nn"):
        raise ExportError(f"cannot export leaf module of type {cls.__module__}.{cls.__qualname__}; only torch.nn modules")
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    args = []
    for p in params:
        if p.name in ("device", "dtype") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if not hasattr(module, p.name):
            if p.default is p.empty:
                raise ExportError(f"cannot read constructor argument {p.name!r} back from {cls.__name__}")
            continue
        value = getattr(module, p.name)
        if isinstance(value, (nn.Parameter, torch.Tensor)) or (p.name == "bias" and value is None):
            value = value is not None
        if isinstance(value, torch.Size):
            value = tuple(value)
        if p.default is not p.empty and _equal(value, p.default):
            continue
        args.append(f"{p.name}={value!r}")
    return f"nn.{cls.__name__}({', '.join(args)})"


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return False


def _flatten(
    traced: fx.GraphModule, root: nn.Module, names: dict[str, str], declarations: dict[str, str]
) -> fx.Graph:
    """Put every called leaf module and used tensor of ``traced`` in ``root`` under a flat name
    (``names``: target -> flat name, shared by the train- and eval-mode graphs)."""
    graph = traced.graph
    for node in graph.nodes:
        node.type = None  # annotations may be strings under `from __future__ import annotations`
        if node.op not in ("call_module", "get_attr"):
            continue
        target = str(node.target)
        if target not in names:
            flat = re.sub(r"\W", "_", target)
            if not flat.isidentifier() or keyword.iskeyword(flat):
                flat = f"m_{flat}"
            while flat in declarations or hasattr(nn.Module, flat):
                flat += "_"
            names[target] = flat
            obj = traced.get_submodule(target) if node.op == "call_module" else _get_attr(traced, target)
            if node.op == "call_module":
                declarations[flat] = _leaf_constructor(obj)
                root.add_module(flat, obj)
            elif isinstance(obj, nn.Parameter):
                declarations[flat] = f"nn.Parameter(torch.empty({tuple(obj.shape)!r}, dtype={obj.dtype}))"
                root.register_parameter(flat, obj)
            elif isinstance(obj, torch.Tensor):
                declarations[flat] = f"torch.empty({tuple(obj.shape)!r}, dtype={obj.dtype})"
                root.register_buffer(flat, obj)
            else:
                raise ExportError(f"cannot export attribute {target!r} of type {type(obj).__name__}")
        node.target = names[target]
    return graph


def _trace(model: nn.Module, training: bool) -> fx.GraphModule:
    """``model`` traced in train or eval mode (Python reading ``self.training``, as functional
    dropout and drop-connect do, is resolved at trace time); its mode is restored."""
    was_training = model.training
    model.train(training)
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:
        raise ExportError(f"cannot trace the model with torch.fx ({type(exc).__name__}: {exc})") from None
    finally:
        model.train(was_training)


def _get_attr(module: nn.Module, target: str) -> Any:
    obj: Any = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


_SAFE_GLOBALS = {"torch": "import torch", "operator": "import operator", "math": "import math", "inf": "from math import inf", "nan": "from math import nan"}


def generate_source(model: nn.Module, *, doc: str = "") -> tuple[str, dict[str, torch.Tensor]]:
    """Python source of a standalone equivalent of ``model``, and the weights it loads.

    Raises :class:`ExportError` when ``model`` cannot be traced or holds non-torch leaf modules.
    """
    root = nn.Module()
    names: dict[str, str] = {}
    declarations: dict[str, str] = {}
    codes = {mode: _flatten(_trace(model, mode == "train"), root, names, declarations).python_code(root_module="self") for mode in ("train", "eval")}
    imports = {"import torch", "from torch import nn"}
    for code in codes.values():
        _imports(code, imports)
    if codes["train"].src == codes["eval"].src:
        forward = _method(codes["eval"].src)
    else:  # train mode runs another graph (dropout, drop-connect): keep both, as the original
        forward = "\n\n".join(
            [
                _method(codes["train"].src).replace("def forward(", "def _forward_train(", 1),
                _method(codes["eval"].src).replace("def forward(", "def _forward_eval(", 1),
                "    def forward(self, *args, **kwargs):\n"
                "        if self.training:  # as the original: dropout and drop-connect act in train mode\n"
                "            return self._forward_train(*args, **kwargs)\n"
                "        return self._forward_eval(*args, **kwargs)",
            ]
        )
    body = "\n".join(f"        self.{flat} = {ctor}" for flat, ctor in declarations.items()) or "        pass"
    header = sorted(i for i in imports if i.startswith(("import", "from")))
    aliases = sorted(i for i in imports if not i.startswith(("import", "from")))
    source = f'''"""{doc or "A network exported by nasforge."}

Loads with PyTorch alone: ``net = load()`` builds the network and loads ``weights.pt``.
"""

{chr(10).join(header)}
from pathlib import Path

{chr(10).join(aliases)}


class Model(nn.Module):
    """The exported network (flat leaf modules; ``forward`` is the traced graph)."""

    def __init__(self):
        super().__init__()
{body}

{forward}


def load(weights=None, map_location="cpu"):
    """Build the network and load its weights (default: ``weights.pt`` next to this file)."""
    net = Model()
    path = Path(weights) if weights is not None else Path(__file__).with_name("weights.pt")
    net.load_state_dict(torch.load(path, map_location=map_location, weights_only=True))
    return net.eval()
'''
    return source, {k: v.detach().clone() for k, v in root.state_dict().items()}


def _method(src: str) -> str:
    """fx's ``def forward`` source, indented as a method."""
    lines = [line.rstrip() for line in src.strip("\n").splitlines()]
    return "\n".join(f"    {line}" if line else line for line in lines)


def _imports(code: Any, imports: set[str]) -> None:
    """Add to ``imports`` what the generated ``code`` needs; ExportError for non-torch callables."""
    for name, value in code.globals.items():
        if not re.search(rf"\b{re.escape(name)}\b", code.src):
            continue  # fx lists some globals whether or not the code uses them
        if name in _SAFE_GLOBALS:
            imports.add(_SAFE_GLOBALS[name])
        elif getattr(builtins, name, None) is value or name in ("getattr", "NoneType"):
            if name == "NoneType":
                imports.add("NoneType = type(None)")
        elif inspect.isfunction(value) or inspect.isbuiltin(value) or callable(value):
            module = getattr(value, "__module__", None) or ""
            qual = getattr(value, "__qualname__", getattr(value, "__name__", ""))
            if module.startswith(("torch", "_operator", "operator", "math")):
                root_mod = "operator" if module == "_operator" else module
                imports.add(f"import {root_mod}")
                imports.add(f"{name} = {root_mod}.{qual}")
            else:
                raise ExportError(f"the traced model calls {module}.{qual}, which is not part of PyTorch")
        else:
            raise ExportError(f"the traced model refers to {name!r} ({type(value).__name__}), which cannot be exported")


def _tensors(output: Any) -> list[torch.Tensor]:
    """The tensors of a model's output (a tensor, or nested tuples, lists and dicts of them)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _tensors(item)]
    return []


def _compare(expected: torch.Tensor, got: torch.Tensor, atol: float, mode: str) -> None:
    if expected.shape != got.shape or not torch.allclose(expected, got, atol=atol, rtol=0):
        diff = (expected - got).abs().max().item() if expected.shape == got.shape else math.inf
        raise ExportError(f"the exported model does not reproduce the original{mode} (max abs difference {diff:g})")


def export_model(model: nn.Module, example_input: torch.Tensor, out_dir: str | Path, *, doc: str = "", atol: float = 1e-5) -> Path:
    """Write ``out_dir/model.py`` and ``out_dir/weights.pt`` after checking they reproduce ``model``.

    Returns ``out_dir``. The check runs the generated code on ``example_input`` in eval mode and
    in train mode (same seed, so dropout draws the same masks) and compares with ``model``'s
    outputs to ``atol``: the exported ``model.py`` fine-tunes like the original.
    """
    model = model.eval()
    source, weights = generate_source(model, doc=doc)
    namespace: dict[str, Any] = {"__name__": "nasforge_export_check", "__file__": str(Path(out_dir) / "model.py")}
    exec(compile(source, "<exported model.py>", "exec"), namespace)  # noqa: S102 - our own generated code
    clone = namespace["Model"]()
    clone.load_state_dict(weights)
    clone.eval()
    with torch.no_grad():
        expected, got = model(example_input), clone(example_input)
    _compare(expected, got, atol, "")
    with torch.random.fork_rng(devices=[]):  # train mode: the same random draws (dropout) in the same order
        torch.manual_seed(0)
        expected = copy.deepcopy(model).train()(example_input)
        torch.manual_seed(0)
        got = copy.deepcopy(clone).train()(example_input)
    for want, have in zip(_tensors(expected), _tensors(got), strict=True):  # e.g. (logits, auxiliary logits)
        _compare(want.detach(), have.detach(), atol, " in train mode (dropout, drop-connect, batch statistics)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    atomic_write_bytes(out / "weights.pt", buffer.getvalue())
    atomic_write_bytes(out / "model.py", source.encode())
    return out

