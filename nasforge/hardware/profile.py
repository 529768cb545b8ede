"""Profile a search space's primitive blocks on this machine into a latency table.

:func:`profile_space` runs the space's supernet once to learn every choice's input shape, then
times each distinct ``(candidate, input shape, output shape)`` module — the output shape tells a
stride-2 block from a stride-1 one — on PyTorch (CPU with pinned threads, or CUDA) or, with
device ``onnxruntime``, on ONNX Runtime's CPU execution provider: warm-up calls, then the median
of timed repeats. The :class:`LatencyTable` it returns records the
device (CPU model, threads, torch and NumPy versions; onnxruntime's and its provider), saves to and loads from JSON, merges with
tables of other runs on the same device, and predicts an arch's latency as the naive sum of its
blocks. :func:`measure_model` times a whole network the same way, to check the table.

On CUDA every timed call is bracketed by ``torch.cuda.synchronize``: the wall-clock time of the
call up to the end of its last kernel, which is the latency a user of the model sees (kernel
launches included, as they dominate small networks). With ``energy=True`` each block's energy per
forward is read from the CPU package's RAPL counter (Linux powercap) where it is readable.

On ``onnxruntime`` each module is exported to ONNX (``torch.onnx.export``, TorchScript exporter)
and run by an ``InferenceSession`` whose intra- and inter-op threads are the requested threads;
it needs the ``onnx`` extra (``pip install onnxruntime onnx``).

Example:
    >>> table = profile_space(NB201Space(), (3, 32, 32))  # doctest: +SKIP
    >>> table.save("nb201_cpu.json")  # doctest: +SKIP
    >>> LatencyTable.load("nb201_cpu.json").predict(arch)  # doctest: +SKIP
    4.2
"""

from __future__ import annotations

import glob
import io
import json
import math
import platform
import statistics
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nasforge.core.arch import Arch, Choice
from nasforge.core.atomic import atomic_write_bytes
from nasforge.core.capabilities import HasSupernet
from nasforge.core.errors import ConfigError
from nasforge.core.space import SearchSpace
from nasforge.core.threads import pinned_threads
from nasforge.hardware.machine import cpu_model

__all__ = [
    "LatencyTable",
    "tiny_nb201_table",
    "device_description",
    "measure_model",
    "measure_energy",
    "energy_counter",
    "no_energy_counter_reason",
    "profile_space",
    "table_vs_measured",
    "RAPL_GLOB",
    "ONNXRUNTIME",
]

#: Where Linux exposes the CPU packages' RAPL energy counters (µJ; Intel, and AMD since Zen).
RAPL_GLOB = "/sys/class/powercap/intel-rapl*/energy_uj"

#: The device string that measures on ONNX Runtime (its CPU execution provider) instead of PyTorch.
ONNXRUNTIME = "onnxruntime"
_ORT_PROVIDER = "CPUExecutionProvider"


def _onnxruntime() -> Any:
    """The ``onnxruntime`` module (with ``onnx``, which the exporter needs), or a ConfigError."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(
            f"device {ONNXRUNTIME!r} needs ONNX Runtime and onnx ({exc}); install them with "
            "`pip install onnxruntime onnx` (the `onnx` extra: `pip install nasforge[onnx]`)"
        ) from None
    return onnxruntime


def device_description(device: str = "cpu") -> dict[str, Any]:
    """What the measurements ran on: device, CPU model, torch threads, library versions."""
    description: dict[str, Any] = {
        "device": device,
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
    if device.startswith("cuda"):
        description["gpu"] = torch.cuda.get_device_name(torch.device(device))
    if device == ONNXRUNTIME:
        description["onnxruntime"] = _onnxruntime().__version__
        description["provider"] = _ORT_PROVIDER
    return description


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def _median_ms(call: Callable[[], object], device: str, warmup: int, repeats: int) -> float:
    """Median wall-clock time (ms) of ``repeats`` calls of ``call`` after ``warmup`` untimed ones;
    on CUDA the device is synchronised before the clock starts and after each call."""
    for _ in range(warmup):
        call()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _onnx_session(model: nn.Module, x: torch.Tensor, threads: int | None) -> Any:
    """An ONNX Runtime CPU session of ``model`` exported at input ``x``, on ``threads`` threads
    (intra- and inter-op; None leaves ONNX Runtime's defaults)."""
    ort = _onnxruntime()
    exported = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter is chosen on purpose: no torch.export tracing
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), exported, dynamo=False)
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
    return ort.InferenceSession(exported.getvalue(), options, providers=[_ORT_PROVIDER])


@torch.no_grad()
def measure_model(
    model: nn.Module,
    input_shape: Sequence[int],
    device: str = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    threads: int | None = None,
) -> float:
    """Median latency (ms) of ``model`` on one batch of shape ``input_shape`` (batch included).

    ``warmup`` untimed calls first (allocator, caches, cuDNN's choices), then ``repeats`` timed
    ones; ``threads`` pins torch's CPU threads meanwhile (None leaves them). On CUDA the device
    is synchronised before the clock starts and after each call. On ``onnxruntime`` the model is
    exported to ONNX and each call is one ``session.run`` on ``threads`` ONNX Runtime threads.
    """
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but no CUDA device is available; use 'cpu'")
    with pinned_threads(threads):
        if device == ONNXRUNTIME:
            model = model.cpu().eval()
            x = torch.randn(*input_shape)
            session = _onnx_session(model, x, threads)
            feed = {arg.name: x.numpy() for arg in session.get_inputs()}
            return _median_ms(lambda: session.run(None, feed), device, warmup, repeats)
        model = model.to(device).eval()
        x = torch.randn(*input_shape, device=device)
        return _median_ms(lambda: model(x), device, warmup, repeats)


def _read_uj(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def energy_counter() -> Path | None:
    """The first readable RAPL package energy counter (µJ), or None."""
    for path in sorted(glob.glob(RAPL_GLOB)):
        if _read_uj(Path(path)) is not None:
            return Path(path)
    return None


def no_energy_counter_reason() -> str:
    """One line saying why no energy is measured here (for a machine without a readable counter)."""
    present = sorted(glob.glob(RAPL_GLOB))
    if present:
        return (
            f"energy not measured: {present[0]} exists but is not readable by this user "
            "(Linux keeps RAPL counters root-only; `sudo chmod o+r` it to measure energy)"
        )
    return f"energy not measured: this machine exposes no energy counter (no {RAPL_GLOB})"


@torch.no_grad()
def measure_energy(model: nn.Module, input_shape: Sequence[int], min_seconds: float = 0.2) -> float | None:
    """Mean CPU-package energy (mJ) of one forward, from RAPL; None without a readable counter.

    Forwards repeat for at least ``min_seconds`` so that the counter (updated about every
    millisecond) moves far more than its resolution. A counter that wraps around during the
    run is corrected by its ``max_energy_range_uj``. The counter covers the whole package, idle
    power and other processes included: measure on an otherwise idle machine.
    """
    counter = energy_counter()
    if counter is None:
        return None
    model = model.eval()
    x = torch.randn(*input_shape)
    model(x)
    before = _read_uj(counter)
    started, calls = time.perf_counter(), 0
    while calls == 0 or time.perf_counter() - started < min_seconds:
        model(x)
        calls += 1
    after = _read_uj(counter)
    if before is None or after is None:
        return None
    used = after - before
    if used < 0:
        used += _read_uj(counter.with_name("max_energy_range_uj")) or 0
    return used / calls / 1e3 if used >= 0 else None


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


@dataclass
class LatencyTable:
    """Per-block latencies of one space on one device; ``predict(arch)`` is their naive sum.

    Attributes:
        device: :func:`device_description` of where the blocks were measured.
        input_shape: the network input the table was profiled for (batch included).
        layers: one entry per choice module of the network, in forward order: its choice name
            and, per candidate value, the key of its block.
        blocks: block key -> median latency (ms). A key reads ``value|in shape|out shape``.
        energy_mj: block key -> energy per forward (mJ) where a counter was readable.
        overhead_ms: latency outside the choice blocks (stem, head, node sums, dispatch): the
            median of measured minus summed latency over a few whole networks; 0 if uncalibrated.
    """

    device: dict[str, Any]
    input_shape: list[int]
    layers: list[dict[str, Any]]
    blocks: dict[str, float]
    energy_mj: dict[str, float] = field(default_factory=dict)
    overhead_ms: float = 0.0

    @property
    def threads(self) -> int | None:
        """The CPU threads the blocks were timed with (None if unrecorded): whole networks
        measured against the table must use the same, or the comparison is off."""
        threads = self.device.get("threads")
        return int(threads) if threads else None

    def keys(self, arch: Mapping[str, Any]) -> list[str]:
        """The block key of each layer for ``arch``."""
        try:
            return [layer["blocks"][str(arch[layer["choice"]])] for layer in self.layers]
        except KeyError as exc:
            raise ConfigError(
                f"the latency table has no block for {exc.args[0]!r} of this arch: {dict(arch)}"
            ) from None

    def predict(self, arch: Mapping[str, Any]) -> float:
        """Latency (ms) of ``arch``: the naive sum of its choice blocks plus :attr:`overhead_ms`."""
        missing = [key for key in self.keys(arch) if key not in self.blocks]
        if missing:
            raise ConfigError(f"the latency table has not measured block(s) {', '.join(sorted(set(missing)))}")
        return self.overhead_ms + float(sum(self.blocks[key] for key in self.keys(arch)))

    def fastest_arch(self, choices: Mapping[str, Choice]) -> Arch:
        """The arch of ``choices`` whose summed blocks are fastest (each choice's cheapest value,
        summed over every layer that follows it); constraints between choices are ignored."""
        cost: dict[tuple[str, str], float] = defaultdict(float)
        for layer in self.layers:
            for value, key in layer["blocks"].items():
                cost[layer["choice"], value] += self.blocks.get(key, math.inf)
        return Arch(
            {name: min(choice.candidates, key=lambda v, n=name: cost[n, str(v)]) for name, choice in choices.items()}
        )

    def predict_energy(self, arch: Mapping[str, Any]) -> float:
        """Energy (mJ) of one forward of ``arch``: the sum of its blocks' energies.

        Blocks carry energy only in tables profiled with ``energy=True`` on a machine with a
        readable counter; otherwise this is a ConfigError naming the missing blocks' count.
        """
        keys = self.keys(arch)
        missing = {key for key in keys if key not in self.energy_mj}
        if missing:
            raise ConfigError(
                f"the latency table holds no energy for {len(missing)} block(s) of this arch; profile with "
                "`nasforge profile --energy` on a machine with a readable RAPL counter"
            )
        return float(sum(self.energy_mj[key] for key in keys))

    def merge(self, other: LatencyTable) -> LatencyTable:
        """A table holding both tables' blocks (``other`` wins where both measured one).

        Both must come from the same device (CPU, threads, device string) and network layout.
        """
        same = ("device", "cpu", "threads", "gpu")
        if any(self.device.get(k) != other.device.get(k) for k in same):
            raise ConfigError(
                "cannot merge latency tables of different devices: "
                f"{ {k: self.device.get(k) for k in same} } vs { {k: other.device.get(k) for k in same} }"
            )
        if self.layers != other.layers or self.input_shape != other.input_shape:
            raise ConfigError("cannot merge latency tables of different networks (layers or input shape differ)")
        return LatencyTable(
            dict(self.device),
            list(self.input_shape),
            list(self.layers),
            {**self.blocks, **other.blocks},
            {**self.energy_mj, **other.energy_mj},
            other.overhead_ms,
        )

    def save(self, path: str | Path) -> None:
        """Write the table as JSON (atomically)."""
        atomic_write_bytes(path, json.dumps(self.__dict__, indent=1).encode())

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Read a table written by :meth:`save`; a missing, corrupt or foreign file is a ConfigError."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"latency table {path} does not exist; make one with `nasforge profile`")
        try:
            data = json.loads(path.read_text())
            table = cls(**data)
        except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ConfigError(
                f"{path} is not a latency table written by `nasforge profile` ({type(exc).__name__}: {exc})"
            ) from None
        if not (isinstance(table.layers, list) and isinstance(table.blocks, dict) and isinstance(table.device, dict)):
            raise ConfigError(f"{path} is not a latency table written by `nasforge profile` (wrong field types)")
        return table


def choice_inputs(
    space: SearchSpace, supernet: nn.Module, input_shape: Sequence[int]
) -> list[tuple[Any, tuple[int, ...]]]:
    """Every choice module of the supernet with the shape of its input (batch included), in forward
    order; a module run twice is listed twice. Shared by the latency and cost lookup tables."""
    from nasforge.nn.mixed import MixedOp

    seen: list[tuple[Any, tuple[int, ...]]] = []
    hooks = [
        module.register_forward_hook(lambda m, inputs, _out: seen.append((m, tuple(inputs[0].shape))))
        for module in supernet.modules()
        if isinstance(module, MixedOp)
    ]
    try:
        supernet.activate(space.sample(np.random.default_rng(0)))  # type: ignore[operator]
        with torch.no_grad():
            supernet.eval()(torch.zeros(*input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def profile_space(
    space: SearchSpace,
    input_shape: Sequence[int],
    device: str = "cpu",
    threads: int | None = 1,
    warmup: int = 3,
    repeats: int = 10,
    calibrate: int = 3,
    energy: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> LatencyTable:
    """Measure every distinct block of ``space``'s supernet at ``input_shape`` (batch included).

    ``device`` is ``cpu``, ``cuda`` or ``onnxruntime`` (:func:`measure_model`). ``threads`` pins
    torch's (and ONNX Runtime's) CPU threads for the measurement (None leaves them). ``calibrate``
    whole sampled networks are then timed to set :attr:`LatencyTable.overhead_ms` (0: none). With
    ``energy`` (CPU only) each block's energy per forward is recorded too where a RAPL counter is
    readable (:func:`energy_counter`; :func:`no_energy_counter_reason` says why not). The space
    must offer ``supernet()`` (cell and blockwise spaces do). ``progress(done, total)`` is called
    after each distinct block is measured.
    """
    if not isinstance(space, HasSupernet):
        raise ConfigError(f"{type(space).__name__} has no supernet(); profiling needs every candidate module")
    with pinned_threads(threads):
        supernet = space.supernet()
        layers: list[dict[str, Any]] = []
        blocks: dict[str, float] = {}
        energy_mj: dict[str, float] = {}
        todo: dict[str, tuple[nn.Module, Sequence[int]]] = {}  # distinct blocks, first occurrence
        for module, shape in choice_inputs(space, supernet, input_shape):
            keys = {}
            for value, candidate in zip(module.values, module.ops, strict=True):
                with torch.no_grad():
                    out_shape = tuple(candidate.eval()(torch.zeros(*shape)).shape)
                key = f"{value}|{_shape_text(shape)}|{_shape_text(out_shape)}"
                keys[str(value)] = key
                todo.setdefault(key, (candidate, shape))
            layers.append({"choice": module.name, "blocks": keys})
        for done, (key, (candidate, shape)) in enumerate(todo.items(), start=1):
            blocks[key] = measure_model(candidate, shape, device, warmup, repeats, threads=threads)
            mj = measure_energy(candidate, shape) if energy and device == "cpu" else None
            if mj is not None:
                energy_mj[key] = mj
            if progress is not None:
                progress(done, len(todo))
        table = LatencyTable(device_description(device), list(input_shape), layers, blocks, energy_mj)
        if calibrate:
            rows = table_vs_measured(space, table, calibrate, seed=1, repeats=repeats, warmup=warmup)
            table.overhead_ms = statistics.median(measured - summed for _, summed, measured in rows)
        return table


def table_vs_measured(
    space: SearchSpace, table: LatencyTable, n: int, seed: int = 0, repeats: int = 10, warmup: int = 3
) -> list[tuple[Arch, float, float]]:
    """``n`` sampled archs with their table prediction and their measured end-to-end latency."""
    rng = np.random.default_rng(seed)
    device = str(table.device.get("device", "cpu"))
    out = []
    for _ in range(n):
        arch = space.sample(rng)
        measured = measure_model(space.build(arch), table.input_shape, device, warmup, repeats, threads=table.threads)
        out.append((arch, table.predict(arch), measured))
    return out


def tiny_nb201_table(folder: Path) -> Path:
    """A latency table of a one-cell NB201 space (C=4) at 1x8x8, written into ``folder``: what the
    latency components' tiny conformance settings (``nasforge.testing.suites``) point at."""
    from nasforge.core import registry

    table = folder / "latency_table.json"
    space = registry.create("space", "nb201", {"C": 4, "N": 1, "in_channels": 1})
    profile_space(space, (1, 1, 8, 8), warmup=0, repeats=1, calibrate=0).save(table)
    return table
