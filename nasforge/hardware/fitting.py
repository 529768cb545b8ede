"""Fit a cost model on measured whole networks: what ``nasforge costmodel fit|eval`` runs.

A latency table gives each arch a sequence of blocks and their isolated costs
(:class:`~nasforge.hardware.costmodels.BlockFeatures`); a few children measured end to end are the
targets; any cost model of :mod:`nasforge.hardware.costmodels` learns the map, and is then judged
on children it has not seen, next to the table's naive sum.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.atomic import atomic_write_bytes
from nasforge.core.errors import CheckpointError
from nasforge.core.space import SearchSpace
from nasforge.hardware.costmodels import BlockFeatures, CostModel, evaluate, make_cost_model
from nasforge.hardware.profile import LatencyTable, measure_model

__all__ = ["input_context", "table_features", "distinct_archs", "measure_children", "FittedCostModel", "fit_cost_model"]


def input_context(shape: Sequence[int]) -> dict[str, Any]:
    """Space options implied by an input shape ``(C, H, W)`` or ``(N, C, H, W)``."""
    channels, height, width = list(shape)[-3:]
    return {"in_channels": int(channels), "input_size": (int(height), int(width))}


def table_features(table: LatencyTable, archs: Sequence[Arch]) -> BlockFeatures:
    """Each arch's block ids and isolated costs, in the table's layer order."""
    vocabulary = {key: i for i, key in enumerate(sorted(table.blocks))}
    keys = [table.keys(arch) for arch in archs]
    tokens = np.array([[vocabulary[k] for k in row] for row in keys], dtype=np.int64)
    costs = np.array([[table.blocks[k] for k in row] for row in keys], dtype=np.float64)
    return BlockFeatures(tokens, costs, len(vocabulary))


def distinct_archs(space: SearchSpace, n: int, *, seed: int, exclude: Iterable[Arch] = ()) -> list[Arch]:
    """``n`` distinct archs drawn uniformly from ``space``, none of them in ``exclude`` (fewer if
    the space holds fewer)."""
    rng = np.random.default_rng(seed)
    archs: list[Arch] = []
    seen: set[Arch] = set(exclude)
    while len(archs) < n:
        arch = space.sample_unseen(rng, seen)
        if arch is None:
            break
        seen.add(arch)
        archs.append(arch)
    return archs


def measure_children(
    space: SearchSpace,
    table: LatencyTable,
    n: int,
    *,
    seed: int,
    warmup: int = 3,
    repeats: int = 10,
    exclude: Iterable[Arch] = (),
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Arch], np.ndarray]:
    """``n`` distinct sampled archs outside ``exclude`` and their end-to-end latency (ms), measured
    as the table's blocks were: its device and CPU threads. ``progress(done, total)`` is called
    after each child."""
    archs = distinct_archs(space, n, seed=seed, exclude=exclude)
    device = str(table.device.get("device", "cpu"))
    measured = []
    for done, arch in enumerate(archs, start=1):
        measured.append(measure_model(space.build(arch), table.input_shape, device, warmup, repeats, threads=table.threads))
        if progress is not None:
            progress(done, len(archs))
    return archs, np.asarray(measured, dtype=np.float64)


@dataclass
class FittedCostModel:
    """A cost model with what it was fitted for: the space, its options, the table, and the archs
    it was fitted on (``fit_archs``, so that an evaluation can leave them out)."""

    name: str
    model: CostModel
    space_type: str
    space_options: dict[str, Any]
    table: LatencyTable
    fit_scores: dict[str, float] = field(default_factory=dict)
    fit_archs: list[Arch] = field(default_factory=list)

    def space(self) -> SearchSpace:
        """The space the model was fitted on."""
        return registry.create("space", self.space_type, self.space_options, context=input_context(self.table.input_shape))

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Predicted latency (ms) of each arch."""
        return self.model.predict(table_features(self.table, archs))

    def save(self, path: str | Path) -> None:
        """Write atomically (pickle: the model classes are ours and numpy/torch-backed)."""
        atomic_write_bytes(Path(path), pickle.dumps(self))

    @classmethod
    def load(cls, path: str | Path) -> FittedCostModel:
        """Read a model written by :meth:`save`."""
        try:
            loaded = pickle.loads(Path(path).read_bytes())
        except FileNotFoundError:
            raise CheckpointError(f"cost model file {path} does not exist") from None
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable cost model ({type(exc).__name__})") from None
        if not isinstance(loaded, cls):
            raise CheckpointError(f"{path} holds a {type(loaded).__name__}, not a fitted cost model")
        loaded.__dict__.setdefault("fit_archs", [])  # saved before the field existed
        return loaded


def fit_cost_model(
    space_type: str,
    space_options: dict[str, Any],
    table: LatencyTable,
    model_name: str,
    n_archs: int,
    *,
    seed: int = 0,
    warmup: int = 3,
    repeats: int = 10,
    progress: Callable[[int, int], None] | None = None,
) -> FittedCostModel:
    """Measure ``n_archs`` children end to end (``progress(done, total)`` after each) and fit
    ``model_name`` on them."""
    space = registry.create("space", space_type, space_options, context=input_context(table.input_shape), where="--space")
    model = make_cost_model(model_name, seed=seed)
    archs, measured = measure_children(
        space, table, n_archs, seed=seed, warmup=warmup, repeats=repeats, progress=progress
    )
    features = table_features(table, archs)
    model.fit(features, measured)
    fitted = FittedCostModel(model_name, model, space_type, dict(space_options), table, fit_archs=archs)
    fitted.fit_scores = evaluate(measured, model.predict(features))
    return fitted
