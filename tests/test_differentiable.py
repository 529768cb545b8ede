"""Differentiable NAS: the ArchParameters protocol, the strategies, the dnas estimator, resume."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_task import OneEdgeSpace, Scale, strategy, synthetic_data
from torch import Tensor, nn
from torch.utils.data import TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError
from nasforge.core.estimator import Context
from nasforge.core.space import SearchSpace
from nasforge.estimators.dnas import ALPHAS_FILE, DifferentiableSupernetEstimator
from nasforge.nn.mixed import MixedOp, Supernet
from nasforge.nn.partial import PartialChannelChoice, PartialChannelOp
from nasforge.objectives.basic import SingleMetric
from nasforge.oneshot.bilevel import unrolled_gradient
from nasforge.oneshot.trainer import as_tensors
from nasforge.runner.loop import CHECKPOINT_FILE, Budget, Runner
from nasforge.spaces.darts_cells import DartsSpace
from nasforge.spaces.nb201 import NB201Space
from nasforge.strategies.gdas import GDAS
from nasforge.strategies.pcdarts import PCDARTS
from nasforge.strategies.pdarts import PDARTS
from nasforge.strategies.proxyless import ProxylessNAS
from nasforge.tasks.splits import DataSplits
from nasforge.testing import ToySpace

METHODS = ("darts", "gdas", "snas", "proxyless")


@pytest.mark.parametrize("name", METHODS)
def test_search_epochs_move_alphas_towards_the_better_op(name: str) -> None:
    torch.manual_seed(0)
    space = OneEdgeSpace()
    arch = strategy(name, space, epochs=10, adam={"lr": 0.05})  # a large architecture lr: a few steps suffice
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

    supernet_options = frozenset({"partial_channels"})

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
    arch = strategy("pcdarts", space, epochs=10, adam={"lr": 0.05}, warmup=0, partial_channels=2)
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
    arch = strategy("pcdarts", space, epochs=4, adam={"lr": 0.05}, warmup=1, partial_channels=2)
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
    assert isinstance(pc, PCDARTS) and pc.partial_channels == 4 and pc.warmup == 15 and pc.adam.lr == 6e-4
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
    arch = strategy("darts", space, epochs=3, adam={"lr": 0.05})
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
    assert pd.weight_schedule() == (0, 2)  # the weights' cosine restarts with each stage
    estimator.update(ctx)  # stage 2: 2 cells, fresh weights, the 3 strongest ops per edge (none too)
    assert estimator.optimizer.param_groups[0]["lr"] == estimator.lr  # type: ignore[union-attr]
    assert pd.stage == 1 and len(estimator.supernet.network.cells) == 2  # type: ignore[union-attr]
    for name, kept in pd.kept.items():
        ranked = sorted(range(8), key=lambda i: -float(before[name][i]))
        assert kept == sorted(ranked[:3]), name
    assert all(len(w.nonzero()) == 3 for w in pd.weights("weights").values())
    assert pd.paths() == pd.kept
    layer = next(m for _, m in estimator.supernet.choice_modules() if isinstance(m, MixedOp))  # type: ignore[union-attr]
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
    with pytest.raises(ConfigError, match="pdarts.*derive from edge weights.*spaces with it: darts"):
        _run(tmp_path / "b", 2, data=data, strategy=options)  # NB201 has no DARTS edges (nor a depth option)


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


# -- FBNet -------------------------------------------------------------------------------------


class SameOutputSpace(OneEdgeSpace):
    """Three candidates computing the same thing at different costs: only latency tells them apart."""

    values = ("cheap", "mid", "dear")

    def supernet(self) -> Supernet:
        return Supernet(nn.Sequential(MixedOp("op", {v: Scale(1.0) for v in self.values})))


def latency_table(path: Path, costs: Mapping[str, float], overhead: float = 0.0) -> Path:
    """A one-layer latency table (as `nasforge profile` writes them) for the ``op`` choice."""
    from nasforge.hardware.profile import LatencyTable

    blocks = {f"{value}|1x10|1x10": cost for value, cost in costs.items()}
    layers = [{"choice": "op", "blocks": {value: f"{value}|1x10|1x10" for value in costs}}]
    LatencyTable({"device": "cpu"}, [1, 10], layers, blocks, overhead_ms=overhead).save(path)
    return path


def _fbnet_search(space: SearchSpace, table: Path, epochs: int = 3) -> list[float]:
    torch.manual_seed(0)
    arch = strategy("fbnet", space, epochs=10, warmup=0.0, latency_table=str(table), adam={"lr": 0.05})
    estimator = DifferentiableSupernetEstimator(space, batch_size=32)
    ctx = Context(space=space, data=synthetic_data(), arch_parameters=arch)
    for _ in range(epochs):
        estimator.update(ctx)
    return arch.snapshot()["probs"]["op"]


def test_fbnet_moves_towards_cheaper_blocks_when_latency_dominates(tmp_path: Path) -> None:
    probs = _fbnet_search(SameOutputSpace(), latency_table(tmp_path / "t.json", {"cheap": 2, "mid": 20, "dear": 200}))
    assert probs[0] > probs[1] > probs[2], probs


def test_fbnet_moves_towards_better_blocks_when_cross_entropy_dominates(tmp_path: Path) -> None:
    probs = _fbnet_search(OneEdgeSpace(), latency_table(tmp_path / "t.json", dict.fromkeys(OneEdgeSpace.values, 5.0)))
    assert probs[2] == max(probs) and probs[2] > 1 / 3, probs


def test_fbnet_latency_loss_is_the_tables_expectation_and_differentiable(tmp_path: Path) -> None:
    costs = {"zero": 3.0, "negate": 7.0, "copy": 11.0}
    table = latency_table(tmp_path / "t.json", costs, overhead=2.0)
    fb = strategy("fbnet", OneEdgeSpace(), latency_table=str(table))
    assert fb.arch_fraction == 0.2 and fb.tau == 5.0 and fb.warmup_epochs == 9 and fb.adam.lr == 0.01  # type: ignore[attr-defined]
    fb.epoch = 1  # type: ignore[misc]
    assert fb.tau == pytest.approx(5.0 * np.exp(-0.045))  # type: ignore[attr-defined]
    with torch.no_grad():
        fb.parameters()[0].copy_(torch.tensor([0.3, -0.2, 0.5]))
    probs = torch.softmax(fb.parameters()[0].detach(), 0)
    expected = fb.expected_latency().detach()  # type: ignore[attr-defined]
    assert float(expected) == pytest.approx(2.0 + float((probs * torch.tensor([3.0, 7.0, 11.0])).sum()), rel=1e-6)
    one_hot = {"op": torch.tensor([0.0, 0.0, 1.0])}
    assert float(fb.expected_latency(one_hot)) == pytest.approx(13.0)  # type: ignore[attr-defined]
    mask = fb.weights("arch")["op"]  # a Gumbel-softmax sample: the loss prices this mixture
    ce = torch.tensor(1.7)
    loss = fb.loss(ce)
    lat = 2.0 + float((mask.detach() * torch.tensor([3.0, 7.0, 11.0])).sum())
    assert float(loss.detach()) == pytest.approx(1.7 * 0.2 * np.log(lat) ** 0.6, rel=1e-5)
    loss.backward()
    grad = fb.parameters()[0].grad
    assert grad is not None and bool((grad != 0).all())


def test_fbnet_rejects_tables_and_spaces_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        strategy("fbnet", OneEdgeSpace(), latency_table=str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="edge weights"):
        strategy("fbnet", _tiny_darts())
    fb = strategy(
        "fbnet", OneEdgeSpace(), latency_table=str(latency_table(tmp_path / "t.json", dict.fromkeys("abc", 0.5)))
    )
    with pytest.raises(ConfigError):  # the table's candidates are not the space's
        fb.expected_latency()  # type: ignore[attr-defined]
    fb = strategy(
        "fbnet",
        OneEdgeSpace(),
        latency_table=str(latency_table(tmp_path / "u.json", dict.fromkeys(OneEdgeSpace.values, 0.5))),
    )
    with pytest.raises(ConfigError, match="latency_unit below"):
        fb.expected_latency()  # type: ignore[attr-defined]


# -- CDARTS ------------------------------------------------------------------------------------


def test_cdarts_architecture_step_descends_the_cyclic_loss() -> None:
    torch.manual_seed(0)
    space = OneEdgeSpace()
    cd = strategy("cdarts", space, epochs=4, warmup=0, adam={"lr": 0.01})
    estimator = DifferentiableSupernetEstimator(space, batch_size=32)
    data = synthetic_data()
    ctx = Context(space=space, data=data, arch_parameters=cd)
    estimator._ensure(ctx, cd)
    assert estimator.evaluator is not None and estimator.evaluator is not estimator.supernet
    estimator.evaluator.activate(cd.derived())  # type: ignore[attr-defined]
    x, y = data.train.tensors  # type: ignore[attr-defined]
    batch = (x[:64], y[:64])
    alpha = cd.parameters()[0]

    def cyclic() -> Tensor:
        return cd.cyclic_loss(estimator._logits(cd, "arch", batch[0]), estimator.evaluator(batch[0]), batch[1])  # type: ignore[attr-defined, misc]

    (grad,) = torch.autograd.grad(cyclic(), [alpha])
    before = alpha.detach().clone()
    evaluator_before = [p.detach().clone() for p in estimator.evaluator.parameters()]
    estimator._arch_step(cd, batch, batch, 0.025)
    moved = alpha.detach() - before
    assert float((moved * grad).sum()) < 0  # down the loss' gradient
    assert any(not torch.equal(a, b) for a, b in zip(evaluator_before, estimator.evaluator.parameters(), strict=True))


def test_cdarts_search_prefers_the_better_op_and_trains_its_evaluation_network() -> None:
    torch.manual_seed(0)
    space = OneEdgeSpace()
    cd = strategy("cdarts", space, epochs=6, warmup=1, regular_ops=["negate"], adam={"lr": 0.05})
    estimator = DifferentiableSupernetEstimator(space, batch_size=32)
    ctx = Context(space=space, data=synthetic_data(), arch_parameters=cd)
    start = cd.snapshot()["probs"]["op"]
    estimator.update(ctx)  # warm-up: the alphas stay
    assert cd.snapshot()["probs"]["op"] == start
    assert cd.regularisation().item() > 0  # type: ignore[attr-defined]
    for _ in range(3):
        estimator.update(ctx)
    probs = cd.snapshot()["probs"]["op"]
    assert probs[2] == max(probs), probs
    assert cd.regularisation().item() == 0  # type: ignore[attr-defined]  # decayed over 20% of the 5 joint epochs
    assert "evaluator" in estimator.state_dict()
    with pytest.raises(ConfigError, match="order 2"):
        DifferentiableSupernetEstimator(space, order=2).update(ctx)


# -- ProxylessNAS' one path --------------------------------------------------------------------


def test_proxyless_runs_only_the_sampled_candidates_and_keeps_one_path_in_memory() -> None:
    torch.manual_seed(0)
    space = NB201Space(C=4, N=1, in_channels=1)
    px = strategy("proxyless", space, epochs=2)
    estimator = DifferentiableSupernetEstimator(space, batch_size=16)
    data = _digits()
    ctx = Context(space=space, data=data, arch_parameters=px)
    supernet = estimator._ensure(ctx, px)
    calls: list[tuple[str, int, bool]] = []  # (module path, candidate, built a graph)
    names = {}
    for path, module in supernet.choice_modules():
        names[path] = module.name
        for index, op in enumerate(module.ops):  # type: ignore[union-attr]
            op.register_forward_hook(
                lambda _m, _i, _o, path=path, index=index: calls.append((path, index, torch.is_grad_enabled()))
            )
    x, y = as_tensors(data.train, "cpu")
    w, a = (x[:16], y[:16]), (x[16:32], y[16:32])
    probs = {name: torch.softmax(alpha.detach(), 0) for name, alpha in px.alphas.items()}  # type: ignore[attr-defined]
    estimator._arch_step(px, w, a, 0.025)
    for path, name in names.items():
        ran = [(i, graph) for p, i, graph in calls if p == path]
        assert sorted(i for i, _ in ran) == sorted(px.paths()[name])  # the two sampled candidates only
        assert sorted(graph for _, graph in ran) == [False, True]  # one with a graph: one path's memory
    for name in space.choices():
        after = torch.softmax(px.alphas[name].detach(), 0)  # type: ignore[attr-defined]
        unsampled = [i for i in range(len(after)) if i not in px.paths()[name]]
        assert torch.allclose(after[unsampled], probs[name][unsampled], atol=1e-6)  # the paper's rescaling
    calls.clear()
    estimator.step(px, w, None, 0.025, arch_step=False)
    assert sorted(p for p, _, _ in calls) == sorted(names)  # one candidate per choice module
    assert all(graph for _, _, graph in calls)


# -- plots -------------------------------------------------------------------------------------


def test_draw_cell_falls_back_to_dot_source_and_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nasforge import plots

    arch = Arch({"1<-0": "skip_connect", "2<-0": "none", "2<-1": "nor_conv_3x3"})
    monkeypatch.setattr(plots.shutil, "which", lambda _name: None)
    written = plots.draw_cell(arch, tmp_path / "cell.png")
    assert written == [tmp_path / "cell.dot", tmp_path / "cell.txt"]
    assert (tmp_path / "cell.txt").read_text().strip() == plots.cell_text(arch)
    source = (tmp_path / "cell.dot").read_text()
    assert '"cell.0" -> "cell.1" [label="skip_connect"]' in source and "none" not in source
    monkeypatch.setattr(plots.shutil, "which", lambda _name: "/nonexistent/dot")  # a broken dot: still no failure
    assert plots.draw_cell(arch, tmp_path / "b.png")[-1].suffix == ".txt"


def test_draw_cell_renders_with_graphviz(tmp_path: Path) -> None:
    import shutil

    if shutil.which("dot") is None:
        pytest.skip("graphviz's dot is not installed")
    from nasforge.plots import draw_cell

    written = draw_cell(Arch({"normal.n2.in0": 0, "normal.n2.op0": "sep_conv_3x3"}), tmp_path / "cell.png")
    assert written[-1] == tmp_path / "cell.png" and written[-1].stat().st_size > 0


# -- the new methods' configs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "overrides"),
    [
        pytest.param(
            "fbnet_fbnet.yaml",
            ["space.width_mult=0.125", "strategy.epochs=2", "strategy.warmup=0.5", "estimator.batch_size=224"],
            marks=pytest.mark.slow,  # 22 layers x 9 blocks: ~30 s on one thread
        ),
        ("cdarts_nb201.yaml", ["space.C=4", "strategy.epochs=2"]),
    ],
)
def test_new_method_configs_run_through_the_loop(config: str, overrides: list[str], tmp_path: Path) -> None:
    from nasforge.runner.config import load_config
    from nasforge.runner.experiment import build_experiment

    torch.set_num_threads(1)
    path = Path(__file__).resolve().parents[1] / "configs" / config
    settings = load_config(path, [*overrides, "budget.trials=3", "estimator.bn_batches=1", "estimator.eval_batches=1"])
    experiment = build_experiment(settings)
    runner = experiment.runner(tmp_path)
    try:
        trials = runner.run().trials
    finally:
        runner.store.close()
    assert len(trials) == 3 and all(t.status.name == "COMPLETE" for t in trials), [t.error for t in trials]
    records = [json.loads(line) for line in (tmp_path / ALPHAS_FILE).read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]


def test_fbnet_searches_through_the_loop_on_its_flops_table(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    options = {"epochs": 2, "warmup": 0.5, "in_channels": 1, "input_size": (8, 8), "latency_unit": 100.0}
    trials = _run(tmp_path, 3, data=_digits(), strategy=("fbnet", options))
    assert len(trials) == 3
    records = [json.loads(line) for line in (tmp_path / ALPHAS_FILE).read_text().splitlines()]
    assert len(records) == 2 and records[-1]["expected_latency"] > 0
    first, last = (np.array(records[i]["probs"]["1<-0"]) for i in (0, -1))
    assert np.allclose(first, 0.2, atol=1e-2) and not np.allclose(first, last)  # warm-up, then search


def test_resume_of_a_cdarts_search_restores_its_evaluation_network(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data, options = _digits(), ("cdarts", {"epochs": 3, "warmup": 1})
    reference = _run(tmp_path / "ref", 4, data=data, strategy=options)
    _run(tmp_path / "a", 3, data=data, strategy=options)
    assert _run(tmp_path / "a", 4, resume=True, data=data, strategy=options) == reference


def test_cell_dot_names_the_input_and_output_nodes() -> None:
    from nasforge.plots import cell_dot
    from nasforge.spaces.darts_cells import DartsSpace
    from nasforge.spaces.nb201 import NB201Space

    darts = cell_dot(DartsSpace().parse("DARTS_V2"))
    assert 'label="c_{k-2}"' in darts and 'label="c_{k-1}"' in darts
    assert darts.count('-> "normal.out" [style=dashed]') == 4  # the four intermediate nodes, concatenated
    nb201 = cell_dot(NB201Space().parse("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|none~1|none~2|"))
    assert 'label="input"' in nb201 and 'label="output"' in nb201


def test_pdarts_keeps_none_while_it_is_among_the_strongest() -> None:
    """The paper's code drops ``none`` only in the final derivation, not between stages."""
    space = _tiny_darts()
    pd = strategy("pdarts", space, **PDARTS_OPTIONS)
    assert isinstance(pd, PDARTS)
    with torch.no_grad():
        for name, alpha in pd.alphas.items():
            alpha.zero_()
            alpha[pd.edges[name].candidates.index("none")] = 5.0
    pd.epoch = pd.stage_epochs  # the start of stage 2
    pd._advance()
    assert all(pd.edges[name].candidates.index("none") in kept for name, kept in pd.kept.items())
    assert "none" not in pd.ask().values()  # derivation still excludes it


def test_proxyless_follows_the_papers_schedule() -> None:
    """40 warm-up epochs of weights only, then one architecture step per 5 weight steps."""
    space = NB201Space(C=4, N=1, in_channels=1)
    px = strategy("proxyless", space)
    assert isinstance(px, ProxylessNAS) and (px.epochs, px.warmup, px.arch_every) == (160, 40, 5)
    assert not px.searching()
    px.epoch = 40
    assert px.searching()
    with pytest.raises(ConfigError, match="warmup 40 must be below epochs 10"):
        registry.create("strategy", "proxyless", {"epochs": 10})
    fast = strategy("proxyless", space, epochs=1, arch_every=4)
    estimator = DifferentiableSupernetEstimator(space, batch_size=16)
    ctx = Context(space=space, data=_digits(), arch_parameters=fast)
    steps: list[bool] = []
    original = estimator.step

    def counting(*args: object, arch_step: bool, **kwargs: object) -> float:
        steps.append(arch_step)
        return original(*args, arch_step=arch_step, **kwargs)  # type: ignore[arg-type]

    estimator.step = counting  # type: ignore[method-assign]
    estimator.update(ctx)
    assert len(steps) >= 8 and sum(steps) == len(steps) // 4
