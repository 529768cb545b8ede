"""The training loop, evaluation and the train-from-scratch estimator."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError
from nasforge.core.estimator import Context
from nasforge.core.registry import create
from nasforge.tasks.splits import DataSplits
from nasforge.tasks.training import TrainSettings, evaluate, train_model
from nasforge.testing import ToySpace


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return create("dataset", "digits").load(0)


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


class PlainDataset(Dataset):
    """A dataset that is not tensor-backed, to exercise the DataLoader path."""

    def __init__(self, inner: TensorDataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner[i]


def test_settings_validation() -> None:
    with pytest.raises(pydantic.ValidationError, match="epochs"):
        TrainSettings(epochs=0)
    with pytest.raises(pydantic.ValidationError, match="extra"):
        TrainSettings(learning_rate=0.1)
    with pytest.raises(pydantic.ValidationError, match="nesterov"):
        TrainSettings(momentum=0.0)
    with pytest.raises(pydantic.ValidationError, match="warmup_epochs"):
        TrainSettings(epochs=2, warmup_epochs=2)
    TrainSettings(momentum=0.0, nesterov=False)


def test_cosine_schedule_with_warmup() -> None:
    plain = TrainSettings(lr=0.1, epochs=4)
    assert plain.lr_at(0, 40, 10) == pytest.approx(0.1)
    assert plain.lr_at(20, 40, 10) == pytest.approx(0.05)
    assert plain.lr_at(39, 40, 10) < 0.001
    warm = TrainSettings(lr=0.1, epochs=4, warmup_epochs=1)
    assert [warm.lr_at(s, 40, 10) for s in (0, 4, 9)] == pytest.approx([0.01, 0.05, 0.1])
    assert warm.lr_at(10, 40, 10) == pytest.approx(0.1)
    assert warm.lr_at(25, 40, 10) == pytest.approx(0.05 * (1 + math.cos(math.pi * 15 / 30)))


def test_training_improves_accuracy(digits: DataSplits) -> None:
    model = tiny_net()
    before, _ = evaluate(model, digits.valid, batch_size=256)
    epochs_seen: list[int] = []
    report = train_model(
        model,
        digits.train,
        TrainSettings(epochs=4, lr=0.1),
        seed=0,
        eval_set=digits.valid,
        progress=lambda epoch, n, metrics: epochs_seen.append(epoch),
    )
    assert epochs_seen == [1, 2, 3, 4] and report.epochs == 4
    assert len(report.train_loss) == len(report.train_acc) == 4
    assert report.train_loss[-1] < report.train_loss[0]
    assert report.eval_acc is not None and report.eval_acc > max(60.0, before + 30.0)
    assert report.eval_loss is not None and report.seconds > 0
    assert model.training  # evaluation restored the mode


def test_same_seed_same_result_and_global_rng_untouched(digits: DataSplits) -> None:
    settings = TrainSettings(epochs=2)
    a = train_model(tiny_net(), digits.train, settings, seed=7, eval_set=digits.valid)
    b = train_model(tiny_net(), digits.train, settings, seed=7, eval_set=digits.valid)
    c = train_model(tiny_net(), digits.train, settings, seed=8, eval_set=digits.valid)
    assert (a.train_loss, a.train_acc, a.eval_acc, a.eval_loss) == (b.train_loss, b.train_acc, b.eval_acc, b.eval_loss)
    assert a.train_loss != c.train_loss
    model = tiny_net()
    before = torch.get_rng_state()
    train_model(model, digits.train, settings, seed=7)
    assert torch.equal(torch.get_rng_state(), before)


def test_dataloader_fallback_and_concat(digits: DataSplits) -> None:
    settings = TrainSettings(epochs=1, batch_size=128)
    plain = PlainDataset(digits.train)
    a = train_model(tiny_net(), plain, settings, seed=0, eval_set=PlainDataset(digits.valid))
    b = train_model(tiny_net(), plain, settings, seed=0, eval_set=PlainDataset(digits.valid))
    assert a.train_loss == b.train_loss and a.eval_acc == b.eval_acc
    both = train_model(tiny_net(), digits.train_and_valid, settings, seed=0)
    assert both.epochs == 1
    # Evaluating the same model through either path gives the same numbers.
    model = tiny_net()
    assert evaluate(model, digits.valid) == pytest.approx(evaluate(model, PlainDataset(digits.valid)))


def test_last_batch_of_one_is_skipped_for_batch_norm() -> None:
    data = TensorDataset(torch.randn(65, 1, 8, 8), torch.randint(0, 10, (65,)))
    report = train_model(tiny_net(), data, TrainSettings(epochs=1, batch_size=64), seed=0)
    assert report.epochs == 1


def test_non_finite_loss_is_reported() -> None:
    images = torch.randn(64, 1, 8, 8)
    images[5] = float("nan")
    data = TensorDataset(images, torch.randint(0, 10, (64,)))
    with pytest.raises(FloatingPointError, match="epoch 1"):
        train_model(tiny_net(), data, TrainSettings(epochs=2), seed=0)


# ---------------------------------------------------------------- scratch estimator

TOY_ARCH = Arch({"op": "conv3x3", "width": 8, "residual": False, "depth": 1})


def test_scratch_estimator_reports_all_metrics(digits: DataSplits) -> None:
    estimator = create("estimator", "scratch", {"epochs": 2})
    space = ToySpace()
    result = estimator.estimate(TOY_ARCH, Context(space=space, data=digits, seed=3))
    assert set(result.metrics) == {"val_acc", "val_loss", "train_acc", "train_loss", "params", "flops"}
    assert set(result.cost) == {"seconds", "epochs"} and result.cost["epochs"] == 2
    assert result.metrics["params"] == sum(p.numel() for p in space.build(TOY_ARCH).parameters())
    assert result.metrics["flops"] > result.metrics["params"]
    assert 0 <= result.metrics["val_acc"] <= 100 and len(result.extras["train_loss"]) == 2
    again = estimator.estimate(TOY_ARCH, Context(space=space, data=digits, seed=3))
    assert again.metrics == result.metrics


def test_scratch_estimator_needs_data() -> None:
    estimator = create("estimator", "scratch")
    with pytest.raises(ConfigError, match="needs a dataset"):
        estimator.estimate(TOY_ARCH, Context(space=ToySpace(), seed=0))


def test_scratch_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="epochs"):
        create("estimator", "scratch", {"epochs": 0})
    with pytest.raises(ConfigError, match="momentum"):
        create("estimator", "scratch", {"momentum": 1.5})
    with pytest.raises(ConfigError, match="warmup_epochs"):
        create("estimator", "scratch", {"epochs": 2, "warmup_epochs": 3})


def test_auxiliary_head_and_drop_path_schedule() -> None:
    """Models returning (logits, aux_logits) train on both losses; drop_path_prob ramps from 0."""
    class WithAux(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(4, 3)
            self.aux = nn.Linear(4, 3)
            self.drop_path_prob = 0.0
            self.seen: list[float] = []

        def forward(self, x: torch.Tensor):
            self.seen.append(self.drop_path_prob)
            return (self.body(x), self.aux(x)) if self.training else self.body(x)

    data = TensorDataset(torch.randn(40, 4), torch.randint(0, 3, (40,)))
    model = WithAux()
    before = model.aux.weight.detach().clone()
    train_model(model, data, TrainSettings(epochs=4, batch_size=20, drop_path_prob=0.2, aux_weight=0.4), seed=0, eval_set=data)
    assert not torch.equal(before, model.aux.weight)  # the auxiliary loss reached its head
    assert sorted(set(model.seen)) == pytest.approx([0.0, 0.05, 0.1, 0.15])
