"""Differentiable NAS: the ArchParameters protocol, the strategies, the dnas estimator, resume."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset
from torch.utils.flop_counter import FlopCounterMode

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
from nasforge.strategies.differentiable import GDAS, PCDARTS, PDARTS
from nasforge.supernet.dnas import unrolled_gradient
from nasforge.supernet.mixed import LayerChoice, Supernet
from nasforge.supernet.partial import PartialChannelChoice, PartialChannelOp
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


class PartialOneEdgeSpace(OneEdgeSpace):
    """:class:`OneEdgeSpace` on inputs of 10 channels of 1x1, with a partial-channel supernet."""

    def supernet(self, partial_channels: int = 1) -> Supernet:
        candidates = {"zero": Scale(0.0), "negate": Scale(-1.0), "copy": Scale(1.0)}
        choice = PartialChannelChoice("op", candidates, partial_channels)
        return Supernet(nn.Sequential(choice, nn.Flatten()))


def partial_data(k: int, n: int = 512) -> DataSplits:
    """Labels are the argmax of the ``copy`` path's output (its channels shuffled by PC-DARTS)."""
    x = torch.randn(n, 10, 1, 1, generator=torch.Generator().manual_seed(0))
    data = TensorDataset(x, PartialChannelOp(nn.Identity(), k)(x).flatten(1).argmax(dim=1))
    return DataSplits("synthetic", data, data, data, in_channels=10, num_classes=10, input_size=(1, 1))


def test_pcdarts_moves_alphas_towards_the_better_op() -> None:
    torch.manual_seed(0)
    space = PartialOneEdgeSpace()
    arch = strategy("pcdarts", space, epochs=10, lr=0.05, warmup=0, partial_channels=2)
    estimator = DifferentiableSupernetEstimator(space, batch_size=32)
    ctx = Context(space=space, data=partial_data(2), arch_parameters=arch)
    before = arch.snapshot()["probs"]["op"][2]
    for _ in range(3):
        estimator.update(ctx)
    probs = arch.snapshot()["probs"]["op"]
    assert isinstance(estimator.supernet.network[0], PartialChannelChoice)  # type: ignore[index, union-attr]
    assert probs[2] > before and probs[2] == max(probs), probs
    assert arch.ask() == Arch({"op": "copy"})  # type: ignore[attr-defined]
    scores = {op: estimator.estimate(Arch({"op": op}), ctx).metrics["val_acc"] for op in space.values}
    assert scores["copy"] == max(scores.values()) > scores["negate"], scores  # single path on the supernet


def test_pcdarts_warmup_leaves_the_alphas_alone() -> None:
    space = PartialOneEdgeSpace()
    arch = strategy("pcdarts", space, epochs=4, lr=0.05, warmup=1, partial_channels=2)
    estimator = DifferentiableSupernetEstimator(space, batch_size=32)
    ctx = Context(space=space, data=partial_data(2), arch_parameters=arch)
    before = [t.detach().clone() for t in arch.parameters()]
    estimator.update(ctx)
    assert all(torch.equal(a, b) for a, b in zip(before, arch.parameters(), strict=True))
    estimator.update(ctx)
    assert not torch.equal(before[0], arch.parameters()[0])


def test_pcdarts_normalises_edges_per_node_and_derives_by_the_products() -> None:
    darts = DartsSpace(C=8, layers=3, supernet_C=8, supernet_layers=3)
    pc = strategy("pcdarts", darts, epochs=2)
    assert isinstance(pc, PCDARTS) and pc.partial_channels == 4 and pc.warmup == 15 and pc.lr == 6e-4
    assert len(pc.parameters()) == 2 * 14 + 2 * 4  # alphas per edge, betas per node
    weights = pc.weights("weights")
    for node in range(2, 6):
        total = sum(float(weights[f"normal.{node}<-{j}"].sum()) for j in range(node))
        assert total == pytest.approx(1.0)
    with torch.no_grad():
        for alpha in pc.alphas.values():
            alpha.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]))  # the same op everywhere
        pc._betas["normal.2"].copy_(torch.tensor([-5.0, 5.0]))
        pc._betas["normal.5"].copy_(torch.tensor([0.0, 0.0, 3.0, 3.0, 0.0]))
    arch = pc.ask()
    assert (arch["normal.n5.in0"], arch["normal.n5.in1"]) == (2, 3)  # the betas pick the edges
    assert arch["normal.n2.in0"] == 0  # a node of two inputs keeps both


def _step_cost(space: SearchSpace, name: str) -> tuple[float, int]:
    """FLOPs of one forward and backward of the weighted supernet, and the bytes autograd saves."""
    torch.manual_seed(0)
    arch = strategy(name, space)
    supernet = space.supernet(partial_channels=arch.partial_channels)  # type: ignore[attr-defined]
    supernet.set_weights(arch.weights("arch"))
    saved = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    x = torch.randn(16, 1, 8, 8)
    with FlopCounterMode(display=False) as flops, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        supernet(x).sum().backward()
    return flops.get_total_flops(), saved


@pytest.mark.parametrize(
    "space",
    [
        NB201Space(C=8, N=2, in_channels=1),
        DartsSpace(C=8, layers=3, supernet_C=8, supernet_layers=3, in_channels=1, input_size=(8, 8)),
    ],
    ids=["nb201", "darts"],
)
def test_a_pcdarts_step_costs_less_than_a_darts_step(space: SearchSpace) -> None:
    torch.set_num_threads(1)
    darts_flops, darts_saved = _step_cost(space, "darts")
    pc_flops, pc_saved = _step_cost(space, "pcdarts")
    assert pc_flops < 0.5 * darts_flops, (pc_flops, darts_flops)
    assert pc_saved < 0.75 * darts_saved, (pc_saved, darts_saved)


def test_partial_channel_paths_export_exactly() -> None:
    space = DartsSpace(C=8, layers=3, supernet_C=8, supernet_layers=3, in_channels=1, input_size=(8, 8))
    supernet = space.supernet(partial_channels=4)
    arch = space.sample(np.random.default_rng(0))
    child = supernet.export(arch).eval()
    supernet.activate(arch)
    supernet.eval()
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(supernet(x), child(x))
    with pytest.raises(ValueError, match="partial_channels=3 must divide"):
        NB201Space(C=8, N=1).supernet(partial_channels=3)
    estimator = DifferentiableSupernetEstimator(OneEdgeSpace())
    arch_params = strategy("pcdarts", OneEdgeSpace())
    with pytest.raises(ConfigError, match="builds no supernet with option.s. partial_channels"):
        estimator.update(Context(space=OneEdgeSpace(), data=synthetic_data(), arch_parameters=arch_params))


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


def _run(
    run_dir: Path,
    trials: int,
    *,
    resume: bool = False,
    data: DataSplits,
    space: SearchSpace | None = None,
    strategy: tuple[str, dict[str, object]] = ("gdas", {"epochs": 3}),
) -> list[tuple[Arch, dict[str, float]]]:
    space = space or NB201Space(C=4, N=1, in_channels=1)
    runner = Runner(
        space,
        registry.create("strategy", *strategy),
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


def _tiny_darts() -> DartsSpace:
    return DartsSpace(C=8, layers=3, supernet_C=8, supernet_layers=3, in_channels=1, input_size=(8, 8))


PDARTS_OPTIONS: dict[str, object] = {"epochs": 4, "layers": [1, 2], "keep": [3], "dropout": [0.2, 0.5], "warmup": 1}


def test_pdarts_deepens_the_supernet_and_drops_the_weakest_ops_per_stage() -> None:
    torch.set_num_threads(1)
    space = _tiny_darts()
    pd = strategy("pdarts", space, **PDARTS_OPTIONS)
    assert isinstance(pd, PDARTS)
    estimator = DifferentiableSupernetEstimator(space, batch_size=64)
    ctx = Context(space=space, data=_digits(), arch_parameters=pd)
    assert pd.op_dropout()["skip_connect"] == pytest.approx(0.2 * 1 / 2)  # warm-up: linear decay
    estimator.update(ctx)
    first = estimator.supernet
    assert first is not None and len(first.network.cells) == 1
    assert pd.op_dropout()["skip_connect"] == pytest.approx(0.2)  # after warm-up: 0.2 * exp(-0.2 * 0)
    estimator.update(ctx)
    assert estimator.supernet is first and pd.stage == 0
    before = pd.edge_weights()
    estimator.update(ctx)  # stage 2: 2 cells, fresh weights, 3 ops per edge, none dropped first
    assert pd.stage == 1 and len(estimator.supernet.network.cells) == 2  # type: ignore[union-attr]
    for name, kept in pd.kept.items():
        ranked = sorted(range(1, 8), key=lambda i: -float(before[name][i]))
        assert kept == sorted(ranked[:3]), name
    assert all(len(w.nonzero()) == 3 for w in pd.weights("weights").values())
    assert pd.paths() == pd.kept
    layer = next(m for _, m in estimator.supernet.choice_modules() if isinstance(m, LayerChoice))  # type: ignore[union-attr]
    assert layer.dropout == {layer.values.index("skip_connect"): pytest.approx(0.5 / 2)}


def test_pdarts_derives_at_most_max_skip_skip_connections() -> None:
    space = _tiny_darts()
    pd = strategy("pdarts", space, **PDARTS_OPTIONS)
    skip = space.edge_choices()["normal.2<-0"].candidates.index("skip_connect")
    with torch.no_grad():
        for alpha in pd.parameters():
            alpha.zero_()
            alpha[skip] = 5.0
    arch = pd.ask()  # type: ignore[attr-defined]
    skips = sum(1 for k, v in arch.items() if k.startswith("normal.") and v == "skip_connect")
    assert skips == 2 and any(v == "skip_connect" for k, v in arch.items() if k.startswith("reduce."))


def test_resume_of_a_pdarts_search_across_a_stage_is_exact(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data, space, options = _digits(), _tiny_darts(), ("pdarts", PDARTS_OPTIONS)
    reference = _run(tmp_path / "ref", 5, data=data, space=space, strategy=options)
    _run(tmp_path / "a", 3, data=data, space=space, strategy=options)  # checkpoint after the stage's last epoch
    assert _run(tmp_path / "a", 5, resume=True, data=data, space=space, strategy=options) == reference
    with pytest.raises(ConfigError, match="layers"):
        _run(tmp_path / "b", 2, data=data, strategy=options)  # NB201 has no depth option


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


def test_plot_command_draws_a_pcdarts_search_and_prints_its_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    from nasforge.cli import main
    from nasforge.plots import cell_text

    torch.set_num_threads(1)
    space = NB201Space(C=4, N=1, in_channels=1)
    runner = Runner(
        space,
        registry.create("strategy", "pcdarts", {"epochs": 2, "warmup": 0}),
        DifferentiableSupernetEstimator(space, bn_batches=1, eval_batches=1),
        SingleMetric("val_acc"),
        budget=Budget(trials=3),
        seed=0,
        run_dir=tmp_path,
        data=_digits(),
    )
    try:
        final = max(runner.run().trials, key=lambda t: t.number).arch
    finally:
        runner.store.close()
    assert "edge_weight" in json.loads((tmp_path / ALPHAS_FILE).read_text().splitlines()[-1])
    assert main(["plot", str(tmp_path), "-o", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "derived after trial 2" in out and cell_text(final) in out
    assert main(["plot", str(tmp_path / "missing")]) == 2
