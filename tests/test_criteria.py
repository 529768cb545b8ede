"""Training criteria: values on small hand-computed inputs, and the special cases that reduce to
cross-entropy (MixUp with lambda 1, label smoothing 0, distillation with alpha 0)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from nasforge.core.errors import ConfigError
from nasforge.tasks.criteria import (
    CrossEntropy,
    FocalLoss,
    KnowledgeDistillation,
    MixUp,
    TripletLoss,
    kd_loss,
    make_criterion,
    mixup_batch,
)
from nasforge.tasks.training import TrainSettings, train_model

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
LABELS = torch.tensor([0, 2])


def _log_softmax_by_hand(row: list[float]) -> list[float]:
    total = math.log(sum(math.exp(v) for v in row))
    return [v - total for v in row]


def test_cross_entropy_by_hand() -> None:
    expected = -(_log_softmax_by_hand([2.0, 0.0, -1.0])[0] + _log_softmax_by_hand([0.5, 1.5, 0.0])[2]) / 2
    assert float(CrossEntropy()(LOGITS, LABELS)) == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_by_hand_and_zero_is_cross_entropy() -> None:
    eps, k = 0.1, 3
    rows = [_log_softmax_by_hand([2.0, 0.0, -1.0]), _log_softmax_by_hand([0.5, 1.5, 0.0])]
    # target: 1 - eps + eps / k on the label, eps / k elsewhere
    expected = (
        -sum(
            sum((1 - eps + eps / k if j == label else eps / k) * row[j] for j in range(k))
            for row, label in zip(rows, (0, 2), strict=True)
        )
        / 2
    )
    assert float(make_criterion("label_smoothing", {"smoothing": eps})(LOGITS, LABELS)) == pytest.approx(
        expected, rel=1e-6
    )
    zero = make_criterion("label_smoothing", {"smoothing": 0.0})(LOGITS, LABELS)
    assert torch.allclose(zero, F.cross_entropy(LOGITS, LABELS))


def test_focal_loss_by_hand() -> None:
    p0 = math.exp(_log_softmax_by_hand([2.0, 0.0, -1.0])[0])
    p1 = math.exp(_log_softmax_by_hand([0.5, 1.5, 0.0])[2])
    expected = (-((1 - p0) ** 2) * math.log(p0) - (1 - p1) ** 2 * math.log(p1)) / 2
    assert float(FocalLoss()(LOGITS, LABELS)) == pytest.approx(expected, rel=1e-6)
    assert torch.allclose(FocalLoss(gamma=0.0)(LOGITS, LABELS), F.cross_entropy(LOGITS, LABELS))


def test_triplet_batch_hard_by_hand() -> None:
    # 1-D embeddings: class 0 at 0 and 1, class 1 at 3 and 5.
    embeddings = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # anchor 0: d+ 1, d- 3 -> relu(1 - 3 + m); anchor 1: 1, 2; anchor 2: 2, 2; anchor 3: 2, 4
    margin = 0.5
    expected = sum(max(0.0, dp - dn + margin) for dp, dn in ((1, 3), (1, 2), (2, 2), (2, 4))) / 4
    assert float(TripletLoss(margin)(embeddings, labels)) == pytest.approx(expected)


def test_triplet_zero_when_classes_are_separated_by_more_than_the_margin() -> None:
    embeddings = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    assert float(TripletLoss(margin=0.2)(embeddings, torch.tensor([0, 0, 1, 1]))) == 0.0


def test_kd_by_hand_and_alpha_zero_is_cross_entropy() -> None:
    teacher = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    temperature, alpha = 2.0, 0.7
    kl = 0.0
    for s_row, t_row in zip(LOGITS.tolist(), teacher.tolist(), strict=True):
        log_s = _log_softmax_by_hand([v / temperature for v in s_row])
        log_t = _log_softmax_by_hand([v / temperature for v in t_row])
        kl += sum(math.exp(lt) * (lt - ls) for lt, ls in zip(log_t, log_s, strict=True))
    expected = alpha * temperature**2 * kl / 2 + (1 - alpha) * float(F.cross_entropy(LOGITS, LABELS))
    assert float(kd_loss(LOGITS, teacher, LABELS, temperature, alpha)) == pytest.approx(expected, rel=1e-6)
    assert torch.allclose(kd_loss(LOGITS, teacher, LABELS, 4.0, 0.0), F.cross_entropy(LOGITS, LABELS))


def test_kd_criterion_runs_the_teacher_on_the_inputs() -> None:
    teacher = nn.Linear(4, 3)
    images = torch.randn(5, 4)
    labels = torch.tensor([0, 1, 2, 0, 1])
    criterion = KnowledgeDistillation(teacher, temperature=3.0, alpha=0.5)
    inputs, targets = criterion.prepare(images, labels)
    student = torch.randn(5, 3, requires_grad=True)
    loss = criterion(student, targets)
    assert torch.allclose(loss, kd_loss(student, teacher(images), labels, 3.0, 0.5))
    loss.backward()
    assert teacher.weight.grad is None  # the teacher is not trained


def test_mixup_with_lambda_one_is_cross_entropy() -> None:
    images = torch.randn(2, 3)
    mixed, targets = mixup_batch(images, LABELS, 1.0, torch.tensor([1, 0]))
    assert torch.equal(mixed, images)
    assert torch.allclose(MixUp()(LOGITS, targets), F.cross_entropy(LOGITS, LABELS))


def test_mixup_mixes_inputs_and_targets() -> None:
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mixed, targets = mixup_batch(images, LABELS, 0.25, torch.tensor([1, 0]))
    assert torch.allclose(mixed, torch.tensor([[0.25, 0.75], [0.75, 0.25]]))
    expected = 0.25 * F.cross_entropy(LOGITS, LABELS) + 0.75 * F.cross_entropy(LOGITS, LABELS.flip(0))
    assert torch.allclose(MixUp()(LOGITS, targets), expected)
    torch.manual_seed(0)
    _, (_, _, lam) = MixUp(alpha=0.2).prepare(images, LABELS)
    assert 0.0 <= lam <= 1.0


def test_make_criterion_rejects_bad_names_and_options() -> None:
    with pytest.raises(ConfigError, match="unknown criterion 'cross'"):
        make_criterion("cross")
    with pytest.raises(ConfigError, match="gama"):
        make_criterion("focal", {"gama": 2})
    with pytest.raises(ConfigError, match="teacher"):
        make_criterion("kd")
    with pytest.raises(ConfigError, match="alpha"):
        make_criterion("mixup", {"alpha": 0.0})


def test_train_settings_select_the_criterion() -> None:
    assert TrainSettings().make_criterion()(LOGITS, LABELS) == pytest.approx(float(F.cross_entropy(LOGITS, LABELS)))
    smoothed = TrainSettings(label_smoothing=0.1).make_criterion()
    assert float(smoothed(LOGITS, LABELS)) == pytest.approx(float(F.cross_entropy(LOGITS, LABELS, label_smoothing=0.1)))
    with pytest.raises(ValueError, match="gama"):
        TrainSettings(criterion="focal", criterion_options={"gama": 2.0})


@pytest.mark.parametrize("name", ["focal", "mixup", "label_smoothing"])
def test_train_model_trains_with_each_criterion(name: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    report = train_model(nn.Linear(4, 2), data, TrainSettings(epochs=2, batch_size=16, criterion=name), seed=0)
    assert all(math.isfinite(v) for v in report.train_loss)


def test_train_model_distils_from_a_teacher() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    settings = TrainSettings(epochs=1, batch_size=16, criterion="kd", criterion_options={"alpha": 1.0})
    with pytest.raises(ConfigError, match="teacher"):
        train_model(nn.Linear(4, 2), data, settings, seed=0)
    report = train_model(nn.Linear(4, 2), data, settings, seed=0, teacher=nn.Linear(4, 2))
    assert math.isfinite(report.train_loss[0])
