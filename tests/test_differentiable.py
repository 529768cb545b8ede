"""Differentiable NAS: the ArchParameters protocol, the strategies, the dnas estimator, resume."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from nasforge.core import registry
from nasforge.core.arch import Arch, Choice
from nasforge.core.differentiable import ArchParameters
from nasforge.core.errors import ConfigError
from nasforge.core.estimator import Context
from nasforge.core.space import SearchSpace
from nasforge.estimators.dnas import ALPHAS_FILE, DifferentiableSupernetEstimator
from nasforge.objectives.basic import SingleMetric
from nasforge.runner.loop import CHECKPOINT_FILE, Budget, Runner
from nasforge.spaces.darts import DartsSpace
from nasforge.spaces.nb201 import NB201Space
from nasforge.strategies.differentiable import GDAS
from nasforge.supernet.dnas import unrolled_gradient
from nasforge.supernet.mixed import LayerChoice, Supernet
from nasforge.tasks.data import DataSplits
from nasforge.testing import ToySpace

METHODS = ("darts", "gdas", "snas", "proxyless")


class Scale(nn.Module):
    """``s * x`` with a learnable ``s``: the candidates of the synthetic task."""

    def __init__(self, s: float) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.tensor(s))

    def forward(self, x: Tensor) -> Tensor:
        return self.s * x


class OneEdgeSpace(SearchSpace):
    """One edge whose ``copy`` candidate solves the task (labels are the argmax of the input)."""

    values = ("zero", "negate", "copy")

    def choices(self) -> Mapping[str, Choice]:
        return {"op": Choice("op", self.values)}

    def build(self, arch: Arch) -> nn.Module:
        return self.supernet().export(arch)

    def supernet(self) -> Supernet:
        return Supernet(
            nn.Sequential(LayerChoice("op", {"zero": Scale(0.0), "negate": Scale(-1.0), "copy": Scale(1.0)}))
        )


def synthetic_data(n: int = 512) -> DataSplits:
    x = torch.randn(n, 10, generator=torch.Generator().manual_seed(0))
    data = TensorDataset(x, x.argmax(dim=1))
    return DataSplits("synthetic", data, data, data, in_channels=1, num_classes=10, input_size=(1, 10))


def strategy(name: str, space: SearchSpace, seed: int = 0, **options: object) -> ArchParameters:
    made = registry.create("strategy", name, options)
    made.setup(space, SingleMetric("val_acc"), seed=seed)
    assert isinstance(made, ArchParameters)
    return made


@pytest.mark.parametrize("name", METHODS)
def test_search_epochs_move_alphas_towards_the_better_op(name: str) -> None:
    torch.manual_seed(0)
    space = OneEdgeSpace()
    arch = strategy(name, space, epochs=10, lr=0.05)  # a large architecture lr: a few steps suffice
    estimator = DifferentiableSupernetEstimator(space, batch_size=32)
    ctx = Context(space=space, data=synthetic_data(), arch_parameters=arch)
    before = arch.snapshot()["probs"]["op"][2]
    for _ in range(3):
        estimator.update(ctx)
    probs = arch.snapshot()["probs"]["op"]
    assert arch.epoch == 3
    assert probs[2] > before and probs[2] == max(probs), probs
    assert arch.ask() == Arch({"op": "copy"})  # type: ignore[attr-defined]


def test_gdas_forward_is_hard_one_hot_and_gradients_reach_every_alpha() -> None:
    space = NB201Space(C=4, N=1, in_channels=1)
    gdas = strategy("gdas", space, epochs=4)
    assert isinstance(gdas, GDAS) and gdas.tau == 10.0
    weights = gdas.weights("arch")
    for name, w in weights.items():
        assert sorted(w.detach().tolist()) == [0.0, 0.0, 0.0, 0.0, 1.0]
        assert gdas.paths()[name] == [int(w.detach().argmax())]
    cost = torch.randn(5, generator=torch.Generator().manual_seed(1))
    sum((w * cost).sum() for w in weights.values()).backward()  # type: ignore[union-attr]
    for alpha in gdas.parameters():
        assert alpha.grad is not None and bool((alpha.grad != 0).all())
    gdas.epoch = 3
    assert gdas.tau == pytest.approx(0.1)  # annealed linearly 10 -> 0.1 over the epochs


def test_second_order_gradient_matches_the_exact_unrolled_gradient() -> None:
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    alpha = torch.randn(3, dtype=torch.float64, requires_grad=True)
    xt, xv = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 4, dtype=torch.float64)
    before = w.detach().clone()
    xi = 0.1

    def loss(weight: Tensor, x: Tensor) -> Tensor:
        return ((torch.softmax(alpha, 0) @ torch.tanh(weight @ x.T)) ** 2).mean() + (weight**2).sum() * alpha.pow(
            2
        ).sum()

    approx = unrolled_gradient([w], [alpha], lambda: loss(w, xt), lambda: loss(w, xv), xi, eps=1e-4)[0]

    def unrolled(a: Tensor) -> Tensor:  # L_val(w - xi * grad_w L_train(w, a), a), exactly
        nonlocal alpha
        saved, alpha = alpha, a
        (g,) = torch.autograd.grad(loss(w, xt), w, create_graph=True)
        value = loss(w - xi * g, xv)
        alpha = saved
        return value

    (exact,) = torch.autograd.grad(unrolled(alpha), alpha)
    assert torch.equal(w.detach(), before)  # the virtual step and the finite differences are undone
    assert torch.allclose(approx, exact, rtol=1e-5, atol=1e-8), (approx, exact)


def test_second_order_search_moves_alphas_towards_the_better_op() -> None:
    torch.manual_seed(0)
    space = OneEdgeSpace()
    arch = strategy("darts", space, epochs=3, lr=0.05)
    estimator = DifferentiableSupernetEstimator(space, order=2, batch_size=32)
    ctx = Context(space=space, data=synthetic_data(), arch_parameters=arch)
    estimator.update(ctx)
    assert arch.snapshot()["probs"]["op"][2] == max(arch.snapshot()["probs"]["op"])


def test_derivation_gives_valid_archs() -> None:
    darts = DartsSpace(C=8, layers=3, supernet_C=4, supernet_layers=3)
    arch = strategy("darts", darts, epochs=2)
    derived = arch.ask()  # type: ignore[attr-defined]
    darts.validate(derived)
    with torch.no_grad():
        for alpha in arch.parameters():
            alpha.copy_(torch.tensor([5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]))  # none strongest, then op 6
    derived = arch.ask()  # type: ignore[attr-defined]
    assert {v for k, v in derived.items() if ".op" in k} == {darts.ops[5]}  # `none` is never kept
    nb201 = NB201Space(C=4, N=1)
    arch = strategy("gdas", nb201, epochs=2)
    with torch.no_grad():
        for i, alpha in enumerate(arch.parameters()):
            alpha.zero_()
            alpha[i % 5] = 1.0
    assert arch.ask() == nb201.validate(Arch({e: nb201.ops[i % 5] for i, e in enumerate(nb201.choices())}))  # type: ignore[attr-defined]


def test_ask_returns_epochs_plus_one_archs() -> None:
    arch = strategy("darts", NB201Space(C=4, N=1), epochs=2)
    asked = [arch.ask() for _ in range(4)]  # type: ignore[attr-defined]
    assert [a is None for a in asked] == [False, False, False, True]


def test_unsupported_space_and_strategy_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"space 'ToySpace' has no supernet\(\)"):
        DifferentiableSupernetEstimator(ToySpace())
    space = OneEdgeSpace()
    estimator = DifferentiableSupernetEstimator(space)
    with pytest.raises(ConfigError, match="differentiable strategy; use one of: .*darts"):
        estimator.update(Context(space=space, data=synthetic_data()))


def _digits() -> DataSplits:
    return registry.create("dataset", "digits", {}).load(0)


def _run(run_dir: Path, trials: int, *, resume: bool = False, data: DataSplits) -> list[tuple[Arch, dict[str, float]]]:
    space = NB201Space(C=4, N=1, in_channels=1)
    runner = Runner(
        space,
        registry.create("strategy", "gdas", {"epochs": 3}),
        DifferentiableSupernetEstimator(space, bn_batches=2),
        SingleMetric("val_acc"),
        budget=Budget(trials=trials),
        seed=7,
        run_dir=run_dir,
        data=data,
        checkpoint_seconds=1e9,
    )
    try:
        result = runner.run(resume=resume)
    finally:
        runner.store.close()
    return [(t.arch, t.metrics) for t in result.trials]


def test_resume_of_a_differentiable_search_is_exact(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = _digits()
    reference = _run(tmp_path / "ref", 4, data=data)
    assert len(reference) == 4 and (tmp_path / "ref" / ALPHAS_FILE).read_text().count("\n") == 3
    _run(tmp_path / "a", 2, data=data)  # checkpoint after trial 2; trials 3-4 run after resume
    assert _run(tmp_path / "a", 4, resume=True, data=data) == reference
    _run(tmp_path / "b", 3, data=data)
    (tmp_path / "b" / CHECKPOINT_FILE).unlink()  # no checkpoint: every trial replayed from the epoch files
    assert _run(tmp_path / "b", 4, resume=True, data=data) == reference


def test_plots_draw_alphas_and_the_derived_cell(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from nasforge.plots import cell_text, plot_alphas

    records = [
        {"epoch": e, "candidates": {"1<-0": ["none", "skip"]}, "probs": {"1<-0": [0.5 - e / 10, 0.5 + e / 10]}}
        for e in (1, 2, 3)
    ]
    (tmp_path / ALPHAS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    assert plot_alphas(tmp_path, tmp_path / "alphas.png").stat().st_size > 0
    text = cell_text(Arch({"1<-0": "skip_connect", "2<-0": "none", "2<-1": "nor_conv_3x3"}))
    assert text == "cell:\n  node 1 <- 0 (skip_connect)\n  node 2 <- 1 (nor_conv_3x3)"
