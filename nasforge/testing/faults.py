"""An estimator that misbehaves on purpose, for testing executors' fault handling."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np

from nasforge.core.arch import Arch
from nasforge.core.estimator import Context
from nasforge.core.trial import Result
from nasforge.testing import SyntheticEstimator, toy_score

__all__ = ["FaultyEstimator"]


class FaultyEstimator(SyntheticEstimator):
    """:class:`SyntheticEstimator` that sleeps a seeded random time up to ``jitter_s`` (so trials
    finish out of order), kills its own process with SIGKILL on the first attempt of trial seed
    ``kill_seed`` (``marker_dir`` remembers the attempt), and sleeps ``hang_s`` on ``hang_seed``."""

    def __init__(
        self,
        jitter_s: float = 0.0,
        kill_seed: int | None = None,
        marker_dir: str | None = None,
        hang_seed: int | None = None,
        hang_s: float = 0.0,
        kill_always: bool = False,
    ) -> None:
        super().__init__(toy_score, noise=1.0)
        self.jitter_s, self.kill_seed, self.marker_dir = jitter_s, kill_seed, marker_dir
        self.hang_seed, self.hang_s, self.kill_always = hang_seed, hang_s, kill_always

    def estimate(self, arch: Arch, ctx: Context) -> Result:
        if self.jitter_s:
            time.sleep(float(np.random.default_rng(ctx.seed + 1).uniform(0, self.jitter_s)))
        if ctx.seed == self.kill_seed:
            marker = Path(self.marker_dir or ".") / f"killed-{ctx.seed}"
            if self.kill_always or not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
        if ctx.seed == self.hang_seed:
            time.sleep(self.hang_s)
        return super().estimate(arch, ctx)
