"""Datasets: digits, IDX (MNIST / Fashion-MNIST), CIFAR pickles, custom factories, options."""

from __future__ import annotations

import gzip
import pickle
import struct
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from nasforge.core.errors import ConfigError, DataNotFoundError, NasforgeError
from nasforge.core.registry import create, names
from nasforge.tasks.datasets import read_idx, stratified_subset
from nasforge.tasks.splits import DataSplits

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.reshape(len(x), -1)}


def test_all_datasets_registered() -> None:
    assert {"digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "custom"} <= set(names("dataset"))


# ---------------------------------------------------------------- digits


def test_digits_shapes_and_split_sizes() -> None:
    data = create("dataset", "digits").load(0)
    assert isinstance(data, DataSplits)
    assert (data.in_channels, data.num_classes, data.input_size) == (1, 10, (8, 8))
    assert (len(data.train), len(data.valid), len(data.test)) == (1150, 288, 359)
    image, label = data.train[0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32 and label.dtype == torch.int64
    x = data.train.tensors[0]
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-2
    # Stratified: every class has its share of the valid split (about 28-29 each).
    counts = torch.bincount(data.valid.tensors[1], minlength=10)
    assert int(counts.min()) >= 26 and int(counts.max()) <= 31


def test_digits_splits_are_disjoint_and_cover_the_data() -> None:
    from sklearn.datasets import load_digits

    data = create("dataset", "digits", {"normalize": False}).load(3)
    splits = [rows(d.tensors[0]) for d in (data.train, data.valid, data.test)]
    assert sum(len(s) for s in splits) == 1797  # digits' images are all distinct
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    original = (load_digits().images / 16.0).astype(np.float32)
    assert set().union(*splits) == {img.tobytes() for img in original}


def test_digits_is_deterministic_and_the_seed_moves_only_the_valid_split() -> None:
    source = create("dataset", "digits")
    a, b, c = source.load(0), source.load(0), source.load(1)
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(a, split).tensors[0], getattr(b, split).tensors[0])
        assert torch.equal(getattr(a, split).tensors[1], getattr(b, split).tensors[1])
    assert not torch.equal(a.valid.tensors[1], c.valid.tensors[1])
    raw = create("dataset", "digits", {"normalize": False})
    assert torch.equal(raw.load(0).test.tensors[0], raw.load(1).test.tensors[0])


def test_limits_keep_a_stratified_subset_fixed_across_seeds() -> None:
    source = create(
        "dataset", "digits", {"train_limit": 200, "test_limit": 50, "valid_fraction": 0.25, "normalize": False}
    )
    a, b = source.load(0), source.load(1)
    assert (len(a.train), len(a.valid), len(a.test)) == (150, 50, 50)
    assert rows(a.train.tensors[0]) | rows(a.valid.tensors[0]) == rows(b.train.tensors[0]) | rows(b.valid.tensors[0])
    assert torch.bincount(a.valid.tensors[1], minlength=10).tolist() == [5] * 10


def test_stratified_subset_keeps_shares_and_exact_size() -> None:
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    picked = stratified_subset(labels, 33, np.random.default_rng(0))
    assert len(picked) == 33 and len(set(picked.tolist())) == 33
    assert np.bincount(labels[picked]).tolist() == [16, 10, 7]  # quotas 16.5, 9.9, 6.6: largest remainders round up


# ---------------------------------------------------------------- options


def test_bad_valid_fraction_is_named() -> None:
    with pytest.raises(ConfigError, match="valid_fraction"):
        create("dataset", "digits", {"valid_fraction": 1.5})
    with pytest.raises(ConfigError, match="train_limit"):
        create("dataset", "fashion_mnist", {"train_limit": 0})
    with pytest.raises(ConfigError, match="valid_frac"):
        create("dataset", "cifar10", {"valid_frac": 0.1})


def test_valid_fraction_that_empties_a_split_is_an_error() -> None:
    with pytest.raises(ConfigError, match="valid_fraction"):
        create("dataset", "digits", {"train_limit": 3, "valid_fraction": 0.1}).load(0)


# ---------------------------------------------------------------- IDX


def write_idx(path: Path, array: np.ndarray) -> None:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    payload = (
        bytes([0, 0, codes[array.dtype], array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + big_endian.tobytes()
    )
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist(folder: Path, *, gz: bool, n_train: int = 60, n_test: int = 20) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    y_train = (np.arange(n_train) % 10).astype(np.uint8)
    y_test = (np.arange(n_test) % 10).astype(np.uint8)
    suffix = ".gz" if gz else ""
    for name, array in zip(IDX_FILES, (x_train, y_train, x_test, y_test), strict=True):
        write_idx(folder / (name + suffix), array)
    return x_train, x_test


@pytest.mark.parametrize("gz", [False, True])
def test_idx_dataset_plain_and_gz(tmp_path: Path, gz: bool) -> None:
    x_train, x_test = write_mnist(tmp_path / "mnist", gz=gz)
    data = create("dataset", "mnist", {"data_dir": str(tmp_path), "normalize": False, "valid_fraction": 0.5}).load(0)
    assert (data.in_channels, data.num_classes, data.input_size) == (1, 10, (28, 28))
    assert (len(data.train), len(data.valid), len(data.test)) == (30, 30, 20)
    assert torch.allclose(data.test.tensors[0][:, 0], torch.from_numpy(x_test).float() / 255)
    assert rows(data.train.tensors[0]) | rows(data.valid.tensors[0]) == rows(
        torch.from_numpy(x_train[:, None]).float() / 255
    )


def test_read_idx_other_types(tmp_path: Path) -> None:
    values = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    write_idx(tmp_path / "ints", values)
    assert np.array_equal(read_idx(tmp_path / "ints"), values)
    floats = np.linspace(0, 1, 5, dtype=np.float32)
    write_idx(tmp_path / "floats.gz", floats)
    assert np.array_equal(read_idx(tmp_path / "floats.gz"), floats)


def test_truncated_idx_names_the_file(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(NasforgeError, match="t10k-images-idx3-ubyte is truncated"):
        create("dataset", "fashion_mnist", {"data_dir": str(tmp_path)}).load(0)


def test_truncated_gzip_and_bad_magic_name_the_file(tmp_path: Path) -> None:
    write_idx(tmp_path / "a.gz", np.zeros((10, 28, 28), dtype=np.uint8))
    (tmp_path / "a.gz").write_bytes((tmp_path / "a.gz").read_bytes()[:20])
    with pytest.raises(NasforgeError, match="a.gz"):
        read_idx(tmp_path / "a.gz")
    (tmp_path / "b").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(NasforgeError, match="b is not an IDX file"):
        read_idx(tmp_path / "b")


def test_missing_idx_files_say_what_where_and_how(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError) as info:
        create("dataset", "fashion_mnist", {"data_dir": str(tmp_path)}).load(0)
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte" in message and str(tmp_path) in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_fashion_mnist_from_shared_data(shared_data: Path) -> None:
    folder = shared_data / "fashion-mnist"
    data = create("dataset", "fashion_mnist", {"data_dir": str(folder), "train_limit": 1000, "test_limit": 200}).load(0)
    assert (data.in_channels, data.num_classes, data.input_size) == (1, 10, (28, 28))
    assert (len(data.train), len(data.valid), len(data.test)) == (800, 200, 200)
    assert torch.bincount(data.test.tensors[1], minlength=10).tolist() == [20] * 10


# ---------------------------------------------------------------- CIFAR


def write_cifar_batch(path: Path, n: int, label_key: bytes, num_classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch = {
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: [int(v) for v in np.arange(n) % num_classes],
        b"batch_label": b"synthetic",
    }
    path.write_bytes(pickle.dumps(batch, protocol=2))


def test_cifar10_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        write_cifar_batch(folder / f"data_batch_{i}", 20, b"labels", 10, seed=i)
    write_cifar_batch(folder / "test_batch", 30, b"labels", 10, seed=0)
    data = create("dataset", "cifar10", {"data_dir": str(tmp_path)}).load(0)
    assert (data.in_channels, data.num_classes, data.input_size) == (3, 10, (32, 32))
    assert (len(data.train), len(data.valid), len(data.test)) == (80, 20, 30)


def test_cifar100_batches_with_str_keys(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name, n in (("train", 200), ("test", 100)):
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": list(np.arange(n) % 100)}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    data = create("dataset", "cifar100", {"data_dir": str(tmp_path), "valid_fraction": 0.5}).load(0)
    assert (data.in_channels, data.num_classes, len(data.train), len(data.test)) == (3, 100, 100, 100)


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    (tmp_path / "train").write_bytes(pickle.dumps({b"data": Evil()}))
    (tmp_path / "test").write_bytes(b"")
    with pytest.raises(NasforgeError, match="refusing to load builtins.print"):
        create("dataset", "cifar100", {"data_dir": str(tmp_path)}).load(0)


def test_missing_cifar_names_the_files(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="data_batch_1.*cifar-10-python.tar.gz"):
        create("dataset", "cifar10", {"data_dir": str(tmp_path)}).load(0)


# ---------------------------------------------------------------- custom

FACTORY = textwrap.dedent(
    """
    import torch
    from torch.utils.data import Dataset

    class Blobs(Dataset):
        def __init__(self, n, offset):
            self.n, self.offset = n, offset

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            label = i % 3
            return torch.full((2, 5, 6), float(label + self.offset)), label

    def make(data_dir=None):
        return Blobs(30, 0.0), Blobs(9, 0.5)
    """
)


def test_custom_factory_from_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "blobs_plugin_mod.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = create("dataset", "custom", {"factory": "blobs_plugin_mod:make", "valid_fraction": 0.2}).load(0)
    assert (data.in_channels, data.num_classes, data.input_size) == (2, 3, (5, 6))
    assert (len(data.train), len(data.valid), len(data.test)) == (24, 6, 9)


def test_custom_factory_from_file_with_num_classes(tmp_path: Path) -> None:
    path = tmp_path / "my_data.py"
    path.write_text(FACTORY)
    options = {"factory": f"{path}:make", "num_classes": 5, "normalize": False, "data_dir": str(tmp_path)}
    data = create("dataset", "custom", options).load(0)
    assert data.num_classes == 5
    assert sorted(set(data.test.tensors[0].flatten().tolist())) == [0.5, 1.5, 2.5]
    with pytest.raises(ConfigError, match="num_classes=2"):
        create("dataset", "custom", {**options, "num_classes": 2}).load(0)


def test_custom_factory_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must look like"):
        create("dataset", "custom", {"factory": "no_colon"}).load(0)
    with pytest.raises(ConfigError, match="cannot import"):
        create("dataset", "custom", {"factory": "surely_not_a_module_xyz:make"}).load(0)
    with pytest.raises(ConfigError, match="does not exist"):
        create("dataset", "custom", {"factory": f"{tmp_path}/absent.py:make"}).load(0)
    (tmp_path / "f.py").write_text("def other():\n    pass\n")
    with pytest.raises(ConfigError, match="no function 'make'"):
        create("dataset", "custom", {"factory": f"{tmp_path}/f.py:make"}).load(0)
