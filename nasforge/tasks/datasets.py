"""Image-classification datasets: digits (bundled), MNIST, Fashion-MNIST, CIFAR-10/100, custom.

Every dataset loads into in-memory float tensors (``TensorDataset``), so training iterates over
tensors rather than a ``DataLoader``. The pipeline is the same for all of them:

1. read the official training and test sets (never downloading: a missing file is a
   :class:`~nasforge.core.errors.DataNotFoundError` naming it, where it was looked for and how to
   get it);
2. ``train_limit`` / ``test_limit`` keep a stratified subset of each, drawn with a fixed seed so
   that every run sees the same images whatever its seed;
3. ``valid_fraction`` of the (limited) training set becomes the validation split, stratified and
   drawn with the run seed; search trains on ``train`` and scores on ``valid``, ``test`` is for
   final reporting only;
4. pixels are scaled to [0, 1] (8-bit images) and, with ``normalize``, standardised per channel
   with the mean and standard deviation of the ``train`` split.

To add a dataset, subclass :class:`ImageSource`, implement :meth:`ImageSource.read` and register
it (see :class:`CustomDataset` for a plugin example).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import importlib.util
import pickle
import sys
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
from pydantic import Field, PositiveInt
from torch.utils.data import Dataset, TensorDataset

from nasforge.core.errors import ConfigError, NasforgeError
from nasforge.core.paths import find_data_dir
from nasforge.core.registry import register
from nasforge.tasks.splits import DatasetSource, DataSplits

__all__ = [
    "RawImages",
    "ImageSource",
    "Digits",
    "Mnist",
    "FashionMnist",
    "Cifar10",
    "Cifar100",
    "CustomDataset",
    "read_idx",
    "stratified_subset",
    "load_factory",
    "SUBSET_SEED",
]

#: A fraction strictly between 0 and 1.
Fraction = Annotated[float, Field(gt=0, lt=1)]

#: Seed of the subsets kept by ``train_limit``/``test_limit`` and of the digits test split: fixed,
#: so that runs with different seeds share the same images and differ only in the valid split.
SUBSET_SEED = 20240601


@dataclass(frozen=True)
class RawImages:
    """A dataset's official splits as read from disk, before limiting, splitting and scaling.

    Images are ``N x C x H x W`` arrays (``uint8`` images are scaled by 1/255 later, anything
    else is taken as is); labels are integers in ``[0, num_classes)``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def stratified_subset(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``n`` samples in which every class keeps its share of ``labels``.

    Class quotas are rounded by largest remainder, so exactly ``n`` indices come back.
    """
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (n / len(labels))
    take = np.floor(quota).astype(np.int64)
    shortfall = n - int(take.sum())
    take[np.argsort(take - quota, kind="stable")[:shortfall]] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(picked))


def _limit(x: np.ndarray, y: np.ndarray, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    if limit is None or limit >= len(y):
        return x, y
    keep = stratified_subset(y, limit, np.random.default_rng(SUBSET_SEED))
    return x[keep], y[keep]


def _to_float(x: np.ndarray) -> torch.Tensor:
    images = torch.from_numpy(np.ascontiguousarray(x)).float()
    return images / 255.0 if x.dtype == np.uint8 else images


class ImageSource(DatasetSource):
    """Base of the in-memory image datasets: the common options and the split pipeline.

    Args:
        data_dir: folder holding the files; None searches the data roots
            (``$NASFORGE_DATA_DIR``, ``$NASFORGE_HOME/data``) and the dataset's usual places.
        valid_fraction: share of the training set held out as the validation split.
        train_limit: keep at most this many training images (before the valid split), as a
            stratified subset fixed across seeds; for quick runs.
        test_limit: the same for the test set.
        normalize: standardise each channel with the train split's mean and std.
    """

    #: The name the splits carry (``DataSplits.name``).
    name: ClassVar[str] = "images"

    #: Tiny settings for the conformance suite (nasforge.testing.suites).
    conformance_options: ClassVar[dict[str, Any]] = {"train_limit": 200, "test_limit": 50}

    def __init__(
        self,
        data_dir: str | None = None,
        valid_fraction: Fraction = 0.2,
        train_limit: PositiveInt | None = None,
        test_limit: PositiveInt | None = None,
        normalize: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.valid_fraction = valid_fraction
        self.train_limit = train_limit
        self.test_limit = test_limit
        self.normalize = normalize

    @abstractmethod
    def read(self) -> RawImages:
        """The official training and test sets, whole (limits are applied by :meth:`load`)."""

    def load(self, seed: int) -> DataSplits:
        """Read, limit, split (seeded by ``seed``), scale and normalise; see the module doc."""
        raw = self.read()
        x_train, y_train = _limit(raw.x_train, raw.y_train, self.train_limit)
        x_test, y_test = _limit(raw.x_test, raw.y_test, self.test_limit)
        n_valid = round(self.valid_fraction * len(y_train))
        if not 0 < n_valid < len(y_train):
            raise ConfigError(
                f"dataset {self.name!r}: valid_fraction={self.valid_fraction} of {len(y_train)} training "
                "images leaves the train or the valid split empty; raise train_limit or change valid_fraction"
            )
        valid_idx = stratified_subset(y_train, n_valid, np.random.default_rng(seed))
        train_mask = np.ones(len(y_train), dtype=bool)
        train_mask[valid_idx] = False

        images = {
            "train": _to_float(x_train[train_mask]),
            "valid": _to_float(x_train[valid_idx]),
            "test": _to_float(x_test),
        }
        labels = {
            "train": torch.from_numpy(y_train[train_mask].astype(np.int64)),
            "valid": torch.from_numpy(y_train[valid_idx].astype(np.int64)),
            "test": torch.from_numpy(y_test.astype(np.int64)),
        }
        mean = std = None
        if self.normalize:
            mean = images["train"].mean(dim=(0, 2, 3), keepdim=True)
            std = images["train"].std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
            images = {split: (x - mean) / std for split, x in images.items()}
        _, channels, height, width = images["train"].shape
        return DataSplits(
            name=self.name,
            train=TensorDataset(images["train"], labels["train"]),
            valid=TensorDataset(images["valid"], labels["valid"]),
            test=TensorDataset(images["test"], labels["test"]),
            in_channels=int(channels),
            num_classes=raw.num_classes,
            input_size=(int(height), int(width)),
            mean=None if mean is None else tuple(mean.flatten().tolist()),
            std=None if std is None else tuple(std.flatten().tolist()),
        )


@register("dataset", "digits")
class Digits(ImageSource):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes): needs no files.

    The default dataset, so a search runs on a fresh machine. It has no official test set, so a
    stratified 20% (359 images) is carved off as ``test`` with the fixed :data:`SUBSET_SEED`,
    whatever the run seed; the remaining 1,438 images are the training set. ``data_dir`` is
    accepted for uniformity with the other datasets and not used.
    """

    name = "digits"

    #: Share of the 1,797 images kept aside as the test set.
    test_fraction: ClassVar[float] = 0.2

    def read(self) -> RawImages:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = (bunch.images / 16.0).astype(np.float32)[:, None]  # pixel values are 0..16
        y = bunch.target.astype(np.int64)
        test_idx = stratified_subset(y, round(self.test_fraction * len(y)), np.random.default_rng(SUBSET_SEED))
        train_mask = np.ones(len(y), dtype=bool)
        train_mask[test_idx] = False
        return RawImages(x[train_mask], y[train_mask], x[test_idx], y[test_idx], num_classes=10)


# IDX (MNIST's format): two zero bytes, a type code, the number of dimensions, then one
# big-endian uint32 per dimension and the values, big-endian.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or ``.gz``) into an array of its shape and type.

    Raises:
        NasforgeError: the file is not IDX, or is truncated or corrupt (the message names it).
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb") as f:
            content = f.read()
    except (OSError, EOFError) as exc:  # gzip raises BadGzipFile (an OSError) or EOFError
        raise NasforgeError(f"cannot read IDX file {path}: {exc}") from None
    if len(content) < 4 or content[:2] != b"\0\0" or content[2] not in _IDX_TYPES:
        raise NasforgeError(f"{path} is not an IDX file (bad magic number {content[:4].hex() or 'none'})")
    ndim = content[3]
    header = 4 + 4 * ndim
    if len(content) < header:
        raise NasforgeError(f"IDX file {path} is truncated: its header is cut short")
    shape = tuple(int(d) for d in np.frombuffer(content, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[content[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(content) - header != expected:
        raise NasforgeError(
            f"IDX file {path} is truncated or corrupt: shape {shape} needs {expected} bytes of data, "
            f"found {len(content) - header}"
        )
    return np.frombuffer(content, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


class _IdxSource(ImageSource):
    """MNIST-format datasets: four IDX files, plain or gzipped, 28x28 grey images."""

    subdir: ClassVar[str]
    extra_dirs: ClassVar[tuple[str, ...]] = ()
    how_to_get: ClassVar[str]
    files: ClassVar[tuple[str, ...]] = (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    )

    def read(self) -> RawImages:
        folder = find_data_dir(
            self.subdir,
            [(name, name + ".gz") for name in self.files],
            data_dir=self.data_dir,
            extra=self.extra_dirs,
            how_to_get=self.how_to_get,
        )
        arrays = []
        for name in self.files:
            path = folder / name if (folder / name).is_file() else folder / (name + ".gz")
            arrays.append(read_idx(path))
        x_train, y_train, x_test, y_test = arrays
        for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise NasforgeError(
                    f"{self.name} {split} files in {folder} do not match: images {x.shape}, labels {y.shape}"
                )
        return RawImages(x_train[:, None], y_train, x_test[:, None], y_test, num_classes=10)


@register("dataset", "mnist")
class Mnist(_IdxSource):
    """MNIST handwritten digits (60,000 train / 10,000 test, 1x28x28, 10 classes) from IDX files.

    Looked for in ``data_dir``, else in ``mnist/`` under each data root.
    """

    name = "mnist"
    subdir = "mnist"
    how_to_get = (
        "MNIST's four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) are published by Yann LeCun and "
        "mirrored widely; copy them into a folder named mnist under a data root."
    )


@register("dataset", "fashion_mnist")
class FashionMnist(_IdxSource):
    """Zalando's Fashion-MNIST (60,000 train / 10,000 test, 1x28x28, 10 classes) from IDX files.

    Looked for in ``data_dir``, else in ``fashion-mnist/`` under each data root, then in
    ``/usr/share/datasets/fashion-mnist`` where Debian's ``dataset-fashion-mnist`` puts them.
    """

    name = "fashion_mnist"
    subdir = "fashion-mnist"
    extra_dirs = ("/usr/share/datasets/fashion-mnist",)
    how_to_get = "On Debian or Ubuntu, `apt-get install dataset-fashion-mnist` installs them."


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only, so a data file cannot run code."""

    allowed: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR batch")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _RestrictedUnpickler(f, encoding="bytes").load()
        # The official batches were pickled by Python 2 (bytes keys); re-pickled copies have str keys.
        data = np.asarray(batch[b"data"] if b"data" in batch else batch["data"], dtype=np.uint8)
        key = label_key.encode() if label_key.encode() in batch else label_key
        labels = np.asarray(batch[key], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as exc:
        raise NasforgeError(f"cannot read CIFAR batch {path}: {type(exc).__name__}: {exc}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise NasforgeError(f"CIFAR batch {path} is corrupt: data {data.shape}, labels {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


class _CifarSource(ImageSource):
    """CIFAR's "python version": pickled batches of 3x32x32 images."""

    subdir: ClassVar[str]
    train_files: ClassVar[tuple[str, ...]]
    test_file: ClassVar[str]
    label_key: ClassVar[str]
    num_classes: ClassVar[int]
    how_to_get: ClassVar[str]

    def read(self) -> RawImages:
        folder = find_data_dir(
            self.subdir,
            [*self.train_files, self.test_file],
            data_dir=self.data_dir,
            how_to_get=self.how_to_get,
        )
        train = [_read_cifar_batch(folder / name, self.label_key) for name in self.train_files]
        x_test, y_test = _read_cifar_batch(folder / self.test_file, self.label_key)
        x_train = np.concatenate([x for x, _ in train])
        y_train = np.concatenate([y for _, y in train])
        return RawImages(x_train, y_train, x_test, y_test, num_classes=self.num_classes)


@register("dataset", "cifar10")
class Cifar10(_CifarSource):
    """CIFAR-10 (50,000 train / 10,000 test, 3x32x32, 10 classes) from ``cifar-10-batches-py/``."""

    name = "cifar10"
    subdir = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_file = "test_batch"
    label_key = "labels"
    num_classes = 10
    how_to_get = (
        "Unpack the python version of CIFAR-10 (cifar-10-python.tar.gz from Alex Krizhevsky's CIFAR page) "
        "under a data root; it unpacks to cifar-10-batches-py/."
    )


@register("dataset", "cifar100")
class Cifar100(_CifarSource):
    """CIFAR-100 (50,000 train / 10,000 test, 3x32x32, 100 fine classes) from ``cifar-100-python/``."""

    name = "cifar100"
    subdir = "cifar-100-python"
    train_files = ("train",)
    test_file = "test"
    label_key = "fine_labels"
    num_classes = 100
    how_to_get = (
        "Unpack the python version of CIFAR-100 (cifar-100-python.tar.gz from Alex Krizhevsky's CIFAR page) "
        "under a data root; it unpacks to cifar-100-python/."
    )


def load_factory(spec: str, what: str = "factory") -> Callable[..., Any]:
    """The function named by ``"package.module:function"`` or ``"path/to/file.py:function"``;
    module paths resolve from the working directory too (as ``python -m`` would). ``what`` names
    the option in error messages (``factory``, ``criterion``, ``metric``).

    Raises:
        ConfigError: the spec is malformed, or its module or function cannot be loaded.
    """
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise ConfigError(f"{what} {spec!r} must look like 'package.module:function' or 'path/to/file.py:function'")
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
            path = Path(module_part).resolve()
            if not path.is_file():
                raise ConfigError(f"{what} {spec!r}: file {path} does not exist")
            name = f"nasforge_factory_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_part)
    except ConfigError:
        raise
    except Exception as exc:  # any import-time failure of user code
        raise ConfigError(f"{what} {spec!r}: cannot import {module_part}: {type(exc).__name__}: {exc}") from exc
    finally:
        if added:
            sys.path.remove(cwd)
    function = getattr(module, attr, None)
    if not callable(function):
        raise ConfigError(f"{what} {spec!r}: {module_part} has no function {attr!r}")
    return function


def _materialise(dataset: Dataset, where: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    try:
        size = len(dataset)  # type: ignore[arg-type]
    except Exception as exc:  # user code
        raise NasforgeError(f"{where}: len() raised {type(exc).__name__}: {exc}") from None
    for i in range(size):
        try:
            item = dataset[i]
        except Exception as exc:  # user code: name the item and the error, not a traceback
            raise NasforgeError(f"{where}[{i}] raised {type(exc).__name__}: {exc}") from None
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise NasforgeError(f"{where}[{i}] must be an (image, label) pair, got {type(item).__name__}")
        try:
            image = torch.as_tensor(item[0], dtype=torch.float32)
            label = int(item[1])
        except (TypeError, ValueError, RuntimeError) as exc:
            raise NasforgeError(
                f"{where}[{i}] must be an (image tensor or array, int label) pair: {type(exc).__name__}: {exc}"
            ) from None
        if image.ndim == 2:  # a grey H x W image
            image = image[None]
        if image.ndim != 3 or (images and image.shape != images[0].shape):
            expected = f"{tuple(images[0].shape)} like item 0" if images else "C x H x W"
            raise NasforgeError(f"{where}[{i}] has image shape {tuple(image.shape)}; expected {expected}")
        images.append(image)
        labels.append(label)
    if not images:
        raise NasforgeError(f"{where} is empty")
    return torch.stack(images).numpy(), np.asarray(labels, dtype=np.int64)


@register("dataset", "custom")
class CustomDataset(ImageSource):
    """Any ``torch.utils.data.Dataset`` of ``(image, label)`` pairs, through a factory function.

    ``factory`` (``"package.module:function"`` or ``"path/to/file.py:function"``) returns
    ``(train_dataset, test_dataset)``, each yielding ``(C x H x W tensor, int label)``; when
    ``data_dir`` is set it is passed as ``factory(data_dir=...)``. Channels, input size and the
    number of classes (max label + 1, unless ``num_classes`` is given) come from the data. Both
    datasets are read whole into memory once, then limited, split and normalised like any other.

    For data that should not go through this path (too large for memory, or needing options of
    its own), a plugin registers a dataset of its own, e.g. in ``$NASFORGE_HOME/plugins/mine.py``::

        import numpy as np
        from nasforge.core.registry import register
        from nasforge.tasks.datasets import ImageSource, RawImages

        @register("dataset", "my_scans")
        class MyScans(ImageSource):
            name = "my_scans"

            def read(self) -> RawImages:
                data = np.load(f"{self.data_dir}/scans.npz")  # N x C x H x W uint8, labels
                return RawImages(data["x_train"], data["y_train"], data["x_test"], data["y_test"], num_classes=4)

    (Subclass :class:`~nasforge.tasks.splits.DatasetSource` directly to return any ``Dataset``.)
    """

    #: Values for the required options that `nasforge gen-config` writes as a template.
    example_options: ClassVar[dict[str, Any]] = {"factory": "my_data.py:datasets"}

    name = "custom"

    #: Tiny settings for the conformance suite (nasforge.testing.suites).
    conformance_options: ClassVar[dict[str, Any]] = {"factory": "nasforge.testing.suites:tiny_datasets"}

    def __init__(
        self,
        factory: str,
        num_classes: PositiveInt | None = None,
        data_dir: str | None = None,
        valid_fraction: Fraction = 0.2,
        train_limit: PositiveInt | None = None,
        test_limit: PositiveInt | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__(data_dir, valid_fraction, train_limit, test_limit, normalize)
        self.factory = factory
        self.num_classes = num_classes

    def read(self) -> RawImages:
        function = load_factory(self.factory)
        try:
            made = function(data_dir=self.data_dir) if self.data_dir is not None else function()
        except Exception as exc:  # user code: say whose error it is, without a traceback
            raise NasforgeError(f"data factory {self.factory!r} raised {type(exc).__name__}: {exc}") from None
        if not isinstance(made, (tuple, list)) or len(made) != 2:
            raise NasforgeError(f"factory {self.factory!r} must return (train_dataset, test_dataset)")
        x_train, y_train = _materialise(made[0], f"{self.factory} train dataset")
        x_test, y_test = _materialise(made[1], f"{self.factory} test dataset")
        if x_train.shape[1:] != x_test.shape[1:]:
            raise NasforgeError(
                f"factory {self.factory!r}: train images are {x_train.shape[1:]}, test images {x_test.shape[1:]}"
            )
        low = min(y_train.min(), y_test.min())
        high = int(max(y_train.max(), y_test.max()))
        if low < 0:
            raise NasforgeError(f"factory {self.factory!r}: labels must be >= 0, found {low}")
        num_classes = self.num_classes if self.num_classes is not None else high + 1
        if high >= num_classes:
            raise ConfigError(f"dataset 'custom': num_classes={num_classes} but the data has label {high}")
        return RawImages(x_train, y_train, x_test, y_test, num_classes=num_classes)
