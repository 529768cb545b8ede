"""Strategies read the search's history from the runner (no private copy of what was asked), share
one deduplication policy, start afresh at every ``setup``, and resume exactly from a checkpoint."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import pytest

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.history import History, TrialLog
from nasforge.core.trial import Trial
from nasforge.runner import run_search
from nasforge.runner.loop import CHECKPOINT_FILE
from nasforge.testing import SyntheticEstimator, ToySpace, drive
from nasforge.testing.common import same_state
from nasforge.testing.conformance import TinySpace, _tiny_score, make_strategy, objective_for

#: Strategies that choose archs from told trials (not from trained architecture parameters).
DISCRETE = [
    name
    for name in registry.names("strategy")
    if not {"differentiable", "one-shot"} & set(registry.get("strategy", name).tags)
]
A, B = Arch({"op": "pool", "width": 8}), Arch({"op": "conv3x3", "width": 16})


def test_discrete_strategies_are_known() -> None:
    assert {"random", "evolution", "local_search", "annealing", "bananas", "reinforce", "tpe"} <= set(DISCRETE)
    assert "darts" not in DISCRETE


def test_trial_log_tracks_asks_in_flight_and_told_trials() -> None:
    log = TrialLog()
    view: History = log
    assert A not in view and len(view) == 0
    log.record_ask(A)
    log.record_ask(B)
    assert A in view and view.asked(B) and view.told(A) is None
    assert (view.n_asked, view.n_pending, view.n_told, view.n_archs) == (2, 2, 0, 2)
    trial = Trial(number=0, arch=A, seed=0, values=(1.0,))
    log.record_tell(trial)
    assert view.told(A) is trial and view.pending() == [B] and view.trials() == [trial]
    log.record_tell(Trial(number=1, arch=Arch({"op": "pool", "width": 24}), seed=1))  # told, never asked
    assert (view.n_asked, view.n_pending, view.n_told, view.n_archs) == (2, 1, 2, 3)
    rebuilt = TrialLog(view.trials())
    assert [t.arch for t in rebuilt] == [t.arch for t in view] and rebuilt.n_pending == 0


@pytest.mark.parametrize("name", registry.names("strategy"))
def test_no_strategy_keeps_its_own_seen_set(name: str) -> None:
    strategy = make_strategy(name)
    for klass in type(strategy).__mro__:
        if klass.__module__.startswith("nasforge"):
            assert "_seen" not in inspect.getsource(klass), f"{klass.__name__} keeps a _seen set"
    if name in DISCRETE:  # the differentiable ones need a supernet space to be set up
        drive(strategy, ToySpace(), objective_for(name), SyntheticEstimator(), 6, seed=0)
        assert not hasattr(strategy, "_seen")
        assert "seen" not in strategy.state_dict()


@pytest.mark.parametrize("name", DISCRETE)
def test_one_deduplication_policy(name: str) -> None:
    strategy = make_strategy(name)
    assert strategy.deduplicate is True, f"{name} does not deduplicate by default"
    trials = drive(strategy, TinySpace(), objective_for(name), SyntheticEstimator(_tiny_score), 12, seed=0)
    assert len(trials) == 4 and len({t.arch for t in trials}) == 4, "the space once each, then None"


@pytest.mark.parametrize("name", DISCRETE)
def test_setup_twice_starts_afresh(name: str) -> None:
    space, objective, estimator = ToySpace(), objective_for(name), SyntheticEstimator()
    fresh = [t.arch for t in drive(make_strategy(name), space, objective, estimator, 12, seed=7)]
    reused = make_strategy(name)
    drive(reused, space, objective, estimator, 9, seed=1)
    assert [t.arch for t in drive(reused, space, objective, estimator, 12, seed=7)] == fresh


def test_old_checkpoints_with_a_seen_set_still_load() -> None:
    space, objective = ToySpace(), objective_for("evolution")
    strategy = make_strategy("evolution")
    drive(strategy, space, objective, SyntheticEstimator(), 4, seed=0)
    state = {**strategy.state_dict(), "seen": [{"op": "pool", "width": 8, "residual": False, "depth": 1}]}
    again = make_strategy("evolution")
    again.setup(space, objective, seed=0)
    again.load_state_dict(state)
    assert same_state(again.state_dict(), strategy.state_dict())  # the old key is ignored, the rest restored


@pytest.mark.parametrize("name", DISCRETE)
def test_resumed_runs_ask_exactly_the_archs_of_an_uninterrupted_one(name: str, tmp_path: Path) -> None:
    """Stopped after 6 trials (checkpoint), run on to 11, then resumed from the 6-trial checkpoint:
    trials 7-11 are replayed from the store and the rest asked anew, as if never stopped."""
    space, objective = ToySpace(), objective_for(name)

    def search(budget: int, run_dir: Path | None, resume: bool = False) -> list[Arch]:
        result = run_search(
            space,
            make_strategy(name),
            SyntheticEstimator(),
            objective,
            budget=budget,
            seed=2,
            run_dir=run_dir,
            resume=resume,
        )
        return [t.arch for t in result.trials]

    reference = search(18, None)
    run_dir = tmp_path / "run"
    search(6, run_dir)
    shutil.copy(run_dir / CHECKPOINT_FILE, tmp_path / "early.pt")
    search(11, run_dir, resume=True)
    shutil.copy(tmp_path / "early.pt", run_dir / CHECKPOINT_FILE)
    assert search(18, run_dir, resume=True) == reference
