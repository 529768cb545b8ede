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
    with pytest.raises(ConfigError, match="unknown criterion type 'cross'"):
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
    start = nn.Linear(4, 2)
    twin = nn.Linear(4, 2)
    twin.load_state_dict(start.state_dict())
    chosen = train_model(start, data, TrainSettings(epochs=1, batch_size=16, criterion=name), seed=0)
    plain = train_model(twin, data, TrainSettings(epochs=1, batch_size=16), seed=0)
    assert chosen.train_loss[0] != pytest.approx(plain.train_loss[0])  # the criterion reached the loop


def test_train_model_distils_from_a_teacher() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    settings = TrainSettings(epochs=1, batch_size=16, criterion="kd", criterion_options={"alpha": 1.0})
    with pytest.raises(ConfigError, match="teacher"):
        train_model(nn.Linear(4, 2), data, settings, seed=0)
    report = train_model(nn.Linear(4, 2), data, settings, seed=0, teacher=nn.Linear(4, 2))
    assert math.isfinite(report.train_loss[0])
    student, twin, teacher = nn.Linear(4, 2), nn.Linear(4, 2), nn.Linear(4, 2)
    twin.load_state_dict(student.state_dict())
    silent = nn.Linear(4, 2)
    nn.init.zeros_(silent.weight), nn.init.zeros_(silent.bias)
    taught = train_model(student, data, settings, seed=0, teacher=teacher)
    uniform = train_model(twin, data, settings, seed=0, teacher=silent)  # same student, another teacher
    assert taught.train_loss[0] != pytest.approx(uniform.train_loss[0])


# -- own data in a few lines: any Dataset, a user's loss and a user's metric (issue #8, item 4) ----

USER_TASK = '''
import torch
from torch.utils.data import Dataset

CALLS = {"loss": 0, "metric": 0}


class Blobs(Dataset):
    """Three classes of 1x8x8 images whose mean brightness is the class."""

    def __init__(self, n, seed):
        noise = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
        self.labels = torch.arange(n) % 3
        self.images = 0.5 * noise + self.labels[:, None, None, None].float()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def datasets():
    return Blobs(240, 0), Blobs(60, 1)


def hinge(outputs, labels, margin=1.0):
    CALLS["loss"] += 1
    return torch.nn.functional.multi_margin_loss(outputs, labels, margin=margin)


def macro_recall(outputs, labels):
    CALLS["metric"] += 1
    predicted = outputs.argmax(1)
    return sum(float((predicted[labels == c] == c).float().mean()) for c in range(3)) / 3
'''


@pytest.fixture
def user_task(tmp_path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """``my_task.py`` in the working directory, imported by module path as a config names it."""
    import sys

    (tmp_path / "my_task.py").write_text(USER_TASK)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("my_task", None)


def test_own_dataset_loss_and_metric_through_run_search_and_final_training(user_task) -> None:  # type: ignore[no-untyped-def]
    import sys

    from nasforge.core import registry
    from nasforge.core.registry import ComponentSpec
    from nasforge.estimators.scratch import ScratchTraining
    from nasforge.objectives.basic import SingleMetric
    from nasforge.runner.final import train_final
    from nasforge.runner.loop import run_search
    from nasforge.strategies.random_search import RandomSearch
    from nasforge.tasks.datasets import CustomDataset

    torch.set_num_threads(1)
    data = CustomDataset(factory="my_task:datasets").load(0)
    space = registry.create("space", "nb201", {"C": 4, "N": 1}, context=data.context())
    options = {"criterion": "my_task:hinge", "criterion_options": {"margin": 0.5}, "metric": "my_task:macro_recall"}
    estimator = ScratchTraining(epochs=2, batch_size=32, **options)  # type: ignore[arg-type]
    result = run_search(space, RandomSearch(), estimator, SingleMetric("val_metric"), budget=2, run_dir=user_task / "run", data=data)
    assert all(t.ok for t in result.trials), [t.error for t in result.trials]
    assert all(0.0 <= t.metrics["val_metric"] <= 1.0 and "val_acc" in t.metrics for t in result.trials)
    calls = sys.modules["my_task"].CALLS
    assert calls["loss"] > 0 and calls["metric"] == 2  # the user's loss trained, the metric scored each trial once
    settings = TrainSettings(epochs=1, batch_size=32, **options)  # type: ignore[arg-type]
    final = user_task / "final"
    metrics = train_final(
        space, ComponentSpec(type="nb201", C=4, N=1), data, ComponentSpec(type="custom", factory="my_task:datasets"),
        result.best(1)[0].arch, settings, seed=0, out_dir=final,
    )
    assert 0.0 <= metrics["test_metric"] <= 1.0
    # the kd criterion names its teacher in the config: the model folder just written
    student = ScratchTraining(epochs=1, batch_size=32, criterion="kd", criterion_options={"teacher": str(final)})
    distilled = run_search(space, RandomSearch(), student, SingleMetric(), budget=1, run_dir=user_task / "kd", data=data)
    assert distilled.trials[0].ok, distilled.trials[0].error


def test_bad_user_functions_are_named(user_task) -> None:  # type: ignore[no-untyped-def]
    from nasforge.core.errors import CheckpointError
    from nasforge.tasks.datasets import CustomDataset
    from nasforge.tasks.model_folder import load_teacher
    from nasforge.tasks.training import evaluate_model

    with pytest.raises(ValueError, match="criterion 'my_task:nope': my_task has no function 'nope'"):
        TrainSettings(criterion="my_task:nope")
    with pytest.raises(ValueError, match="metric 'missing_module:f': cannot import missing_module"):
        TrainSettings(metric="missing_module:f")
    with pytest.raises(ValueError, match="criterion"):
        TrainSettings(criterion="hinge")  # neither a name nor a path
    with pytest.raises(ConfigError, match="must return a scalar tensor"):
        make_criterion("my_task:macro_recall")(LOGITS, LABELS)
    x = torch.randn(8, 4)
    with pytest.raises(ConfigError, match="metric '<lambda>' must return a number"):
        evaluate_model(nn.Linear(4, 2), TensorDataset(x, torch.zeros(8, dtype=torch.long)), metric=lambda o, t: "high")
    settings = TrainSettings(criterion="kd", criterion_options={"teacher": str(user_task)})
    with pytest.raises(CheckpointError, match="is not a model folder"):
        load_teacher(settings, CustomDataset(factory="my_task:datasets").load(0))


def test_label_smoothing_out_of_range_names_its_own_option() -> None:
    with pytest.raises(ConfigError, match="smoothing must be in"):
        make_criterion("label_smoothing", {"smoothing": 1.5})
