"""Elastic layers, the OFA space, progressive shrinking and the OFA pipeline from the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from nasforge.cli import main
from nasforge.core import registry
from nasforge.core.errors import ConfigError
from nasforge.core.seeding import derive_seed, seeded
from nasforge.hardware.lut import build_cost_table
from nasforge.nn.counters import count_flops
from nasforge.nn.elastic import (
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticSequential,
    ElasticSupernet,
    WidthChoice,
    elastic_kinds,
    reorganize_channels,
)
from nasforge.nn.model_space import ModelSpace
from nasforge.nn.mutables import ValueChoice, freeze
from nasforge.oneshot.progressive_shrinking import (
    ProgressiveShrinking,
    ShrinkingTrainer,
    ShrinkStage,
    StagePlan,
    distillation_loss,
)
from nasforge.oneshot.trainer import SupernetSettings
from nasforge.spaces.ofa import OFASpace

REPO = Path(__file__).resolve().parents[1]


def tiny_space(**options: object) -> OFASpace:
    """A small OFA space on 1x8x8 inputs (fast enough to train in tests)."""
    defaults = dict(
        in_channels=1, num_classes=4, input_size=(8, 8), stem_width=8, stage_widths=(8, 8, 16, 16, 16), feature_width=16
    )
    return OFASpace(**{**defaults, **options})  # type: ignore[arg-type]


# -- elastic layers ----------------------------------------------------------------------------------


def test_kernel_transform_shapes_and_centre_at_start() -> None:
    kernel = ValueChoice([3, 5, 7], "k")
    conv = ElasticConv2d(6, 6, kernel, depthwise=True)
    assert {name: tuple(p.shape) for name, p in conv.transforms.items()} == {"7to5": (25, 25), "5to3": (9, 9)}
    for k in (7, 5, 3):
        kernel.current = k
        assert conv.active_weight().shape == (6, 1, k, k)
        crop = (7 - k) // 2
        assert torch.equal(conv.active_weight(), conv.weight[:, :, crop : 7 - crop, crop : 7 - crop])  # identity at start
        assert conv(torch.randn(2, 6, 9, 9)).shape == (2, 6, 9, 9)


def test_small_kernel_is_learned_not_a_crop() -> None:
    torch.manual_seed(0)
    kernel = ValueChoice([3, 5, 7], "k")
    conv = ElasticConv2d(4, 4, kernel, depthwise=True)
    kernel.current = 3
    optimizer = torch.optim.SGD(conv.parameters(), lr=0.1)
    conv(torch.randn(8, 4, 6, 6)).pow(2).mean().backward()
    optimizer.step()
    assert not torch.allclose(conv.transforms["5to3"], torch.eye(9))
    assert not torch.allclose(conv.active_weight(), conv.weight[:, :, 2:5, 2:5])
    frozen = freeze(conv, {"k": 3})
    assert isinstance(frozen, nn.Conv2d) and frozen.kernel_size == (3, 3)
    assert torch.equal(frozen.weight, conv.active_weight())


def _width_model() -> tuple[nn.Sequential, WidthChoice]:
    width = WidthChoice("w", {1: 2, 2: 4, 3: 6})
    model = nn.Sequential(ElasticConv2d(3, width, 3), ElasticBatchNorm2d(width), nn.ReLU(), ElasticConv2d(width, 5, 1))
    return model, width


def test_width_slicing_keeps_the_most_important_channels() -> None:
    torch.manual_seed(0)
    model, width = _width_model()
    importance = torch.tensor([0.1, 0.5, 0.2, 3.0, 1.0, 2.0])
    with torch.no_grad():
        model[3].weight.copy_(importance[None, :, None, None].expand(5, 6, 1, 1) / 5)
    producer_filters = model[0].weight.detach().clone()
    model.eval()
    x = torch.randn(2, 3, 5, 5)
    before = model(x)
    assert reorganize_channels(model) == 1
    assert torch.allclose(model(x), before, atol=1e-6)  # the full width computes the same function
    assert torch.equal(model[0].weight[:2], producer_filters[[3, 5]])  # width 2 keeps channels 3 and 5
    assert torch.allclose(model[3].weight[0, :, 0, 0], importance[[3, 5, 4, 1, 2, 0]] / 5)
    width.current = 1
    assert model(x).shape == (2, 5, 5, 5)
    assert freeze(model, {"w": 1})[0].out_channels == 2


def test_channel_sorting_keeps_trained_widths_in_place() -> None:
    model, _ = _width_model()
    importance = torch.tensor([0.1, 0.5, 0.2, 3.0, 1.0, 2.0])
    with torch.no_grad():
        model[3].weight.copy_(importance[None, :, None, None].expand(5, 6, 1, 1))
    reorganize_channels(model, trained={"w": [2]})  # width 4 was trained: its channels stay first
    assert torch.allclose(model[3].weight[0, :, 0, 0], importance[[3, 1, 2, 0, 5, 4]])


def test_elastic_depth_and_kinds() -> None:
    blocks = [nn.Conv2d(2, 2, 1) for _ in range(3)]
    depth = ValueChoice([1, 2, 3], "d")
    seq = ElasticSequential(blocks, depth)
    depth.current = 2
    x = torch.randn(1, 2, 3, 3)
    assert torch.equal(seq(x), blocks[1](blocks[0](x)))
    frozen = freeze(seq, {"d": 2})
    assert isinstance(frozen, nn.Sequential) and len(frozen) == 2
    space = ModelSpace(nn.Sequential(ElasticConv2d(2, 2, ValueChoice([3, 5], "k")), seq))
    assert set(space.choices()) == {"k", "d"}  # elastic layers make an ordinary user ModelSpace
    assert elastic_kinds(space.model) == {"k": "kernel", "d": "depth"}


# -- the OFA space -------------------------------------------------------------------------------------


def test_ofa_space_imagenet_defaults() -> None:
    space = OFASpace()
    assert len(space.choices()) == 5 + 2 * 20
    largest = space.named("largest")
    assert space.format(largest) == "_".join(["-".join(["k7e6"] * 4)] * 5)
    kinds = space.elastic_kinds()
    assert kinds["stage1.depth"] == "depth" and kinds["stage3.block2.kernel"] == "kernel"
    assert kinds["stage5.block4.expand"] == "width"
    child = space.build(space.named("mobilenet_v2"))
    assert child.blocks[1][0].depthwise[0].kernel_size == (3, 3)
    assert child.blocks[1][0].expand[0].out_channels == 16 * 6


def test_notation_round_trip_and_errors() -> None:
    space = tiny_space()
    rng = np.random.default_rng(0)
    for _ in range(10):
        text = space.format(space.sample(rng))
        assert space.format(space.parse(text)) == text
    with pytest.raises(Exception, match="stage"):
        space.parse("k3e3")
    with pytest.raises(ConfigError, match="one entry per stage"):
        OFASpace(stage_widths=(16, 24))


def test_export_equals_supernet_and_loads_into_build() -> None:
    torch.manual_seed(0)
    space = tiny_space()
    supernet = space.supernet()
    supernet.train()
    supernet(torch.randn(16, 1, 8, 8))  # batch-norm statistics away from their initial values
    supernet.eval()
    x = torch.randn(4, 1, 8, 8)
    rng = np.random.default_rng(1)
    for arch in [space.named("smallest"), space.named("largest"), *(space.sample(rng) for _ in range(4))]:
        supernet.activate(arch)
        with torch.no_grad():
            expected = supernet(x)
            child = supernet.export(arch).eval()
            assert torch.allclose(child(x), expected, atol=1e-5)
        assert not any(isinstance(m, (ElasticConv2d, ElasticBatchNorm2d, ElasticSequential)) for m in child.modules())
        space.build(arch).load_state_dict(child.state_dict())  # what `nasforge train --init-from` needs


def test_cost_table_is_exact() -> None:
    space = tiny_space()
    table = build_cost_table(space, "flops", (1, 8, 8))
    rng = np.random.default_rng(2)
    for arch in [space.named("smallest"), space.named("largest"), space.sample(rng)]:
        assert table.predict(arch) == count_flops(space.build(arch), (1, 8, 8))


# -- progressive shrinking -------------------------------------------------------------------------------

STAGES = [
    ShrinkStage(elastic="none", epochs=1),
    ShrinkStage(elastic="kernel", epochs=1),
    ShrinkStage(elastic="depth", epochs=1),
    ShrinkStage(elastic="width", epochs=1),
]


def test_stage_order_and_opened_candidates() -> None:
    space = tiny_space()
    plan = StagePlan(STAGES, space)
    opened = [plan.opened(i) for i in range(4)]
    assert opened[0]["stage1.block1.kernel"] == [7] and opened[0]["stage1.depth"] == [4]
    assert opened[1]["stage1.block1.kernel"] == [7, 5, 3] and opened[1]["stage1.depth"] == [4]
    assert opened[2]["stage1.depth"] == [4, 3, 2] and opened[2]["stage1.block1.expand"] == [6]
    assert opened[3]["stage1.block1.expand"] == [6, 4, 3]
    assert [plan.stage_at(e) for e in range(5)] == [0, 1, 2, 3, 3]
    with pytest.raises(ConfigError, match="in that order"):
        StagePlan([STAGES[2], STAGES[1]], space)
    two = ShrinkStage(elastic="depth", epochs=1, values=2)
    with pytest.raises(ConfigError, match="more values"):
        StagePlan([STAGES[2], two], space)
    assert StagePlan([two, STAGES[2]], space).opened(0)["stage2.depth"] == [4, 3]


def test_sandwich_holds_largest_and_smallest() -> None:
    space = tiny_space()
    allowed = StagePlan(STAGES, space).opened(3)
    rule = ProgressiveShrinking(n_random=2)
    paths = rule.sandwich(allowed, np.random.default_rng(0))
    assert len(paths) == 4
    assert paths[0] == space.named("largest") and paths[1] == space.named("smallest")
    assert rule.sandwich(StagePlan(STAGES, space).opened(0), np.random.default_rng(0)) == [space.named("largest")]


def _trainer(space: OFASpace, init: int = 0) -> ShrinkingTrainer:
    settings = SupernetSettings(
        epochs=4, batch_size=8, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.0, grad_clip=5.0, bn_batches=2, eval_batches=0
    )
    torch.manual_seed(init)
    return ShrinkingTrainer(
        space.supernet(), space, settings, plan=StagePlan(STAGES, space), rule=ProgressiveShrinking(1), kd_ratio=1.0, seed=0
    )


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(16, 1, 8, 8, generator=generator), torch.randint(0, 4, (16,), generator=generator)


def test_each_step_trains_largest_and_smallest_with_the_stage_open(monkeypatch: pytest.MonkeyPatch) -> None:
    space = tiny_space()
    trainer = _trainer(space)
    seen: list[object] = []
    monkeypatch.setattr(trainer.supernet, "activate", seen.append)
    train = _data()
    trainer.train_epoch(train)  # stage "none": the largest alone
    assert seen == [space.named("largest")] * 2
    seen.clear()
    sorted_calls: list[object] = []
    monkeypatch.setattr("nasforge.oneshot.progressive_shrinking.reorganize_channels", lambda net, trained: sorted_calls.append(trained))
    for _ in range(3):
        trainer.train_epoch(train)
    steps = [seen[i : i + 3] for i in range(0, len(seen), 3)]
    assert len(steps) == 6 and all(s[0] == space.named("largest") for s in steps)
    assert steps[0][1] == space.named("largest").replace(**{n: 3 for n in space.choices() if n.endswith("kernel")})
    assert steps[-1][1] == space.named("smallest")
    assert sorted_calls == [{n: [] for n, k in space.elastic_kinds().items() if k == "width"}]  # once, entering width


def _epoch(trainer: ShrinkingTrainer, train: tuple[torch.Tensor, torch.Tensor]) -> None:
    with seeded(derive_seed(trainer.seed, "epoch", trainer.epochs_done)):  # dropout draws, as the estimator seeds them
        trainer.train_epoch(train)


def test_training_resumes_exactly() -> None:
    space = tiny_space()
    train = _data()
    straight = _trainer(space)
    for _ in range(4):
        _epoch(straight, train)
    first = _trainer(space)
    for _ in range(3):  # stops just before the width stage, whose start sorts channels
        _epoch(first, train)
    resumed = _trainer(space, init=1)  # other initial weights: the state loaded must replace them all
    resumed.load_state_dict(first.state_dict())
    _epoch(resumed, train)
    for (name, a), b in zip(straight.state_dict()["supernet"].items(), resumed.state_dict()["supernet"].values(), strict=True):
        assert torch.equal(a, b), name


def test_estimator_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="elastic"):
        registry.create("estimator", "ofa", {}, context={"space": registry.create("space", "nb201", {})})
    with pytest.raises(ConfigError):
        registry.create("estimator", "ofa", {"stages": [{"elastic": "depth", "epochs": 1}, {"elastic": "kernel", "epochs": 1}]}, context={"space": tiny_space()})


# -- the pipeline from the CLI ------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_pipeline_search_derive_finetune_export(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "configs" / "ofa_digits.yaml").read_text())
    config["estimator"]["stages"] = [{"elastic": e, "epochs": 1} for e in ("none", "kernel", "depth", "width")]
    config["estimator"]["bn_batches"] = 2
    config["budget"] = {"trials": 4}
    config["train"] = {"epochs": 1}
    path = tmp_path / "ofa.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert main(["search", str(path), "--run-dir", str(run), "--quiet"]) == 0
    assert (run / "supernet" / "slot-0.pt").is_file()
    assert main(["derive", str(run), "-n", "2", "-o", str(tmp_path / "top.yaml")]) == 0
    assert main(["train", "--init-from", str(run), "--quiet"]) == 0
    assert main(["export", str(run / "final-inherited"), "-o", str(tmp_path / "exported")]) == 0
    assert (tmp_path / "exported" / "model.py").is_file()


def _one_hot(space: OFASpace, arch: dict[str, object]) -> dict[str, torch.Tensor]:
    return {
        name: torch.nn.functional.one_hot(torch.tensor(choice.index(arch[name])), len(choice)).float()  # type: ignore[arg-type]
        for name, choice in space.choices().items()
    }


def test_weighted_mode_with_one_hot_weights_is_the_single_path() -> None:
    torch.manual_seed(0)
    space = tiny_space()
    supernet = space.supernet().eval()
    x = torch.randn(3, 1, 8, 8)
    rng = np.random.default_rng(3)
    for _ in range(3):
        arch = space.sample(rng).replace(**{n: 6 for n in space.choices() if n.endswith("expand")})
        supernet.activate(arch)
        with torch.no_grad():
            single = supernet(x)
            supernet.set_weights(_one_hot(space, arch))
            assert torch.allclose(supernet(x), single, atol=1e-5)
    model, width = _width_model()
    supernet = ElasticSupernet(model.eval())
    supernet.activate({"w": 2})
    with torch.no_grad():
        single = supernet(torch.ones(1, 3, 4, 4))
        supernet.set_weights({"w": torch.tensor([0.0, 1.0, 0.0])})
        assert torch.allclose(supernet(torch.ones(1, 3, 4, 4)), single, atol=1e-6)
    weights = {name: torch.full((len(c),), 1 / len(c), requires_grad=True) for name, c in space.choices().items()}
    space_net = space.supernet()
    space_net.set_weights(weights)
    space_net(torch.randn(2, 1, 8, 8)).sum().backward()
    assert all(w.grad is not None for w in weights.values())  # differentiable in every choice's weights


def test_distillation_loss_is_ofa_kd() -> None:
    logits, teacher, labels = torch.randn(5, 4), torch.randn(5, 4), torch.randint(0, 4, (5,))
    soft_ce = -(teacher.softmax(1) * logits.log_softmax(1)).sum(1).mean()
    entropy = -(teacher.softmax(1) * teacher.log_softmax(1)).sum(1).mean()
    expected = torch.nn.functional.cross_entropy(logits, labels) + 0.5 * (soft_ce - entropy)
    assert torch.allclose(distillation_loss(logits, teacher, labels, 0.5), expected, atol=1e-6)


def test_named_archs_parse_from_their_names() -> None:
    from nasforge.spaces.ofa import OFA_NAMES, OFASpace

    space = OFASpace()
    for name in OFA_NAMES:
        assert space.parse(name) == space.named(name)
