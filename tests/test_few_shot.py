"""Few-shot NAS (issue #13): the supernet estimator's ``few_shot`` option splits the trained
one-shot supernet on chosen edges into sub-supernets that inherit its weights and train on; each
arch is scored on its own sub-supernet; checkpoints and resume as one-shot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nasforge.core import registry
from nasforge.core.errors import ConfigError
from nasforge.core.estimator import Context
from nasforge.estimators.supernet import SupernetEstimator, inherited_child
from nasforge.objectives.basic import SingleMetric
from nasforge.oneshot.few_shot import FewShotTrainer, SubSpace
from nasforge.runner import Budget, Runner
from nasforge.spaces.nb201 import NB201Space
from nasforge.strategies.random_search import RandomSearch

FEW_SHOT = {"edges": ["1<-0"], "epochs": 2}


@pytest.fixture(scope="module")
def digits():  # 240 train / 60 valid images of 1x8x8
    return registry.create("dataset", "digits", {"train_limit": 300, "test_limit": 60}).load(seed=0)


@pytest.fixture
def space() -> NB201Space:
    return NB201Space(C=4, N=1, in_channels=1)


def _estimator(space: NB201Space, **options: object) -> SupernetEstimator:
    options = {"batch_size": 32, "epochs": 1, "bn_batches": 2, "few_shot": FEW_SHOT, **options}
    return registry.create("estimator", "supernet", options, context={"space": space})


def test_sub_supernets_inherit_the_one_shot_weights_exactly_and_train_on(space: NB201Space, digits) -> None:
    estimator = _estimator(space, few_shot={"edges": ["1<-0"], "epochs": 1})
    ctx = Context(space=space, data=digits, seed=3)
    trainer = estimator._ensure_trainer(ctx)
    assert isinstance(trainer, FewShotTrainer) and estimator.total_epochs == 2
    train, _ = estimator._tensors(ctx)
    trainer.train_epoch(train)  # the one-shot epoch
    assert trainer.subs is None
    one_shot = {k: v.clone() for k, v in trainer.supernet.state_dict().items()}
    trainer.split()
    assert trainer.subs is not None and len(trainer.subs) == len(space.ops) == 5
    for sub, op in zip(trainer.subs, space.ops, strict=True):
        state = sub.supernet.state_dict()
        assert state.keys() == one_shot.keys()
        assert all(torch.equal(state[k], v) for k, v in one_shot.items())  # weights and BN statistics
        assert sub.supernet is not trainer.supernet
        assert isinstance(sub.space, SubSpace) and sub.space.choices()["1<-0"].candidates == (op,)
        assert sub.step == 0 and sub.settings.epochs == 1  # a fresh optimiser and schedule
        rng = np.random.default_rng(0)
        assert all(sub.rule.paths(sub.space, rng)[0]["1<-0"] == op for _ in range(20))
    trainer.subs = None  # train_epoch splits by itself
    trainer.train_epoch(train)
    assert trainer.subs is not None and trainer.epochs_done == 2
    assert all(torch.equal(trainer.supernet.state_dict()[k], v) for k, v in one_shot.items())  # one-shot kept
    for sub in trainer.subs:
        assert sub.epochs_done == 1
        assert any(not torch.equal(sub.supernet.state_dict()[k], v) for k, v in one_shot.items())


def test_archs_are_scored_on_their_own_sub_supernet(space: NB201Space, digits, tmp_path: Path) -> None:
    estimator = _estimator(space)
    ctx = Context(space=space, data=digits, seed=3, run_dir=tmp_path)
    estimator.update(ctx)
    trainer = estimator._trainer
    assert isinstance(trainer, FewShotTrainer) and trainer.subs is not None
    train, valid = estimator._tensors(ctx)
    rng = np.random.default_rng(1)
    for _ in range(5):
        arch = space.sample(rng)
        result = estimator.estimate(arch, ctx)
        group = space.ops.index(arch["1<-0"])
        assert result.extras["sub_supernet"] == group
        own = trainer.subs[group]
        own.recalibrate(arch, train)
        assert result.metrics["val_acc"] == own.evaluate(arch, valid)[0]
        # the child a fine-tuning run inherits comes from the same sub-supernet
        # (train mode: batch statistics; the checkpoint's running ones are training's, not this score's)
        child, expected = inherited_child(tmp_path, space, arch).train(), own.supernet.export(arch).train()
        x = valid[0][:8]
        with torch.no_grad():
            assert torch.allclose(child(x), expected(x), atol=1e-6)
    with pytest.raises(ConfigError, match="not a choice"):
        _estimator(space, few_shot={"edges": ["9<-0"], "epochs": 1})._ensure_trainer(ctx)
    with pytest.raises(ConfigError, match="few_shot"):
        _estimator(space, rule="enas")


def test_killed_few_shot_training_resumes_exactly(space: NB201Space, digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _estimator(space)
    reference.update(Context(space=space, data=digits, seed=11, run_dir=tmp_path / "whole"))
    original = FewShotTrainer.train_epoch
    calls = {"n": 0}

    def dies_in_the_second_few_shot_epoch(self: FewShotTrainer, train: object) -> float:
        calls["n"] += 1
        if calls["n"] == 3:  # one-shot epoch, few-shot epoch 1, then killed
            raise KeyboardInterrupt
        return original(self, train)  # type: ignore[arg-type]

    ctx = Context(space=space, data=digits, seed=11, run_dir=tmp_path / "killed")
    monkeypatch.setattr(FewShotTrainer, "train_epoch", dies_in_the_second_few_shot_epoch)
    with pytest.raises(KeyboardInterrupt):
        _estimator(space).update(ctx)
    monkeypatch.setattr(FewShotTrainer, "train_epoch", original)
    resumed = _estimator(space)
    resumed.update(ctx)
    ref, got = reference._trainer, resumed._trainer
    assert isinstance(ref, FewShotTrainer) and isinstance(got, FewShotTrainer)
    assert got.epochs_done == ref.epochs_done == 3 and got.subs is not None and ref.subs is not None
    for a, b in zip(ref.subs, got.subs, strict=True):
        assert a.step == b.step
        for (name, x), y in zip(a.state_dict()["supernet"].items(), b.state_dict()["supernet"].values(), strict=True):
            assert torch.equal(x, y), name
    arch = space.sample(np.random.default_rng(0))
    assert resumed.estimate(arch, ctx).metrics == reference.estimate(arch, ctx).metrics


def test_any_discrete_strategy_searches_a_few_shot_supernet_and_resumes(space: NB201Space, digits, tmp_path: Path) -> None:
    def run(trials: int, *, resume: bool = False) -> list[tuple[object, dict[str, float]]]:
        runner = Runner(
            space, RandomSearch(), _estimator(space), SingleMetric(), budget=Budget(trials=trials),
            seed=5, run_dir=tmp_path, data=digits, checkpoint_seconds=1e9,
        )
        try:
            return [(t.arch, t.metrics) for t in runner.run(resume=resume).trials]
        finally:
            runner.store.close()

    first = run(2)
    assert len(first) == 2 and all(m["val_acc"] >= 0 for _, m in first)
    again = run(4, resume=True)
    assert again[:2] == first and len(again) == 4
