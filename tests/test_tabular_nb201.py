"""The NAS-Bench-201 lookup estimator: values, lazy shared loading, errors, runner integration."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError, DataNotFoundError, InvalidArchError
from nasforge.core.estimator import Context
from nasforge.estimators import tabular_nb201
from nasforge.estimators.tabular_nb201 import (
    ACC_12EP_FILE,
    ACC_200EP_FILE,
    LATENCY_FILE,
    NB201Table,
    latency_devices,
    nb201_string,
    nb201_table,
)
from nasforge.objectives.basic import SingleMetric
from nasforge.runner import run_search
from nasforge.spaces.nb201 import NB201Space
from nasforge.testing import ToySpace

# Row 1 of every table (NB201 index 1).
ROW1 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
BEST_CIFAR10 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def _ctx() -> Context:
    return Context(space=NB201Space())


def test_known_values(shared_data: Path) -> None:
    arch = NB201Space().parse(ROW1)
    assert nb201_string(arch) == ROW1
    expected = {
        "cifar10": (82.83399999389648, 93.66000000000001),
        "cifar100": (57.79999996948242, 70.29333326822916),
        "ImageNet16-120": (35.433333353678385, 44.03333332316081),
    }
    for dataset, (val, test) in expected.items():
        result = NB201Table(dataset=dataset, data_dir=str(shared_data), devices=["pixel3", "1080ti_1"]).estimate(
            arch, _ctx()
        )
        assert result.metrics["val_acc"] == pytest.approx(val)
        assert result.metrics["test_acc"] == pytest.approx(test)
        assert result.metrics["latency_pixel3"] == pytest.approx(17.2381)
        assert result.metrics["latency_1080ti_1"] == pytest.approx(12.900347709655762)
        assert set(result.metrics) == {"val_acc", "test_acc", "latency_pixel3", "latency_1080ti_1"}
        assert result.cost["seconds"] == 0.0


def test_all_devices_by_default(shared_data: Path) -> None:
    estimator = NB201Table(data_dir=str(shared_data))
    assert len(estimator.devices) == 27 and "raspi4" in estimator.devices
    metrics = estimator.estimate(NB201Space().parse(ROW1), _ctx()).metrics
    assert len(metrics) == 29 and metrics["latency_raspi4"] == pytest.approx(54.77739761998237)
    assert latency_devices(str(shared_data)) == list(estimator.devices)


def test_optimum_and_arrays(shared_data: Path) -> None:
    table = nb201_table("cifar10", str(shared_data))
    assert len(table.archs) == 15625 and table.test_acc.shape == table.val_acc.shape == (15625,)
    assert round(table.best_test_acc, 2) == 94.37
    assert table.archs[int(np.argmax(table.test_acc))] == BEST_CIFAR10
    assert table.index(ROW1) == 1 and table.index(NB201Space().parse(ROW1)) == 1
    assert round(nb201_table("cifar100", str(shared_data)).best_test_acc, 2) == 73.51
    assert round(nb201_table("ImageNet16-120", str(shared_data)).best_test_acc, 2) == 47.31
    estimator = NB201Table(data_dir=str(shared_data), devices=[])
    assert estimator.arrays().best_test_acc == table.best_test_acc


def test_search_metric_oracle(shared_data: Path) -> None:
    estimator = NB201Table(data_dir=str(shared_data), search_metric="test_acc_200ep", devices=[])
    metrics = estimator.estimate(NB201Space().parse(BEST_CIFAR10), _ctx()).metrics
    assert metrics["val_acc"] == metrics["test_acc"] == pytest.approx(94.37333333333333)


def test_lazy_shared_loading(shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "nb201"
    folder.mkdir()
    for name in (ACC_12EP_FILE, ACC_200EP_FILE):
        shutil.copy(shared_data / "nb201" / name, folder / name)
    mine = lambda: {p for p in tabular_nb201._CACHE if p.parent == folder.resolve()}  # noqa: E731
    first = NB201Table(data_dir=str(tmp_path), devices=[])  # no latency file needed, none present
    assert mine() == set(), "nothing is read before the first query"
    first.estimate(NB201Space().parse(ROW1), _ctx())
    assert {p.name for p in mine()} == {ACC_12EP_FILE, ACC_200EP_FILE}
    cached = dict(tabular_nb201._CACHE)
    second = NB201Table(data_dir=str(tmp_path), dataset="cifar100", devices=[])
    second.estimate(NB201Space().parse(ROW1), _ctx())
    assert all(tabular_nb201._CACHE[p] is cached[p] for p in mine()), "files are parsed once per process"
    with pytest.raises(DataNotFoundError, match=LATENCY_FILE):
        NB201Table(data_dir=str(tmp_path))  # latencies wanted but absent


def test_missing_file_names_it(shared_data: Path, tmp_path: Path) -> None:
    (tmp_path / "nb201").mkdir()
    shutil.copy(shared_data / "nb201" / ACC_12EP_FILE, tmp_path / "nb201" / ACC_12EP_FILE)
    with pytest.raises(DataNotFoundError, match=ACC_200EP_FILE):
        NB201Table(data_dir=str(tmp_path), devices=[])
    with pytest.raises(DataNotFoundError, match=ACC_200EP_FILE):
        nb201_table("cifar10", str(tmp_path))


def test_unknown_dataset_and_device(shared_data: Path) -> None:
    with pytest.raises(ConfigError, match="cifar100"):
        NB201Table(dataset="imagenet", data_dir=str(shared_data))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ImageNet16-120"):
        registry.create("estimator", "nb201_table", {"dataset": "svhn"})
    with pytest.raises(ConfigError, match="pixel3"):
        NB201Table(data_dir=str(shared_data), devices=["pixel9"])
    with pytest.raises(ConfigError, match="val_acc_12ep"):
        NB201Table(data_dir=str(shared_data), search_metric="val_acc_200ep")  # type: ignore[arg-type]


def test_wrong_space_is_a_clear_error(shared_data: Path) -> None:
    estimator = NB201Table(data_dir=str(shared_data), devices=[])
    toy = ToySpace().sample(np.random.default_rng(0))
    with pytest.raises(InvalidArchError, match="1<-0"):
        estimator.estimate(toy, Context(space=ToySpace()))
    bad = NB201Space().parse(ROW1).to_dict() | {"1<-0": "conv_7x7"}
    with pytest.raises(InvalidArchError, match="not a cell"):
        estimator.estimate(Arch(bad), _ctx())


def test_lookup_speed_and_runner(shared_data: Path) -> None:
    estimator = registry.create("estimator", "nb201_table", {"data_dir": str(shared_data), "devices": ["pixel3"]})
    space, ctx = NB201Space(), _ctx()
    archs = [space.sample(np.random.default_rng(i)) for i in range(2000)]
    estimator.estimate(archs[0], ctx)
    started = time.perf_counter()
    for arch in archs:
        estimator.estimate(arch, ctx)
    assert time.perf_counter() - started < 0.5, "lookups must take microseconds"
    result = run_search(space, registry.create("strategy", "random", {}), estimator, SingleMetric("val_acc"), budget=30)
    assert len(result.trials) == 30 and all(t.ok for t in result.trials)
    assert {"val_acc", "test_acc", "latency_pixel3"} <= set(result.trials[0].metrics)
