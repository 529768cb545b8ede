"""REINFORCE (Williams 1992, "Simple statistical gradient-following algorithms for connectionist
reinforcement learning", Machine Learning 8) with a learned policy over the choices: the RL
baseline of NAS-Bench-201 (Dong & Yang 2020) and, with the LSTM controller, the controller
training of ENAS (Pham et al. 2018, "Efficient Neural Architecture Search via Parameter
Sharing", ICML) and NAS (Zoph & Le 2017).

Three controller presets set the training defaults (each one can still be overridden):

=========== =========== ====== ============ ===== ============== =========
controller  policy      lr     betas        eps   baseline_decay aggregate
=========== =========== ====== ============ ===== ============== =========
independent categorical 0.1    (0.9, 0.999) 1e-8  0.9            1
lstm        LSTM        0.01   (0.9, 0.999) 1e-8  0.9            1
enas        LSTM        3.5e-4 (0.0, 0.999) 1e-3  0.99           20
=========== =========== ====== ============ ===== ============== =========

``independent`` and ``lstm`` are tuned for small budgets (150 NAS-Bench-201 queries). ``enas``
trains the controller as ENAS does: Adam at the paper's 3.5e-4 (the authors' CIFAR-10 scripts
use 1e-3 for the macro and 3.5e-3 for the micro space), with their code's ``beta1 = 0``,
``eps = 1e-3`` and baseline decay 0.99, and one Adam step on the mean gradient of 20 sampled
archs (``controller_num_aggregate``: 20 in their macro search script and NNI's ENAS, 10 in their
micro one). All presets share ENAS's entropy weight 1e-4; the LSTM ones its temperature 5 and
tanh constant 2.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field, PositiveInt

from nasforge.core.arch import Arch
from nasforge.core.registry import register
from nasforge.core.strategy import PendingPolicy, Strategy, require_single_objective
from nasforge.core.trial import Trial
from nasforge.strategies.controllers import Controller, IndependentController, LSTMController

if TYPE_CHECKING:
    from nasforge.core.objective import Objective
    from nasforge.core.space import SearchSpace

__all__ = ["Reinforce", "ControllerPreset"]

ControllerPreset = Literal["independent", "lstm", "enas"]


@dataclass(frozen=True)
class _Training:
    """How a preset trains its controller: Adam's settings, the baseline and the aggregation."""

    lr: float
    betas: tuple[float, float]
    eps: float
    baseline_decay: float
    aggregate: int


_PRESETS: dict[str, _Training] = {
    "independent": _Training(lr=0.1, betas=(0.9, 0.999), eps=1e-8, baseline_decay=0.9, aggregate=1),
    "lstm": _Training(lr=0.01, betas=(0.9, 0.999), eps=1e-8, baseline_decay=0.9, aggregate=1),
    "enas": _Training(lr=3.5e-4, betas=(0.0, 0.999), eps=1e-3, baseline_decay=0.99, aggregate=20),
}


@register("strategy", "reinforce")
class Reinforce(Strategy):
    """Policy-gradient search: sample archs from a controller, reward it with their score.

    Each told trial is one sample of ``-(reward - baseline) * log p(arch)``, where the reward
    is the trial's value plus ``entropy_weight`` times the policy's entropy (ENAS's exploration
    bonus) and the baseline an exponential moving average of past rewards (its value before
    this sample, so the first sample teaches nothing). Every ``aggregate`` samples, one Adam
    step descends their mean. A failed or infeasible trial gets the worst reward seen so far.

    No arch is asked twice: a sample already told (or breaking a constraint of the space, a
    known failure) counts as a sample with its known reward, without a query, and the
    controller samples again, up to ``max_retries`` times; then a random unseen arch is asked
    instead (and not used for the gradient, being off-policy). ``ask`` returns None once the
    space is exhausted.

    Options left unset (null) take the controller preset's value (table in
    :mod:`nasforge.strategies.reinforce`).

    Args:
        controller: ``independent`` (a categorical per choice, NAS-Bench-201's baseline),
            ``lstm`` (ENAS's LSTM controller, trained for small budgets) or ``enas`` (the LSTM
            controller trained as ENAS trains it; see :mod:`nasforge.strategies.controllers`).
        lr: Adam learning rate (``independent``: best of 0.01 to 0.2, ``lstm``: best of 0.003
            to 0.03 at 150 NAS-Bench-201 queries; NATS-Bench's REINFORCE uses 0.01 with far
            larger budgets).
        betas: Adam's ``(beta1, beta2)``.
        eps: Adam's epsilon.
        baseline_decay: moving-average factor of the reward baseline (NATS-Bench: 0.9).
        aggregate: samples whose mean gradient makes one controller update.
        entropy_weight: weight of the entropy bonus added to the reward (ENAS: 1e-4).
        hidden_size, num_layers, temperature, tanh_constant: LSTM controller settings
            (defaults: NAS-Bench-201's ENAS controller, ENAS's temperature and tanh constant).
        max_retries: samples per ask before falling back to a random unseen arch.
    """

    #: Asynchronous: archs are sampled from the current policy, updated as trials are told
    #: (Zoph & Le trained their controller on children run in parallel the same way).
    pending_policy: ClassVar[PendingPolicy] = "async"

    def __init__(
        self,
        controller: ControllerPreset = "independent",
        lr: Annotated[float, Field(gt=0)] | None = None,
        betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] | None = None,
        eps: Annotated[float, Field(gt=0)] | None = None,
        baseline_decay: Annotated[float, Field(ge=0, lt=1)] | None = None,
        aggregate: PositiveInt | None = None,
        entropy_weight: Annotated[float, Field(ge=0)] = 1e-4,
        hidden_size: PositiveInt = 32,
        num_layers: PositiveInt = 2,
        temperature: Annotated[float, Field(gt=0)] = 5.0,
        tanh_constant: Annotated[float, Field(ge=0)] = 2.5,
        max_retries: PositiveInt = 10,
    ) -> None:
        if controller not in _PRESETS:
            raise ValueError(f"unknown controller {controller!r}; known: {', '.join(_PRESETS)}")
        preset = _PRESETS[controller]
        self.controller_type = controller
        self.lr = preset.lr if lr is None else lr
        self.betas = preset.betas if betas is None else (float(betas[0]), float(betas[1]))
        self.eps = preset.eps if eps is None else eps
        self.baseline_decay = preset.baseline_decay if baseline_decay is None else baseline_decay
        self.aggregate = preset.aggregate if aggregate is None else aggregate
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
            if self.controller_type != "independent"
            else IndependentController(choices, rng=self.rng)
        )
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=self.lr, betas=self.betas, eps=self.eps)
        self.baseline: float | None = None
        self._batch: list[tuple[Arch, float]] = []  # (arch, reward - baseline) of samples not yet stepped on
        self._worst = math.inf
        self._rewards: dict[Arch, float | None] = {}
        self._off_policy: set[Arch] = set()

    def _reward(self, value: float) -> float | None:
        """The reward of a trial value (failed/infeasible: the worst so far, None if none yet)."""
        if math.isfinite(value):
            self._worst = min(self._worst, value)
            return value
        return self._worst if math.isfinite(self._worst) else None

    def _update(self, arch: Arch, reward: float | None) -> None:
        """Add a sample of ``arch`` to the batch; step on the batch once it holds ``aggregate``."""
        if reward is None:
            return
        with torch.no_grad():
            _, entropy = self.controller.evaluate(arch)
        reward = reward + self.entropy_weight * float(entropy)
        baseline = reward if self.baseline is None else self.baseline
        self._batch.append((arch, reward - baseline))
        self.baseline = self.baseline_decay * baseline + (1 - self.baseline_decay) * reward
        if len(self._batch) == self.aggregate:
            self._step()

    def _step(self) -> None:
        """One Adam step on the mean REINFORCE loss of the batch (the policy has not changed
        since its archs were sampled, so their log-probabilities are evaluated now)."""
        losses = [-advantage * self.controller.evaluate(arch)[0] for arch, advantage in self._batch]
        loss = torch.stack(losses).sum() / len(losses)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self._batch = []

    def ask(self) -> Arch | None:
        for _ in range(self.max_retries):
            with torch.no_grad():
                arch = self.controller.sample(self.rng).arch
            if not self.space.is_valid(arch):  # breaks a constraint of the space: a known failure
                self._update(arch, self._reward(-math.inf))
                continue
            if self.is_new(arch):
                return arch
            if arch in self._rewards:
                self._update(arch, self._rewards[arch])
        arch = self.sample_new()
        if arch is not None:
            self._off_policy.add(arch)
        return arch

    def tell(self, trial: Trial) -> None:
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
            "batch": [(a.to_dict(), advantage) for a, advantage in self._batch],
            "worst": self._worst,
            "rewards": [(a.to_dict(), r) for a, r in self._rewards.items()],
            "off_policy": [a.to_dict() for a in self._off_policy],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = state["baseline"]
        self._batch = [(Arch(a), float(advantage)) for a, advantage in state["batch"]]
        self._worst = float(state["worst"])
        self._rewards = {Arch(a): r for a, r in state["rewards"]}
        self._off_policy = {Arch(a) for a in state["off_policy"]}
