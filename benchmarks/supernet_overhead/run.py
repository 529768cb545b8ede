"""Overhead of weight sharing: one supernet training step vs the same path written by hand.

Both sides train the same NB201 path on the same minibatch with the same optimiser (SGD,
Nesterov momentum, weight decay, gradient clipping, learning rate set every step, the loss read
back): nasforge's side is ``SupernetTrainer.train_arch`` on the NB201 supernet (activating the
path, running it through its MixedOps, stepping an optimiser over every candidate's weights);
the other side is a network written here in plain PyTorch with exactly the path's layers. Steps
alternate between the two so that load on the machine hits both alike; the medians are compared.

    .venv/bin/python benchmarks/supernet_overhead/run.py            # writes its section of docs/benchmarks.md
    .venv/bin/python benchmarks/supernet_overhead/run.py --steps 50 --no-docs
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from nasforge.oneshot.rules import get_rule
from nasforge.oneshot.trainer import SupernetSettings, SupernetTrainer
from nasforge.spaces.nb201 import NB201Space

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared reporting module
from reporting import cpu_model, write_doc_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SECTION = "supernet_overhead"
#: The path: every op but ``none`` appears, so the hand-written cell below is its exact twin.
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
#: (label, C, N, input side, channels): a digits-sized and a Fashion-MNIST-sized network.
SETTINGS = [("digits 1x8x8, C=8, N=1", 8, 1, 8, 1), ("Fashion-MNIST 1x28x28, C=16, N=2", 16, 2, 28, 1)]


def relu_conv_bn(c_in: int, c_out: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out))


class PlainCell(nn.Module):
    """``ARCH`` by hand: n1 = conv3(x); n2 = conv3(x) + pool(n1); n3 = x + conv1(n1) + conv3(n2)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv_1_0 = relu_conv_bn(c, c, 3)
        self.conv_2_0 = relu_conv_bn(c, c, 3)
        self.pool_2_1 = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.conv_3_1 = relu_conv_bn(c, c, 1)
        self.conv_3_2 = relu_conv_bn(c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n1 = self.conv_1_0(x)
        n2 = self.conv_2_0(x) + self.pool_2_1(n1)
        return x + self.conv_3_1(n1) + self.conv_3_2(n2)


class PlainReduction(nn.Module):
    """NB201's residual block between stages, by hand."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.a = relu_conv_bn(c_in, c_out, 3, 2)
        self.b = relu_conv_bn(c_out, c_out, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.b(self.a(x))


def plain_network(c: int, n: int, in_channels: int, classes: int = 10) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)]
    for stage, width in enumerate((c, 2 * c, 4 * c)):
        if stage:
            layers.append(PlainReduction(width // 2, width))
        layers += [PlainCell(width) for _ in range(n)]
    layers += [nn.BatchNorm2d(4 * c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * c, classes)]
    return nn.Sequential(*layers)


def measure(c: int, n: int, side: int, channels: int, steps: int, batch: int) -> dict[str, float]:
    """Median seconds per training step of the supernet path and of the plain network."""
    torch.manual_seed(0)
    space = NB201Space(C=c, N=n, in_channels=channels)
    arch = space.parse(ARCH)
    settings = SupernetSettings(
        epochs=0, batch_size=batch, lr=0.05, momentum=0.9, nesterov=True, weight_decay=4e-5, grad_clip=5.0, bn_batches=0, eval_batches=0
    )
    trainer = SupernetTrainer(space.supernet(), space, get_rule("enas"), settings, seed=0)  # enas: steps on one given arch
    images, labels = torch.randn(batch, channels, side, side), torch.randint(0, 10, (batch,))
    plain = plain_network(c, n, channels)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in space.build(arch).parameters())
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=4e-5)
    order = torch.randperm(batch, generator=torch.Generator().manual_seed(0))

    def plain_step() -> None:
        for group in optimizer.param_groups:
            group["lr"] = 0.05
        plain.train()
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(plain(images[order]), labels[order])
        loss.backward()
        loss.item()
        nn.utils.clip_grad_norm_(plain.parameters(), 5.0)
        optimizer.step()

    def supernet_step() -> None:
        trainer.train_arch(arch, (images, labels), 1)

    times: dict[str, list[float]] = {"plain": [], "supernet": []}
    for i in range(steps + 5):
        for name, step in (("plain", plain_step), ("supernet", supernet_step))[:: 1 if i % 2 else -1]:
            started = time.perf_counter()
            step()
            if i >= 5:  # warm-up
                times[name].append(time.perf_counter() - started)
    plain_ms, supernet_ms = (1000 * statistics.median(times[k]) for k in ("plain", "supernet"))
    return {"plain_ms": plain_ms, "supernet_ms": supernet_ms, "ratio": supernet_ms / plain_ms}






def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per side and setting")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    rows = []
    for label, c, n, side, channels in SETTINGS:
        result = measure(c, n, side, channels, args.steps, args.batch)
        rows.append((label, result))
        print(json.dumps({"setting": label, **{k: round(v, 4) for k, v in result.items()}}))
    if args.no_docs:
        return
    table = "\n".join(
        f"| {label} | {r['plain_ms']:.2f} | {r['supernet_ms']:.2f} | {r['ratio']:.3f} |" for label, r in rows
    )
    write_doc_section(SECTION,
        f"""## Supernet training step overhead

`{Path(__file__).relative_to(ROOT)} --steps {args.steps} --batch {args.batch} --threads {args.threads}`
({datetime.date.today().isoformat()}; {cpu_model()}, {torch.get_num_threads()} thread(s) of {os.cpu_count()} cores,
torch {torch.__version__}, Python {platform.python_version()}; load average {load:.1f} at the start: the machine
is shared, which is why the two sides alternate step by step).

One SGD step (forward, backward, gradient clipping, Nesterov momentum, weight decay) on the NB201
path `{ARCH}`, batch {args.batch}: nasforge's `SupernetTrainer` on the supernet (every edge a
MixedOp over the 5 ops) vs a hand-written plain-PyTorch network of exactly that path. Median of
{args.steps} alternating steps each. Target: ratio <= 1.10.

| network | plain ms/step | supernet ms/step | ratio |
|---|---:|---:|---:|
{table}
"""
    )


if __name__ == "__main__":
    main()
