"""Learned sampling policies ("controllers") over a list of choices.

A controller maps the decisions of a search space to a distribution over archs. ``sample``
draws an arch and returns its log-probability and entropy as differentiable tensors, so any
policy-gradient method (the ``reinforce`` strategy, whose ``enas`` preset is ENAS's controller
training) can train it. ``evaluate`` scores a given arch the same way.

Two controllers:

- :class:`IndependentController`: one categorical distribution per choice, the policy of
  NAS-Bench-201's REINFORCE baseline (Dong & Yang 2020).
- :class:`LSTMController`: the ENAS controller (Pham et al. 2018, "Efficient Neural Architecture
  Search via Parameter Sharing", ICML): an LSTM reads the embedding of each previous decision
  and a softmax head per choice emits the next, with logits ``tanh_constant * tanh(h / T)``.

Randomness comes from a NumPy generator passed in, never from torch's global one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from nasforge.core.arch import Arch, Choice

__all__ = ["PolicySample", "Controller", "IndependentController", "LSTMController"]


@dataclass(frozen=True)
class PolicySample:
    """One draw of a controller: the arch, its candidate indices, log-probability and entropy."""

    arch: Arch
    indices: tuple[int, ...]
    log_prob: Tensor
    entropy: Tensor


def _draw(logits: Tensor, rng: np.random.Generator) -> int:
    """Sample an index from ``softmax(logits)`` with a NumPy generator."""
    probs = torch.softmax(logits.detach().double(), dim=-1).numpy()
    cumulative = np.cumsum(probs)
    return min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), len(probs) - 1)


def _fill_uniform(module: nn.Module, rng: np.random.Generator, bound: float) -> None:
    """Set every parameter of ``module`` to draws from U(-bound, bound) (seeded, reproducible)."""
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.from_numpy(rng.uniform(-bound, bound, size=tuple(param.shape))))


class Controller(nn.Module, ABC):
    """Base of the policies: a distribution over the archs of a list of choices.

    Args:
        choices: the decisions, in the order they are taken.
    """

    def __init__(self, choices: Sequence[Choice]) -> None:
        super().__init__()
        if not choices:
            raise ValueError("a controller needs at least one choice")
        self.choices = tuple(choices)

    @abstractmethod
    def _run(self, indices: Sequence[int] | None, rng: np.random.Generator | None) -> tuple[list[int], Tensor, Tensor]:
        """Walk the choices in order, taking ``indices`` if given else sampling with ``rng``.

        Returns the indices, the summed log-probability and the summed entropy.
        """

    def sample(self, rng: np.random.Generator) -> PolicySample:
        """Draw an arch; its ``log_prob`` and ``entropy`` carry gradients to the parameters."""
        indices, log_prob, entropy = self._run(None, rng)
        return PolicySample(self.to_arch(indices), tuple(indices), log_prob, entropy)

    def evaluate(self, arch: Arch) -> tuple[Tensor, Tensor]:
        """Log-probability and entropy (with gradients) of the policy producing ``arch``."""
        _, log_prob, entropy = self._run(self.to_indices(arch), None)
        return log_prob, entropy

    def to_arch(self, indices: Sequence[int]) -> Arch:
        """The arch of one candidate index per choice."""
        return Arch({c.name: c.candidates[i] for c, i in zip(self.choices, indices, strict=True)})

    def to_indices(self, arch: Arch) -> list[int]:
        """The candidate index of each choice in ``arch``."""
        return [c.index(arch[c.name]) for c in self.choices]


class IndependentController(Controller):
    """One categorical distribution per choice, with learnable logits (start near uniform).

    Args:
        choices: the decisions.
        rng: generator for the initial logits (``1e-3 * N(0, 1)``, as NAS-Bench-201's baseline).
    """

    def __init__(self, choices: Sequence[Choice], rng: np.random.Generator | None = None) -> None:
        super().__init__(choices)
        rng = rng if rng is not None else np.random.default_rng(0)
        self.logits = nn.ParameterList(
            nn.Parameter(torch.from_numpy(1e-3 * rng.standard_normal(len(c))).float()) for c in self.choices
        )

    def _run(self, indices: Sequence[int] | None, rng: np.random.Generator | None) -> tuple[list[int], Tensor, Tensor]:
        taken: list[int] = []
        log_prob, entropy = torch.zeros(()), torch.zeros(())
        for step, logits in enumerate(self.logits):
            log_p = torch.log_softmax(logits, dim=-1)
            index = indices[step] if indices is not None else _draw(logits, rng)  # type: ignore[arg-type]
            taken.append(index)
            log_prob = log_prob + log_p[index]
            entropy = entropy - (log_p.exp() * log_p).sum()
        return taken, log_prob, entropy

    def probabilities(self) -> list[np.ndarray]:
        """The current probability of each candidate, per choice."""
        return [torch.softmax(logits.detach(), dim=-1).numpy() for logits in self.logits]


class LSTMController(Controller):
    """The ENAS controller: an LSTM over the sequence of decisions.

    Step ``t`` feeds the embedding of decision ``t-1`` (a learned start vector at ``t=0``) to
    the LSTM; head ``t`` turns the hidden state into logits over choice ``t``'s candidates,
    ``tanh_constant * tanh(logits / temperature)`` (ENAS's sampling-logit control).

    Args:
        choices: the decisions.
        hidden_size: LSTM width (NAS-Bench-201's ENAS used 32).
        num_layers: stacked LSTM layers (NAS-Bench-201's ENAS used 2).
        temperature: divides the logits before the tanh (ENAS: 5.0).
        tanh_constant: bounds the logits to ``[-c, c]``; 0 disables the tanh (ENAS: 2.5).
        rng: generator for the initial weights, U(-0.1, 0.1) as in ENAS.
    """

    def __init__(
        self,
        choices: Sequence[Choice],
        hidden_size: int = 32,
        num_layers: int = 2,
        temperature: float = 5.0,
        tanh_constant: float = 2.5,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__(choices)
        self.temperature = temperature
        self.tanh_constant = tanh_constant
        self.start = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers)
        self.embeddings = nn.ModuleList(nn.Embedding(len(c), hidden_size) for c in self.choices)
        self.heads = nn.ModuleList(nn.Linear(hidden_size, len(c)) for c in self.choices)
        _fill_uniform(self, rng if rng is not None else np.random.default_rng(0), 0.1)

    def _run(self, indices: Sequence[int] | None, rng: np.random.Generator | None) -> tuple[list[int], Tensor, Tensor]:
        taken: list[int] = []
        log_prob, entropy = torch.zeros(()), torch.zeros(())
        inputs, state = self.start, None
        for step, (head, embedding) in enumerate(zip(self.heads, self.embeddings, strict=True)):
            output, state = self.lstm(inputs, state)
            logits = head(output[0, 0]) / self.temperature
            if self.tanh_constant:
                logits = self.tanh_constant * torch.tanh(logits)
            log_p = torch.log_softmax(logits, dim=-1)
            index = indices[step] if indices is not None else _draw(logits, rng)  # type: ignore[arg-type]
            taken.append(index)
            log_prob = log_prob + log_p[index]
            entropy = entropy - (log_p.exp() * log_p).sum()
            inputs = embedding(torch.tensor([[index]]))
        return taken, log_prob, entropy
