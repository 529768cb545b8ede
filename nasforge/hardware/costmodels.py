"""Latency cost models: from an arch's blocks to its latency on one device.

An arch is described to a cost model by :class:`BlockFeatures`: for each arch, the sequence of
its blocks as token ids (which primitive sits at each position) and each block's cost from a
per-block table (measured latency, or a proxy such as FLOPs when nothing was measured). Cost
models are registry components of kind ``cost_model`` (``@register("cost_model", NAME)``, so a
plugin can add one; :func:`make_cost_model` builds one by name). The built-in ones:

- ``naive_sum``: the sum of the block costs, no fitting (a latency lookup table).
- ``linear_sum``: ``a * sum + b`` (a scale and a fixed overhead).
- ``linear_sum_count``: ``a * sum + c * blocks + b`` (adds a per-block overhead, ``blocks``
  being the number of blocks that do work: a cost above 2% of the median block cost, so that
  measured identity or zero blocks, a microsecond each, do not count).
- ``mlp``: an MLP ensemble on the vector of per-block costs.
- ``lstm``: an LSTM over the sequence of (one-hot token, cost) block features, as aw_nas'
  latency predictor.
- ``gbt``: gradient-boosted trees on the per-block costs and the one-hot tokens.

Example:
    >>> model = make_cost_model("linear_sum").fit(features, y)  # doctest: +SKIP
    >>> evaluate(y_test, model.predict(test_features))  # doctest: +SKIP
    {'rmse': 0.01, 'spearman': 0.99, 'within_10pct': 1.0}
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from nasforge.core import registry
from nasforge.core.component import Component
from nasforge.core.errors import ConfigError
from nasforge.core.registry import register
from nasforge.predictors.models import GradientBoostedTrees, MLPEnsemble

__all__ = ["BlockFeatures", "CostModel", "make_cost_model", "evaluate"]


@dataclass(frozen=True)
class BlockFeatures:
    """The blocks of ``n`` archs of ``L`` positions each.

    Attributes:
        tokens: ``(n, L)`` int, the block id at each position (``0 <= id < n_tokens``).
        costs: ``(n, L)`` float, each block's cost from a per-block table (ms, or a proxy).
        n_tokens: how many distinct block ids there are.
    """

    tokens: np.ndarray
    costs: np.ndarray
    n_tokens: int

    def __post_init__(self) -> None:
        if self.tokens.shape != self.costs.shape or self.tokens.ndim != 2:
            raise ValueError(f"tokens {self.tokens.shape} and costs {self.costs.shape} must be equal (n, L) shapes")

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, rows: np.ndarray | slice) -> BlockFeatures:
        return BlockFeatures(self.tokens[rows], self.costs[rows], self.n_tokens)

    def onehot(self) -> np.ndarray:
        """``(n, L * n_tokens)`` one-hot (position, token) matrix."""
        n, length = self.tokens.shape
        out = np.zeros((n, length, self.n_tokens), dtype=np.float64)
        out[np.arange(n)[:, None], np.arange(length)[None, :], self.tokens] = 1.0
        return out.reshape(n, -1)


class CostModel(Component, ABC):
    """Fits latencies ``y`` (ms) of archs described by :class:`BlockFeatures`; predicts others."""

    @abstractmethod
    def fit(self, features: BlockFeatures, y: np.ndarray) -> CostModel:
        """Fit on ``len(features)`` archs and their measured latencies."""

    @abstractmethod
    def predict(self, features: BlockFeatures) -> np.ndarray:
        """Predicted latency of each arch."""


def _lstsq(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with an intercept column appended; returns the coefficients."""
    design = np.column_stack([X, np.ones(len(X))])
    coef, *_ = np.linalg.lstsq(design, np.asarray(y, dtype=np.float64), rcond=None)
    return coef


@register("cost_model", "naive_sum")
class NaiveSum(CostModel):
    """The sum of the per-block costs: a latency lookup table, nothing fitted."""

    def fit(self, features: BlockFeatures, y: np.ndarray) -> NaiveSum:
        return self

    def predict(self, features: BlockFeatures) -> np.ndarray:
        return features.costs.sum(axis=1)


@register("cost_model", "linear_sum")
class LinearSum(CostModel):
    """``a * sum(costs) + b``: corrects a table's scale and adds a fixed overhead."""

    def __init__(self) -> None:
        self.coef = np.array([1.0, 0.0])

    def _design(self, features: BlockFeatures) -> np.ndarray:
        return features.costs.sum(axis=1, keepdims=True)

    def fit(self, features: BlockFeatures, y: np.ndarray) -> LinearSum:
        self.coef = _lstsq(self._design(features), y)
        return self

    def predict(self, features: BlockFeatures) -> np.ndarray:
        return self._design(features) @ self.coef[:-1] + self.coef[-1]


@register("cost_model", "linear_sum_count")
class LinearSumCount(LinearSum):
    """``a * sum(costs) + c * blocks + b``, ``blocks`` counting the blocks that do work.

    A block does work when its cost exceeds 2% of the median positive block cost of the
    training archs (fixed at :meth:`fit`): a measured identity costs about a microsecond, not 0.
    """

    def __init__(self) -> None:
        self.coef = np.array([1.0, 0.0, 0.0])
        self.floor = 0.0

    def _design(self, features: BlockFeatures) -> np.ndarray:
        return np.column_stack([features.costs.sum(axis=1), (features.costs > self.floor).sum(axis=1)])

    def fit(self, features: BlockFeatures, y: np.ndarray) -> LinearSumCount:
        positive = features.costs[features.costs > 0]
        self.floor = 0.02 * float(np.median(positive)) if positive.size else 0.0
        super().fit(features, y)
        return self


class _Standardised(CostModel):
    """Base of learned models: standardises inputs by the training set's mean and spread."""

    def __init__(self) -> None:
        self._mean = np.zeros(1)
        self._scale = np.ones(1)

    @abstractmethod
    def _inputs(self, features: BlockFeatures) -> np.ndarray:
        """The raw input matrix."""

    def _scaled(self, features: BlockFeatures, fit: bool = False) -> np.ndarray:
        X = self._inputs(features)
        if fit:
            self._mean = X.mean(axis=0)
            self._scale = np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
        return (X - self._mean) / self._scale


@register("cost_model", "mlp")
class MLPCost(_Standardised):
    """An MLP ensemble (nasforge's ``mlp_ensemble`` predictor) on the per-block cost vector."""

    def __init__(self, seed: int = 0, steps: int = 300) -> None:
        super().__init__()
        self.model = MLPEnsemble(members=3, hidden=32, steps=steps, bootstrap=False, seed=seed)

    def _inputs(self, features: BlockFeatures) -> np.ndarray:
        return features.costs

    def fit(self, features: BlockFeatures, y: np.ndarray) -> MLPCost:
        self.model.fit(self._scaled(features, fit=True), y)
        return self

    def predict(self, features: BlockFeatures) -> np.ndarray:
        return self.model.predict(self._scaled(features))


@register("cost_model", "gbt")
class GBTCost(_Standardised):
    """Gradient-boosted trees (nasforge's ``gbt`` predictor) on costs and one-hot tokens."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.model = GradientBoostedTrees(max_iter=200, min_samples_leaf=3, seed=seed)

    def _inputs(self, features: BlockFeatures) -> np.ndarray:
        return np.column_stack([features.costs, features.costs.sum(axis=1), features.onehot()])

    def fit(self, features: BlockFeatures, y: np.ndarray) -> GBTCost:
        self.model.fit(self._inputs(features), y)
        return self

    def predict(self, features: BlockFeatures) -> np.ndarray:
        return self.model.predict(self._inputs(features))


@register("cost_model", "lstm")
class LSTMCost(CostModel):
    """An LSTM over the block sequence; each step sees the one-hot token and the block's cost.

    The last hidden state goes through a linear head to the (standardised) latency, as aw_nas'
    LSTM latency predictor. Trained full-batch with Adam.
    """

    def __init__(self, hidden: int = 32, steps: int = 300, lr: float = 1e-2, seed: int = 0) -> None:
        self.hidden = hidden
        self.steps = steps
        self.lr = lr
        self.seed = seed
        self._net: object | None = None
        self._cost_scale = 1.0
        self._y = (0.0, 1.0)

    def _sequence(self, features: BlockFeatures) -> object:
        import torch

        onehot = np.eye(features.n_tokens, dtype=np.float32)[features.tokens]
        costs = (features.costs / self._cost_scale).astype(np.float32)[..., None]
        return torch.from_numpy(np.concatenate([onehot, costs], axis=2))

    def fit(self, features: BlockFeatures, y: np.ndarray) -> LSTMCost:
        import torch
        from torch import nn

        torch.manual_seed(self.seed)
        self._cost_scale = float(np.abs(features.costs).max()) or 1.0
        y = np.asarray(y, dtype=np.float64)
        self._y = (float(y.mean()), float(y.std()) or 1.0)
        lstm = nn.LSTM(features.n_tokens + 1, self.hidden, batch_first=True)
        head = nn.Linear(self.hidden, 1)
        net = nn.ModuleDict({"lstm": lstm, "head": head})
        x = self._sequence(features)
        target = torch.tensor((y - self._y[0]) / self._y[1], dtype=torch.float32)
        optimiser = torch.optim.Adam(net.parameters(), lr=self.lr)
        for _ in range(self.steps):
            optimiser.zero_grad()
            loss = ((self._forward(net, x) - target) ** 2).mean()
            loss.backward()
            optimiser.step()
        self._net = net
        return self

    @staticmethod
    def _forward(net: object, x: object) -> object:
        _, (h, _) = net["lstm"](x)  # type: ignore[index]
        return net["head"](h[-1]).squeeze(1)  # type: ignore[index]

    def predict(self, features: BlockFeatures) -> np.ndarray:
        import torch

        if self._net is None:
            raise RuntimeError("LSTMCost.predict before fit")
        with torch.no_grad():
            out = self._forward(self._net, self._sequence(features)).numpy()  # type: ignore[union-attr]
        return out.astype(np.float64) * self._y[1] + self._y[0]


def make_cost_model(name: str, seed: int = 0) -> CostModel:
    """A fresh registered cost model ``name``, given ``seed`` when its constructor takes one.

    Raises:
        ConfigError: an unknown name (the message lists the registered cost models), or a
            registered target that does not build a :class:`CostModel`.
    """
    options = {"seed": seed} if "seed" in registry.signature_defaults("cost_model", name) else {}
    model = registry.create("cost_model", name, options, where=f"cost model {name!r}")
    if not isinstance(model, CostModel):
        raise ConfigError(f"cost model {name!r} built a {type(model).__name__}, not a CostModel")
    return model


def evaluate(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, Spearman rank correlation and the share of predictions within ±10% of the truth."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    rho = float(spearmanr(y_true, y_pred).statistic) if np.ptp(y_pred) > 0 else 0.0
    return {
        "rmse": float(np.sqrt(np.mean((y_true - y_pred) ** 2))),
        "spearman": rho,
        "within_10pct": float(np.mean(np.abs(y_pred - y_true) <= 0.1 * np.abs(y_true))),
    }
