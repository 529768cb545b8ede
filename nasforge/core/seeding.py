"""Seeds: one run seed, from which every trial's seed is derived deterministically."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

__all__ = ["derive_seed", "seed_everything", "seeded"]


def derive_seed(run_seed: int, *keys: int | str) -> int:
    """A 31-bit seed derived from the run seed and keys (trial number, purpose).

    The same inputs always give the same seed, whatever happened before (resume-safe).
    """
    words = [run_seed] + [k if isinstance(k, int) else int.from_bytes(k.encode()[:8].ljust(8, b"\0"), "little") for k in keys]
    return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's legacy and torch's global generators (for library code we call)."""
    random.seed(seed)
    np.random.seed(seed)
    import torch

    torch.manual_seed(seed)


@contextmanager
def seeded(seed: int, device: str = "cpu") -> Iterator[None]:
    """Run a block with torch's CPU generator (and ``device``'s, if CUDA) seeded by ``seed``.

    The generators' states are restored on leaving, so code outside is unaffected.
    """
    import torch

    target = torch.device(device)
    on_cuda = target.type == "cuda"
    with torch.random.fork_rng(devices=[target] if on_cuda else []):
        torch.default_generator.manual_seed(seed)
        if on_cuda:
            with torch.cuda.device(target):
                torch.cuda.manual_seed(seed)
        yield
