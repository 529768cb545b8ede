"""Weight sharing: NB201 supernet and export, training rules, the supernet estimator, ENAS, CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.atomic import load_checkpoint
from nasforge.core.errors import CheckpointError, ConfigError
from nasforge.core.estimator import Context
from nasforge.estimators.supernet import SUPERNET_DIR, SupernetEstimator, inherited_child
from nasforge.nn.counters import count_flops, count_params
from nasforge.objectives.basic import SingleMetric
from nasforge.oneshot.rules import get_rule
from nasforge.oneshot.trainer import recalibrate_bn
from nasforge.runner import Budget, Runner
from nasforge.runner.final import initial_model
from nasforge.spaces.nb201 import NB201_EDGES, NB201_OPS, NB201Network, NB201Space
from nasforge.strategies.evolution import RegularizedEvolution
from nasforge.strategies.reinforce import Reinforce
from nasforge.tasks.training import TrainSettings, train_model
from nasforge.testing import ToySpace

REPO = Path(__file__).resolve().parents[1]
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
RESNET_LIKE = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|"


@pytest.fixture(scope="module")
def digits():  # 240 train / 60 valid images of 1x8x8
    return registry.create("dataset", "digits", {"train_limit": 300, "test_limit": 60}).load(seed=0)


@pytest.fixture
def space() -> NB201Space:
    return NB201Space(C=4, N=1, in_channels=1)


def _estimator(space: NB201Space, **options: object) -> SupernetEstimator:
    return registry.create("estimator", "supernet", {"batch_size": 32, **options}, context={"space": space})


# -- the NB201 supernet and export ---------------------------------------------------------------


def test_supernet_edges_are_layer_choices_named_by_edge(space: NB201Space) -> None:
    supernet = space.supernet()
    assert supernet.choice_names() == list(space.choices())
    modules = [module for _, module in supernet.choice_modules()]
    assert len(modules) == 3 * 6  # three cells (N=1 per stage), one LayerChoice per edge
    assert all(module.values == list(NB201_OPS) for module in modules)


@pytest.mark.parametrize("text", [RESNET_LIKE, ALL_NONE, "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_3x3~0|avg_pool_3x3~1|nor_conv_1x1~2|"])
def test_export_gives_the_supernet_outputs_and_loads_into_build(space: NB201Space, text: str) -> None:
    torch.manual_seed(0)
    supernet = space.supernet()  # affine, as build(); the estimators' affine=False loads through inherited_child
    arch = space.parse(text)
    x = torch.randn(16, 1, 8, 8)
    supernet.activate(arch)
    recalibrate_bn(supernet, iter([x, x + 1]))  # the same BN statistics for both
    child = supernet.export(arch)
    supernet.eval()
    child.eval()
    with torch.no_grad():
        assert torch.allclose(child(x), supernet(x), atol=1e-5)
    # train mode (batch statistics) agrees too
    child.train()
    supernet.train()
    assert torch.allclose(child(x), supernet(x), atol=1e-5)
    built = space.build(arch)
    built.load_state_dict(child.state_dict())  # strict: the same names and shapes
    assert count_params(built) == count_params(child) < count_params(supernet)


def test_exported_child_is_independent_and_trains(space: NB201Space, digits) -> None:
    torch.manual_seed(0)
    supernet = space.supernet()
    arch = space.parse(RESNET_LIKE)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    child = supernet.export(arch)
    shared = {p.data_ptr() for p in supernet.parameters()}
    assert not any(p.data_ptr() in shared for p in child.parameters())
    report = train_model(child, digits.train, TrainSettings(epochs=2, batch_size=32), seed=0, eval_set=digits.valid)
    assert report.train_loss[-1] < report.train_loss[0]
    assert all(torch.equal(before[k], v) for k, v in supernet.state_dict().items())


def test_bn_recalibration_is_a_plain_average_over_the_batches(space: NB201Space) -> None:
    supernet = space.supernet()
    supernet.activate(space.parse(RESNET_LIKE))
    stem_bn = supernet.network.stem[1]
    stem_conv = supernet.network.stem[0]
    batches = [torch.randn(8, 1, 8, 8) * s for s in (1.0, 3.0)]
    recalibrate_bn(supernet, iter(batches))
    with torch.no_grad():
        means = [stem_conv(b).mean(dim=(0, 2, 3)) for b in batches]
    assert torch.allclose(stem_bn.running_mean, (means[0] + means[1]) / 2, atol=1e-5)
    assert stem_bn.momentum == 0.1 and int(stem_bn.num_batches_tracked) == 2
    assert not torch.allclose(stem_bn.running_var, torch.ones_like(stem_bn.running_var))


# -- training rules ---------------------------------------------------------------------------


def test_spos_and_rsps_are_uniform_per_choice(space: NB201Space) -> None:
    rng = np.random.default_rng(0)
    for name in ("spos", "rsps"):
        counts = {choice: Counter() for choice in space.choices()}
        for _ in range(3000):
            (arch,) = get_rule(name).paths(space, rng)
            for choice, value in arch.items():
                counts[choice][value] += 1
        for counter in counts.values():
            assert set(counter) == set(NB201_OPS)
            assert all(abs(n / 3000 - 0.2) < 0.03 for n in counter.values())


def test_fairnas_uses_every_op_of_every_choice_once_per_step(space: NB201Space) -> None:
    rng = np.random.default_rng(0)
    first_ops = Counter()
    for _ in range(200):
        paths = get_rule("fairnas").paths(space, rng)
        assert len(paths) == 5
        for choice in space.choices():
            assert sorted(str(p[choice]) for p in paths) == sorted(NB201_OPS)
        first_ops[paths[0]["1<-0"]] += 1
    assert set(first_ops) == set(NB201_OPS)  # the permutations are random, not a fixed order


def test_fairnas_with_unequal_candidate_counts_covers_every_candidate() -> None:
    toy = ToySpace()  # 3, 4, 2 and 3 candidates: m = 4 paths
    paths = get_rule("fairnas").paths(toy, np.random.default_rng(1))
    assert len(paths) == 4
    for name, choice in toy.choices().items():
        assert {p[name] for p in paths} == set(choice.candidates)


def test_rules_have_their_own_defaults() -> None:
    assert {"spos", "fairnas", "rsps", "enas"} <= set(registry.names("rule"))
    spos, rsps, enas = (get_rule(n).defaults for n in ("spos", "rsps", "enas"))
    assert (rsps.lr, rsps.bn_batches, rsps.eval_batches) == (0.025, 10, 10) and spos.lr == 0.05  # rsps recalibrates (#13)
    assert enas.epochs == 0 and get_rule("enas").trains_asked_archs


# -- the supernet estimator --------------------------------------------------------------------


def test_estimator_scores_archs_with_exact_params_and_flops(space: NB201Space, digits, tmp_path: Path) -> None:
    estimator = _estimator(space, epochs=2, bn_batches=2)
    result = Runner(
        space, RegularizedEvolution(population_size=4, sample_size=2), estimator, SingleMetric(),
        budget=Budget(trials=6), run_dir=tmp_path, data=digits,
    ).run()
    assert len(result.trials) == 6 and all(t.ok for t in result.trials)
    ctx = Context(space=space, data=digits, seed=5, run_dir=tmp_path)
    for trial in result.trials[:3]:
        child = space.build(trial.arch)
        assert trial.metrics["params"] == count_params(child)
        assert trial.metrics["flops"] == count_flops(child, (1, 8, 8))
        again = estimator.estimate(trial.arch, ctx)  # scores do not depend on what was scored before
        assert again.metrics["val_acc"] == trial.metrics["val_acc"]
    assert result.trials[0].cost["seconds"] > result.trials[1].cost["seconds"]  # trial 0 paid for the training
    assert estimator.state_dict().keys() == {"updates", "seed"}  # the weights live in files
    child = inherited_child(tmp_path, space, result.trials[0].arch)
    assert torch.equal(child.state_dict()["classifier.weight"], estimator._trainer.supernet.state_dict()["network.classifier.weight"])


def test_bn_recalibration_changes_the_score(space: NB201Space, digits) -> None:
    arch = space.parse(RESNET_LIKE)
    ctx = Context(space=space, data=digits, seed=3)
    scores = {n: _estimator(space, epochs=1, bn_batches=n).estimate(arch, ctx).metrics["val_loss"] for n in (0, 3)}
    assert scores[0] != scores[3]


@pytest.mark.parametrize("rule", ["spos", "fairnas"])
def test_killed_supernet_training_resumes_to_identical_weights(space: NB201Space, digits, tmp_path: Path, rule: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from nasforge.oneshot.trainer import SupernetTrainer

    ctx = Context(space=space, data=digits, seed=11, run_dir=tmp_path / "killed")
    reference = _estimator(space, rule=rule, epochs=3)
    reference.update(Context(space=space, data=digits, seed=11, run_dir=tmp_path / "whole"))

    original = SupernetTrainer.train_epoch
    calls = {"n": 0}

    def dies_in_epoch_three(self: SupernetTrainer, train: object) -> float:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if killed in the middle of the third epoch
        return original(self, train)  # type: ignore[arg-type]

    monkeypatch.setattr(SupernetTrainer, "train_epoch", dies_in_epoch_three)
    with pytest.raises(KeyboardInterrupt):
        _estimator(space, rule=rule, epochs=3).update(ctx)
    monkeypatch.setattr(SupernetTrainer, "train_epoch", original)
    resumed = _estimator(space, rule=rule, epochs=3)
    resumed.update(ctx)
    assert resumed._trainer.epochs_done == 3 and resumed._trainer.step == reference._trainer.step
    for (name, a), b in zip(reference._trainer.supernet.state_dict().items(), resumed._trainer.supernet.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    resumed.update(ctx)  # idempotent once trained
    assert resumed._trainer.epochs_done == 3


def test_a_changed_config_does_not_reuse_the_supernet(space: NB201Space, digits, tmp_path: Path) -> None:
    ctx = Context(space=space, data=digits, seed=1, run_dir=tmp_path)
    _estimator(space, epochs=1).update(ctx)
    with pytest.raises(Exception, match="other settings"):
        _estimator(space, epochs=1, lr=0.2).update(ctx)


# -- fine-tuning from inherited weights ---------------------------------------------------------


def _latest_supernet(space: NB201Space, run_dir: Path) -> torch.nn.Module:
    """The supernet as its newest slot in ``run_dir`` holds it."""
    slots = [load_checkpoint(path) for path in (run_dir / SUPERNET_DIR).glob("slot-*.pt")]
    latest = max(slots, key=lambda state: tuple(state["key"]))
    supernet = space.supernet(**latest["supernet_options"])
    supernet.load_state_dict(latest["supernet"])
    return supernet


class _WideBuild(NB201Space):
    """NB201 whose built networks are twice as wide as its supernet's children."""

    def build(self, arch: Arch) -> torch.nn.Module:
        return NB201Network([str(arch[e]) for e in NB201_EDGES], 2 * self.C, self.N, self.in_channels, self.num_classes)


def test_init_from_starts_with_the_supernet_outputs_on_the_path(space: NB201Space, digits, tmp_path: Path) -> None:
    _estimator(space, epochs=1).update(Context(space=space, data=digits, seed=2, run_dir=tmp_path))
    arch = space.parse(RESNET_LIKE)
    supernet = _latest_supernet(space, tmp_path)
    supernet.activate(arch)
    model = initial_model(space, arch, seed=0, init_from=tmp_path)
    assert type(model) is NB201Network  # what space.build gives, so model folders load it back
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), supernet.eval()(x), atol=1e-5)  # BN statistics inherited too
        assert not torch.allclose(initial_model(space, arch, seed=0).eval()(x), supernet(x), atol=1e-2)

    with pytest.raises(CheckpointError, match="holds no supernet checkpoint"):
        initial_model(space, arch, seed=0, init_from=tmp_path / "elsewhere")
    with pytest.raises(CheckpointError, match="does not fit this space"):
        initial_model(NB201Space(C=8, N=1, in_channels=1), arch, seed=0, init_from=tmp_path)
    wide = _WideBuild(C=4, N=1, in_channels=1)
    with pytest.raises(CheckpointError, match="do not load into the network this space builds"):
        initial_model(wide, arch, seed=0, init_from=tmp_path)


# -- ENAS ----------------------------------------------------------------------------------------


def _enas_runner(space: NB201Space, digits, trials: int, run_dir: Path | None) -> Runner:
    strategy = Reinforce(controller="enas", aggregate=2, entropy_weight=0.01)  # a controller step every second trial
    estimator = _estimator(space, rule="enas", steps_per_arch=2, batch_size=32)
    return Runner(space, strategy, estimator, SingleMetric(), budget=Budget(trials=trials), seed=4, run_dir=run_dir, data=digits, checkpoint_seconds=1e9)


def test_enas_trains_shared_weights_on_asked_archs_and_resumes_exactly(space: NB201Space, digits, tmp_path: Path) -> None:
    reference = _enas_runner(space, digits, 6, None).run().trials
    assert all(t.ok and 0 <= t.metrics["val_acc"] <= 100 for t in reference)
    assert all("train_loss" in t.extras for t in reference)
    first = _enas_runner(space, digits, 3, tmp_path)
    first.run()
    # killed after trial 3 trained the shared weights and saved them, before the trial was stored
    ctx = Context(space=space, data=digits, seed=first._trial_context(3).seed, run_dir=tmp_path)
    first.estimator.update(ctx)
    first.estimator.estimate(space.parse(ALL_NONE), ctx)
    (tmp_path / "checkpoint.pt").unlink()  # resume by replay from the store alone
    resumed = _enas_runner(space, digits, 6, tmp_path).run(resume=True).trials
    assert [(t.arch, t.metrics) for t in resumed] == [(t.arch, t.metrics) for t in reference]
    assert sorted(p.name for p in (tmp_path / SUPERNET_DIR).iterdir()) == ["slot-0.pt", "slot-1.pt"]


# -- bad configs ---------------------------------------------------------------------------------


def test_unknown_rule_lists_the_known_ones(space: NB201Space) -> None:
    with pytest.raises(ConfigError, match="Registered rule types: enas, fairnas, rsps, spos"):
        registry.create("estimator", "supernet", {"rule": "darts"}, context={"space": space})
    with pytest.raises(ConfigError, match="unknown rule type 'darts'.*enas, fairnas, rsps, spos"):
        get_rule("darts")


def test_a_space_without_supernet_is_rejected_up_front_by_name(digits) -> None:
    with pytest.raises(ConfigError, match="ToySpace.*no supernet"):
        registry.create("estimator", "supernet", {}, context={"space": ToySpace()})
    with pytest.raises(ConfigError, match="ToySpace"):
        SupernetEstimator().update(Context(space=ToySpace(), data=digits))


def test_spos_needs_training_epochs(space: NB201Space) -> None:
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        _estimator(space, epochs=0)


# -- the CLI, end to end ----------------------------------------------------------------------


def test_oneshot_config_search_derive_train_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nasforge.cli import main

    run_dir = tmp_path / "run"
    overrides = [
        "data.train_limit=300", "data.test_limit=60", "space.C=4", "estimator.epochs=2",
        "budget.trials=6", "strategy.population_size=4", "strategy.sample_size=2", "train.epochs=1",
    ]
    args = ["search", str(REPO / "configs" / "oneshot_spos.yaml"), "--run-dir", str(run_dir)]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert (run_dir / SUPERNET_DIR / "slot-0.pt").exists() and (run_dir / "final" / "weights.pt").exists()
    derived = tmp_path / "top.yaml"
    assert main(["derive", str(run_dir), "-n", "2", "-o", str(derived)]) == 0
    assert len(yaml.safe_load(derived.read_text())["archs"]) == 2
    assert main(["export", str(run_dir / "final"), "-o", str(tmp_path / "exported")]) == 0
    assert (tmp_path / "exported" / "model.py").exists()

    # fine-tune the best arch from its inherited weights: the run gives the settings and the arch
    assert main(["train", "--init-from", str(run_dir), "--epochs", "1", "--quiet"]) == 0
    assert "from the weights of the supernet" in capsys.readouterr().out
    inherited = run_dir / "final-inherited"
    metrics = json.loads((inherited / "metrics.json").read_text())
    assert metrics["inherited_from"] == str(run_dir.resolve()) and "inherited_from" not in json.loads((run_dir / "final" / "metrics.json").read_text())
    assert yaml.safe_load((inherited / "model.yaml").read_text())["init_from"] == str(run_dir.resolve())
    assert main(["test", str(inherited)]) == 0
    capsys.readouterr()
    assert main(["train", "--run", str(run_dir), "--init-from", str(tmp_path), "--out", str(tmp_path / "no")]) == 2
    assert "holds no supernet checkpoint" in " ".join(capsys.readouterr().err.split())
    assert main(["train", "--init-from", str(tmp_path / "absent")]) == 2
    assert "not a nasforge run directory" in capsys.readouterr().err


def test_ranking_benchmark_quick_mode(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("supernet_ranking_run", REPO / "benchmarks" / "supernet_ranking" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    cache = tmp_path / "cache.json"
    doc = tmp_path / "benchmarks.md"
    rows = module.main(["--quick", "--archs", "4", "--rules", "spos,rsps", "--cache", str(cache), "--doc", str(doc)])
    assert [row["rule"] for row in rows] == ["spos", "rsps"]
    assert all(-1 <= row["tau"] <= 1 and 0 <= row["top5"] <= 4 for row in rows)
    cached = yaml.safe_load(cache.read_text())  # JSON is YAML
    assert len(next(iter(cached.values()))) == 4
    section = doc.read_text()
    assert "<!-- supernet_ranking:start -->" in section and "| spos | 1 |" in section and "*parameter count*" in section
