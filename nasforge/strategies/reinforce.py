"""REINFORCE (Williams 1992, "Simple statistical gradient-following algorithms for connectionist
reinforcement learning", Machine Learning 8) with a learned policy over the choices: the RL
baseline of NAS-Bench-201 (Dong & Yang 2020) and, with the LSTM controller, the controller
training of ENAS (Pham et al. 2018) and NAS (Zoph & Le 2017)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

import torch
from pydantic import Field, PositiveInt

from nasforge.core.arch import Arch
from nasforge.core.registry import register
from nasforge.core.strategy import Strategy, require_single_objective
from nasforge.core.trial import Trial
from nasforge.strategies.controllers import Controller, IndependentController, LSTMController

if TYPE_CHECKING:
    from nasforge.core.objective import Objective
    from nasforge.core.space import SearchSpace

__all__ = ["Reinforce"]


@register("strategy", "reinforce")
class Reinforce(Strategy):
    """Policy-gradient search: sample archs from a controller, reward it with their score.

    Each told trial takes one Adam step on ``-(reward - baseline) * log p(arch)``, where the
    reward is the trial's value plus ``entropy_weight`` times the policy's entropy (ENAS's
    exploration bonus) and the baseline an exponential moving average of past rewards (its
    value before this trial, so the first trial teaches nothing). A failed or infeasible trial
    gets the worst reward seen so far.

    No arch is asked twice: a sample already told (or breaking a constraint of the space, a
    known failure) updates the policy with its known reward, without a query, and the
    controller samples again, up to ``max_retries`` times; then a random unseen arch is asked
    instead (and not used for the gradient, being off-policy). ``ask`` returns None once the
    space is exhausted.

    Args:
        controller: ``independent`` (a categorical per choice, NAS-Bench-201's baseline) or
            ``lstm`` (ENAS's controller; see :mod:`nasforge.strategies.controllers`).
        lr: Adam learning rate; None: 0.1 for ``independent`` (best of 0.01 to 0.2) and 0.01
            for ``lstm`` (best of 0.003 to 0.03) at 150 NAS-Bench-201 queries. NATS-Bench's
            REINFORCE uses 0.01 with far larger budgets.
        baseline_decay: moving-average factor of the reward baseline (NATS-Bench: 0.9).
        entropy_weight: weight of the entropy bonus added to the reward (ENAS: 1e-4).
        hidden_size, num_layers, temperature, tanh_constant: LSTM controller settings
            (defaults: NAS-Bench-201's ENAS controller).
        max_retries: samples per ask before falling back to a random unseen arch.
    """

    def __init__(
        self,
        controller: Literal["independent", "lstm"] = "independent",
        lr: Annotated[float, Field(gt=0)] | None = None,
        baseline_decay: Annotated[float, Field(ge=0, lt=1)] = 0.9,
        entropy_weight: Annotated[float, Field(ge=0)] = 1e-4,
        hidden_size: PositiveInt = 32,
        num_layers: PositiveInt = 2,
        temperature: Annotated[float, Field(gt=0)] = 5.0,
        tanh_constant: Annotated[float, Field(ge=0)] = 2.5,
        max_retries: PositiveInt = 10,
    ) -> None:
        if controller not in ("independent", "lstm"):
            raise ValueError(f"unknown controller {controller!r}; known: independent, lstm")
        self.controller_type = controller
        self.lr = lr if lr is not None else (0.01 if controller == "lstm" else 0.1)
        self.baseline_decay = baseline_decay
        self.entropy_weight = entropy_weight
        self.lstm_options = {
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "temperature": temperature,
            "tanh_constant": tanh_constant,
        }
        self.max_retries = max_retries

    def setup(self, space: SearchSpace, objective: Objective, *, seed: int) -> None:
        super().setup(space, objective, seed=seed)
        require_single_objective(self, objective)
        choices = list(space.choices().values())
        self.controller: Controller = (
            LSTMController(choices, rng=self.rng, **self.lstm_options)  # type: ignore[arg-type]
            if self.controller_type == "lstm"
            else IndependentController(choices, rng=self.rng)
        )
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=self.lr)
        self.baseline: float | None = None
        self._worst = math.inf
        self._seen: set[Arch] = set()
        self._rewards: dict[Arch, float | None] = {}
        self._off_policy: set[Arch] = set()

    def _reward(self, value: float) -> float | None:
        """The reward of a trial value (failed/infeasible: the worst so far, None if none yet)."""
        if math.isfinite(value):
            self._worst = min(self._worst, value)
            return value
        return self._worst if math.isfinite(self._worst) else None

    def _update(self, arch: Arch, reward: float | None) -> None:
        """One REINFORCE step towards (or away from) ``arch``."""
        if reward is None:
            return
        log_prob, entropy = self.controller.evaluate(arch)
        reward = reward + self.entropy_weight * float(entropy.detach())
        baseline = reward if self.baseline is None else self.baseline
        loss = -(reward - baseline) * log_prob
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.baseline = self.baseline_decay * baseline + (1 - self.baseline_decay) * reward

    def ask(self) -> Arch | None:
        for _ in range(self.max_retries):
            with torch.no_grad():
                arch = self.controller.sample(self.rng).arch
            if not self.space.is_valid(arch):  # breaks a constraint of the space: a known failure
                self._update(arch, self._reward(-math.inf))
                continue
            if arch not in self._seen:
                self._seen.add(arch)
                return arch
            if arch in self._rewards:
                self._update(arch, self._rewards[arch])
        arch = self.space.sample_unseen(self.rng, self._seen)
        if arch is not None:
            self._seen.add(arch)
            self._off_policy.add(arch)
        return arch

    def tell(self, trial: Trial) -> None:
        self._seen.add(trial.arch)
        reward = self._reward(trial.value)
        self._rewards[trial.arch] = reward
        if trial.arch not in self._off_policy:
            self._update(trial.arch, reward)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "controller": self.controller.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "baseline": self.baseline,
            "worst": self._worst,
            "seen": [a.to_dict() for a in self._seen],
            "rewards": [(a.to_dict(), r) for a, r in self._rewards.items()],
            "off_policy": [a.to_dict() for a in self._off_policy],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = state["baseline"]
        self._worst = float(state["worst"])
        self._seen = {Arch(a) for a in state["seen"]}
        self._rewards = {Arch(a): r for a, r in state["rewards"]}
        self._off_policy = {Arch(a) for a in state["off_policy"]}
