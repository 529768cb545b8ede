"""A stand-alone training script, tuned by nasforge from the outside (``configs/hpo_command.yaml``).

It knows nothing of nasforge: it takes its hyperparameters as flags, trains a one-hidden-layer
MLP on scikit-learn's digits and prints ``val_acc=...`` after every epoch. The ``command``
estimator runs it once per trial and reads the last ``val_acc`` it printed. The seed comes from
``--seed`` or, failing that, the ``NASFORGE_TRIAL_SEED`` environment variable nasforge sets.
"""

from __future__ import annotations

import argparse
import os

import torch
from sklearn.datasets import load_digits
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=int(os.environ.get("NASFORGE_TRIAL_SEED", "0")))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    digits = load_digits()
    images = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    labels = torch.tensor(digits.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))  # fixed split
    train, valid = order[:1400], order[1400:]
    model = nn.Sequential(nn.Linear(64, args.width), nn.ReLU(), nn.Linear(args.width, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    for epoch in range(1, args.epochs + 1):
        for batch in train[torch.randperm(len(train))].split(64):
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            accuracy = (model(images[valid]).argmax(1) == labels[valid]).float().mean().item() * 100
        print(f"epoch {epoch} loss={loss.item():.4f} val_acc={accuracy:.2f}", flush=True)


if __name__ == "__main__":
    main()
