"""Weight-sharing fixes of issue #13, each against the official code's setting (named in the
docstrings of the code under test): CDARTS' NB201 penalty, single-level data, SNAS' temperature
and optimiser, RSPS scoring, SPOS' recipe, BN affine=False search cells, GDAS' forward and
recipe, and the arch a differentiable search returns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_task import OneEdgeSpace, strategy, synthetic_data
from torch.nn.modules.batchnorm import _BatchNorm

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.estimator import Context
from nasforge.core.trial import Trial, TrialStatus
from nasforge.estimators.dnas import DifferentiableSupernetEstimator
from nasforge.estimators.supernet import inherited_child
from nasforge.objectives.basic import SingleMetric
from nasforge.runner.loop import Budget, Runner, SearchResult
from nasforge.spaces.darts_cells import DartsSpace
from nasforge.spaces.nb201 import NB201Space
from nasforge.strategies.cdarts import REGULARISED


def _tiny_darts() -> DartsSpace:
    return DartsSpace(C=8, layers=3, supernet_C=8, supernet_layers=3, in_channels=1, input_size=(8, 8))


def _nb201() -> NB201Space:
    return NB201Space(C=4, N=1, in_channels=1)


# -- CDARTS ------------------------------------------------------------------------------------


def test_cdarts_on_nb201_penalises_the_mean_abs_alpha_of_none() -> None:
    cd = strategy("cdarts", _nb201(), epochs=4, warmup=0)
    with torch.no_grad():
        for k, alpha in enumerate(cd.alphas.values()):
            alpha.copy_(torch.tensor([-(k + 1.0), 2.0, 3.0, -4.0, 5.0]))
    assert cd.regularised() == (("none",), "mean")
    coeff = 5.0  # regular_coeff at the first joint epoch
    expected = coeff * np.mean([k + 1.0 for k in range(6)])
    reg = cd.regularisation()
    assert float(reg.detach()) == pytest.approx(expected)
    reg.backward()
    for alpha in cd.alphas.values():
        assert alpha.grad is not None
        assert float(alpha.grad[0]) == pytest.approx(-coeff / 6)  # d/d alpha_none of coeff * mean|.|
        assert bool((alpha.grad[1:] == 0).all())  # skip and pooling are free


def test_cdarts_on_darts_spaces_keeps_nnis_sum_over_pool_skip_and_dilated_convs() -> None:
    cd = strategy("cdarts", _tiny_darts(), epochs=4, warmup=0)
    assert cd.regularised() == (REGULARISED, "sum")
    with torch.no_grad():
        for alpha in cd.alphas.values():
            alpha.fill_(1.0)
    picked = sum(sum(v in REGULARISED for v in cd.edges[name].candidates) for name in cd.alphas)
    assert float(cd.regularisation().detach()) == pytest.approx(5.0 * picked)


# -- single level, SNAS ------------------------------------------------------------------------


def _weight_steps(name: str, monkeypatch: pytest.MonkeyPatch) -> int:
    space = OneEdgeSpace()
    arch = strategy(name, space, epochs=2)
    estimator = DifferentiableSupernetEstimator(space, batch_size=32)
    calls = {"n": 0}
    original = DifferentiableSupernetEstimator.step

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DifferentiableSupernetEstimator, "step", counting)
    estimator.update(Context(space=space, data=synthetic_data(512), arch_parameters=arch))
    return calls["n"]


def test_single_level_snas_trains_on_the_whole_training_split(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _weight_steps("snas", monkeypatch) == 512 // 32  # not the weights' half
    assert _weight_steps("gdas", monkeypatch) == 256 // 32  # GDAS is bilevel: the weights' half


def test_snas_anneals_tau_linearly_to_0_03_over_the_run() -> None:
    snas = strategy("snas", OneEdgeSpace(), epochs=10)
    taus = []
    for epoch in range(10):
        snas.epoch = epoch
        taus.append(snas.tau)
    assert taus[0] == pytest.approx(0.03 + 0.97 * 0.9)  # the scheduler steps before each epoch
    assert taus[-1] == pytest.approx(0.03)
    assert np.allclose(np.diff(taus), -0.097)


def test_snas_alphas_take_plain_sgd_steps_with_the_gradient_clipped_at_10() -> None:
    snas = strategy("snas", OneEdgeSpace(), epochs=10)
    assert isinstance(snas.optimizer, torch.optim.SGD)
    (alpha,) = snas.parameters()
    before = alpha.detach().clone()
    alpha.grad = torch.tensor([300.0, 400.0, 0.0])  # norm 500
    snas.step()
    assert torch.allclose(before - alpha.detach(), 3e-4 * torch.tensor([6.0, 8.0, 0.0]))  # clipped to norm 10
    adam = strategy("snas", OneEdgeSpace(), epochs=10, optimizer="adam")
    assert isinstance(adam.optimizer, torch.optim.Adam)


# -- one-shot rules ------------------------------------------------------------------------------


def _supernet_estimator(**options: object):  # type: ignore[no-untyped-def]
    return registry.create("estimator", "supernet", {"batch_size": 32, **options}, context={"space": _nb201()})


def test_rsps_recalibrates_before_scoring_by_default() -> None:
    """RSPS' default is 10 recalibration batches (that recalibration changes the score is
    tests/test_supernet.py::test_bn_recalibration_changes_the_score)."""
    assert _supernet_estimator(rule="rsps").settings.bn_batches == 10
    assert _supernet_estimator(rule="rsps", bn_batches=0).settings.bn_batches == 0  # the old way, on request


def test_spos_trains_with_plain_momentum_and_no_clipping() -> None:
    spos = _supernet_estimator(rule="spos").settings
    assert (spos.momentum, spos.nesterov, spos.grad_clip) == (0.9, False, None)
    rsps = _supernet_estimator(rule="rsps").settings
    assert (rsps.nesterov, rsps.grad_clip) == (True, 5.0)  # NB201's recipe for RSPS
    chosen = _supernet_estimator(rule="spos", nesterov=True, grad_clip=2.0).settings
    assert (chosen.nesterov, chosen.grad_clip) == (True, 2.0)


def _affine(module: torch.nn.Module) -> set[bool]:
    return {m.affine for m in module.modules() if isinstance(m, _BatchNorm)}


def test_search_cells_use_batch_norm_without_affine_parameters(digits_small, tmp_path: Path) -> None:
    space = _nb201()
    cells = space.supernet(affine=False).network.cells
    assert _affine(cells[0].edges) == {False}
    assert _affine(space.supernet().network.cells[0].edges) == {True}  # the default matches build()
    estimator = _supernet_estimator(epochs=1, bn_batches=1)
    ctx = Context(space=space, data=digits_small, seed=0, run_dir=tmp_path)
    estimator.update(ctx)
    assert _affine(estimator._trainer.supernet.network.cells[0].edges) == {False}
    arch = space.sample(np.random.default_rng(0))
    metrics = estimator.estimate(arch, ctx).metrics
    built = space.build(arch)
    from nasforge.nn.counters import count_params

    assert metrics["params"] == count_params(built)  # the network that will be trained
    child = inherited_child(tmp_path, space, arch)
    built.load_state_dict(child.state_dict())  # strict: scale 1, shift 0 added
    x = torch.randn(4, 1, 8, 8)
    supernet = estimator._trainer.supernet
    supernet.activate(arch)
    supernet.train(), built.train()
    with torch.no_grad():
        assert torch.allclose(built(x), supernet(x), atol=1e-5)
    dnas = DifferentiableSupernetEstimator(space)
    assert _affine(dnas._build({}).network.cells[0].edges) == {False}


@pytest.fixture(scope="module")
def digits_small():
    return registry.create("dataset", "digits", {"train_limit": 200, "test_limit": 40}).load(seed=0)


# -- GDAS ----------------------------------------------------------------------------------------


def test_gdas_forward_adds_the_zero_weights_of_unsampled_ops_so_each_gets_a_gradient() -> None:
    space = OneEdgeSpace()
    gdas = strategy("gdas", space, epochs=4)
    supernet = space.supernet()
    weights = gdas.weights("arch")["op"]
    weights.retain_grad()
    supernet.set_weights({"op": weights})
    module = next(m for _, m in supernet.choice_modules())
    module.restrict(gdas.paths()["op"])
    x = torch.randn(6, 10)
    out = supernet(x)
    sampled = gdas.paths()["op"][0]
    assert torch.allclose(out, module.ops[sampled](x))  # same value: the added weights are 0
    out.sum().backward()
    assert weights.grad is not None
    for i in range(3):
        if i != sampled:  # d out.sum() / d w_i = number of outputs, as forward_gdas' broadcast add
            assert float(weights.grad[i]) == pytest.approx(out.numel())
    off = strategy("gdas", space, epochs=4, unsampled_gradient=False)  # the option: as before
    w = off.weights("arch")["op"]
    unsampled = [i for i in range(3) if i != off.paths()["op"][0]]
    (grad,) = torch.autograd.grad(w[unsampled].sum(), off.parameters()[0], allow_unused=True)
    assert grad is None or bool((grad == 0).all())
    assert sorted(w.detach().tolist()) == [0.0, 0.0, 1.0]


def test_gdas_weights_train_with_nesterov_and_weight_decay_5e_4() -> None:
    space = _nb201()
    ctx_data = synthetic_data()

    def optimiser(name: str, **options: object) -> dict[str, object]:
        arch = strategy(name, space, epochs=2)
        estimator = DifferentiableSupernetEstimator(space, **options)  # type: ignore[arg-type]
        estimator._ensure(Context(space=space, data=ctx_data, arch_parameters=arch), arch)
        assert estimator.optimizer is not None
        group = estimator.optimizer.param_groups[0]
        return {"nesterov": group["nesterov"], "weight_decay": group["weight_decay"]}

    assert optimiser("gdas") == {"nesterov": True, "weight_decay": 5e-4}
    assert optimiser("darts") == {"nesterov": False, "weight_decay": 3e-4}
    assert optimiser("gdas", nesterov=False, weight_decay=1e-4) == {"nesterov": False, "weight_decay": 1e-4}


# -- which arch a differentiable search returns ------------------------------------------------


def _trial(number: int, value: float) -> Trial:
    return Trial(number=number, arch=Arch({"op": str(number)}), seed=0, status=TrialStatus.COMPLETE, values=(value,))


def test_a_differentiable_search_returns_the_arch_of_its_final_alphas() -> None:
    trials = [_trial(0, 0.9), _trial(1, 0.5), _trial(2, 0.7)]
    assert [t.number for t in SearchResult(trials, SingleMetric("val_acc")).best(2)] == [0, 2]
    last = SearchResult(trials, SingleMetric("val_acc"), winner="last")
    assert [t.number for t in last.best(2)] == [2, 0]  # the final arch first, the rest kept
    space = OneEdgeSpace()
    runner = Runner(
        space,
        registry.create("strategy", "darts", {"epochs": 2}),
        DifferentiableSupernetEstimator(space, batch_size=32),
        SingleMetric("val_acc"),
        budget=Budget(trials=3),
        data=synthetic_data(),
    )
    result = runner.run()
    assert result.winner == "last" and len(result.trials) == 3
    assert result.best(1)[0].number == result.trials[-1].number
    assert registry.get("strategy", "evolution").target.winner == "best"
