"""The DARTS / ENAS cell space: genotype notation, the evaluation network, the search supernet."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.fx import symbolic_trace

from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError, InvalidArchError
from nasforge.core.registry import create, get
from nasforge.export import export_model
from nasforge.nn.counters import count_macs
from nasforge.nn.mixed import MixedOp
from nasforge.nn.ops import OPS, DilConv, SepConv
from nasforge.spaces.darts_cells import DARTS_OPS, ENAS_OPS, DartsSpace
from nasforge.spaces.darts_network import DartsNetwork, darts_network, drop_path
from nasforge.spaces.darts_supernet import DartsSupernet
from nasforge.spaces.genotypes import GENOTYPES, Genotype, get_genotype, parse_genotype

#: DARTS_V2 exactly as the DARTS repository's genotypes.py writes it.
DARTS_V2_TEXT = (
    "DARTS_V2 = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
    "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
    "reduce_concat=[2, 3, 4, 5])"
)
#: The same cells in canonical order (each node's pairs sorted by input), as format prints them.
DARTS_V2_CANONICAL = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('max_pool_3x3', 1), ('skip_connect', 2)], reduce_concat=[2, 3, 4, 5])"
)
DARTS_FAMILY = ("DARTS_V1", "DARTS_V2", "PC_DARTS", "PDARTS", "GDAS", "SNAS")


@pytest.fixture(scope="module")
def space() -> DartsSpace:
    return DartsSpace()


@pytest.fixture(scope="module")
def enas() -> DartsSpace:
    return DartsSpace(variant="enas")


def test_registered_and_validated_from_config() -> None:
    registration = get("space", "darts")
    assert registration.target is DartsSpace and {"cell", "supernet"} <= registration.tags
    space = create("space", "darts", {"variant": "enas", "C": 8, "layers": 5}, context={"input_size": (28, 28)})
    assert (space.variant, space.nodes, space.ops, space.input_size) == ("enas", 5, ENAS_OPS, (28, 28))
    with pytest.raises(ConfigError, match="variant"):
        create("space", "darts", {"variant": "nasnet"})
    with pytest.raises(ConfigError, match="drop_path_prob"):
        create("space", "darts", {"drop_path_prob": 1.0})


def test_choices_and_size(space: DartsSpace, enas: DartsSpace) -> None:
    choices = space.choices()
    assert len(choices) == 2 * 4 * 4
    assert list(choices)[:4] == ["normal.n2.in0", "normal.n2.op0", "normal.n2.in1", "normal.n2.op1"]
    assert choices["reduce.n5.in0"].candidates == (0, 1, 2, 3)  # in0 < in1: in0 is never the last
    assert choices["reduce.n5.in1"].candidates == (1, 2, 3, 4)
    assert choices["normal.n3.op1"].candidates == DARTS_OPS and "none" not in DARTS_OPS
    # DARTS' count (Liu et al. 2019, A.1.1): prod_k (k+1)k/2 * 7^2 per cell, squared, about 1e18.
    assert space.size() == (1 * 3 * 6 * 10 * 7**8) ** 2
    assert len(enas.choices()) == 2 * 5 * 4
    assert enas.choices()["normal.n6.in1"].candidates == (0, 1, 2, 3, 4, 5)
    # Per node, unordered pairs of (input, op) slots with repetition: n(n+1)/2 for n = 5 * inputs.
    assert enas.size() == math.prod(n * (n + 1) // 2 for n in (10, 15, 20, 25, 30)) ** 2


@pytest.mark.parametrize("name", DARTS_FAMILY)
def test_published_darts_genotypes_round_trip(space: DartsSpace, name: str) -> None:
    genotype = get_genotype(name)
    assert parse_genotype(str(genotype)) == genotype
    arch = space.parse(str(genotype))
    assert space.parse(name) == arch
    assert space.to_genotype(arch) == genotype.canonical()
    assert space.parse(space.format(arch)) == arch
    assert space.format(arch) == str(genotype.canonical())


def test_darts_v2_as_the_papers_print_it(space: DartsSpace) -> None:
    arch = space.parse(DARTS_V2_TEXT)
    assert arch == space.parse("DARTS_V2")
    assert space.format(arch) == DARTS_V2_CANONICAL
    assert space.parse(DARTS_V2_CANONICAL) == arch
    # As train_search.py logs it: concat as range(2, 6), one pair per line.
    logged = DARTS_V2_TEXT.split("= ", 1)[1].replace("[2, 3, 4, 5]", "range(2, 6)").replace("), (", "),\n (")
    assert space.parse(logged) == arch
    assert arch["normal.n4.in0"] == 0 and arch["normal.n4.op0"] == "skip_connect"  # swapped from the paper's order
    assert space.parse(str(arch)) == arch  # the generic JSON form


def test_enas_genotype_and_the_cells_outside_the_space(space: DartsSpace, enas: DartsSpace) -> None:
    genotype = get_genotype("ENAS")
    arch = enas.parse("ENAS")
    assert enas.to_genotype(arch) == genotype.canonical()
    assert enas.parse(enas.format(arch)) == arch
    assert arch["normal.n2.in0"] == arch["normal.n2.in1"] == 1  # ENAS nodes may read one node twice
    with pytest.raises(InvalidArchError, match="normal has 5 nodes; cells of the darts variant have 4"):
        space.parse("ENAS")
    with pytest.raises(InvalidArchError, match=r"reduce_concat is \[4, 5, 6\]; .*every intermediate node"):
        enas.parse("NASNet")
    with pytest.raises(
        InvalidArchError, match=r"normal\[1\] = \('dil_conv_3x3', 1\): op 'dil_conv_3x3' is not in the enas"
    ):
        enas.parse(str(Genotype(*[[("skip_connect", 0), ("dil_conv_3x3", 1)] * 5, [2, 3, 4, 5, 6]] * 2)))
    for name in ("NASNet", "AmoebaNet"):
        assert parse_genotype(str(GENOTYPES[name])) == GENOTYPES[name]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Genotype(normal=[('sep_conv_3x3', 0)", r"cannot read genotype text: .* line 1"),
        ("[('sep_conv_3x3', 0)]", r"is not a Genotype\(...\) call"),
        ("DARTS_V3", r"unknown genotype 'DARTS_V3'; known genotypes: DARTS_V1, DARTS_V2, ENAS, PC_DARTS"),
        ("Genotype(normal=[], normal_concat=[2], reduce=[], reduce_concat=[2], extra=1)", r"unknown field 'extra'"),
        ("Genotype(normal=[], normal_concat=[2], reduce=[])", r"missing field\(s\) reduce_concat"),
        (
            DARTS_V2_TEXT.replace("('dil_conv_3x3', 2)]", "]"),
            r"genotype normal has 7 \(op, input\) pair\(s\); each intermediate node takes exactly two",
        ),
        (DARTS_V2_TEXT.replace("'dil_conv_3x3'", "'dil_conv_9x9'"), r"normal\[7\] = \('dil_conv_9x9', 2\): unknown op"),
        (
            DARTS_V2_TEXT.replace(
                "('skip_connect', 0), ('dil_conv_3x3', 2)]", "('skip_connect', 0), ('dil_conv_3x3', 6)]"
            ),
            r"normal\[7\] = \('dil_conv_3x3', 6\): input 6 does not exist yet; .* node 5, which can read nodes 0..4",
        ),
        (
            DARTS_V2_TEXT.replace("('max_pool_3x3', 0),", "('max_pool_3x3'),", 1),
            r"reduce\[0\] is 'max_pool_3x3'; expected an",
        ),
        (
            DARTS_V2_TEXT.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[2, 3, 4, 9]"),
            r"normal_concat names node 9",
        ),
        (
            DARTS_V2_TEXT.replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat=[2, 2]"),
            r"reduce_concat \[2, 2\] names a node more",
        ),
        (
            DARTS_V2_TEXT.replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat=all_nodes"),
            r"reduce_concat = 'all_nodes'; expected a list of node indices or range\(a, b\)",
        ),
        (
            DARTS_V2_TEXT.replace("normal=[", "normal=ops + [", 1),
            r"genotype normal = .ops \+ \[.*; expected a list of \(op, input node\) pairs",
        ),
        (
            DARTS_V2_TEXT.replace(
                "('sep_conv_3x3', 1), ('skip_connect', 0)", "('sep_conv_3x3', 1), ('skip_connect', 1)"
            ),
            r"genotype normal\[4\] and normal\[5\] both read node 1; in the darts variant .* different nodes",
        ),
        (
            DARTS_V2_TEXT.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[2, 4, 5]"),
            r"normal_concat is \[2, 4, 5\]",
        ),
        ('{"normal.n2.in0": 0}', r"missing choice\(s\) 'normal.n2.op0'"),
    ],
)
def test_bad_genotypes_name_the_bad_part(space: DartsSpace, text: str, message: str) -> None:
    with pytest.raises(InvalidArchError, match=message):
        space.parse(text)


def test_one_order_per_cell(space: DartsSpace, enas: DartsSpace) -> None:
    arch = space.parse("DARTS_V2")
    swapped = arch.replace(**{"normal.n5.in0": 2, "normal.n5.in1": 1})
    assert not space.is_valid(swapped)
    with pytest.raises(
        InvalidArchError, match="normal node 5 has in0=2, op0='skip_connect', in1=1, op1='dil_conv_3x3'; in"
    ):
        space.validate(swapped)
    rng = np.random.default_rng(0)
    for candidate in [space.sample(rng) for _ in range(200)] + space.neighbours(arch):
        assert space.validate(candidate) is candidate
        assert space.parse(space.format(candidate)) == candidate
    assert space.mutate(arch, rng) != arch
    samples = [enas.sample(rng) for _ in range(200)]
    assert all(enas.is_valid(a) for a in samples)
    assert any(a[f"normal.n{i}.in0"] == a[f"normal.n{i}.in1"] for a in samples for i in range(2, 7))


# (name, parameters the DARTS code counts for C=36 and 20 layers without the auxiliary head,
#  the paper's figure in millions where ours reproduces it to its rounding)
PARAMS = [
    ("DARTS_V2", 3_349_342, 3.3),  # the DARTS code prints "param size = 3.349342MB"
    ("PC_DARTS", 3_634_678, 3.6),
    ("PDARTS", 3_433_798, 3.4),
    ("GDAS", 3_368_782, 3.4),
    # DARTS' Table 1 gives 3.3M for the first-order cell too; its code counts 3.17M.
    ("DARTS_V1", 3_169_414, None),
    # These papers' figures are for their own networks, not the DARTS one: SNAS 2.8M, ENAS
    # 4.6M, NASNet-A 3.3M, AmoebaNet-A 3.2M. GDAS' authors count the first two as we do
    # (2.66M, 4.02M).
    ("SNAS", 2_661_382, None),
    ("ENAS", 4_020_166, None),
    ("NASNet", 3_830_950, None),
    ("AmoebaNet", 3_145_078, None),
]


@pytest.mark.parametrize(("name", "exact", "paper"), PARAMS)
def test_parameters_of_the_evaluation_network(name: str, exact: int, paper: float | None) -> None:
    model = darts_network(get_genotype(name), C=36, layers=20, auxiliary=True)
    # DARTS' utils.count_parameters_in_MB leaves out every parameter named 'auxiliary'.
    counted = sum(p.numel() for n, p in model.named_parameters() if "auxiliary" not in n)
    assert counted == exact
    assert counted == sum(p.numel() for p in darts_network(get_genotype(name)).parameters())
    if paper is not None:
        assert round(counted / 1e6, 1) == paper


def test_macs_of_the_evaluation_network() -> None:
    # Multiply-accumulates on 32x32 inputs, as GDAS' authors list them: 528M, 532M, 519M, 422M.
    for name, millions in [("DARTS_V2", 528), ("PDARTS", 532), ("GDAS", 519), ("SNAS", 422)]:
        assert round(count_macs(darts_network(get_genotype(name)), (3, 32, 32)) / 1e6) == millions


def test_darts_ops() -> None:
    x = torch.randn(2, 6, 9, 9)
    sep = OPS["sep_conv_5x5"](6, 6, 2)
    assert isinstance(sep, SepConv) and sep(x).shape == (2, 6, 5, 5)
    assert [m.kernel_size for m in sep.modules() if isinstance(m, nn.Conv2d)] == [(5, 5), (1, 1)] * 2
    dil = OPS["dil_conv_3x3"](6, 8, 1)
    assert isinstance(dil, DilConv) and dil.depthwise.dilation == (2, 2) and dil(x).shape == (2, 8, 9, 9)
    assert OPS["conv_7x1_1x7"](6, 6, 2)(x).shape == OPS["sep_conv_7x7"](6, 6, 2)(x).shape == (2, 6, 5, 5)
    # DARTS' ops carry no bias; their batch norms follow `affine`.
    assert sum(p.numel() for p in OPS["sep_conv_3x3"](6, 6, 1, affine=False).parameters()) == 2 * (6 * 9 + 36)


def test_forward_on_cifar_and_mnist_sizes() -> None:
    cifar = DartsSpace(C=4, layers=5, auxiliary=True)
    model = cifar.build(cifar.parse("DARTS_V2"))
    assert type(model) is DartsNetwork
    logits, aux = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == aux.shape == (2, 10)
    assert isinstance(model.auxiliary_head.features[1], nn.AvgPool2d)  # type: ignore[union-attr, index]
    (logits.logsumexp(1).mean() + 0.4 * aux.logsumexp(1).mean()).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)

    mnist = create(
        "space",
        "darts",
        {"C": 4, "layers": 4, "auxiliary": True},
        context={"in_channels": 1, "num_classes": 7, "input_size": (28, 28)},
    )
    model = mnist.build(mnist.sample(np.random.default_rng(1)))
    logits, aux = model(torch.randn(3, 1, 28, 28))
    assert logits.shape == aux.shape == (3, 7)
    assert model.eval()(torch.randn(3, 1, 28, 28)).shape == (3, 7)
    enas = DartsSpace(variant="enas", C=4, layers=3, in_channels=1, input_size=(8, 8))
    assert enas.build(enas.parse("ENAS"))(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_drop_path() -> None:
    x = torch.ones(1000, 2, 3, 3)
    y = drop_path(x, 0.25)
    kept = y[:, 0, 0, 0] != 0
    assert torch.all(y[kept] == 1 / 0.75) and torch.all(y[~kept] == 0)
    assert 0.65 < kept.float().mean() < 0.85
    space = DartsSpace(C=4, layers=3, drop_path_prob=0.5)
    model = space.build(space.parse("DARTS_V2"))
    x = torch.randn(4, 3, 16, 16)
    torch.manual_seed(0)
    first = model(x)
    torch.manual_seed(1)
    assert not torch.allclose(first, model(x))
    first.sum().backward()
    model.eval()
    assert torch.equal(model(x), model(x))
    model.drop_path_prob = 0.0
    assert torch.equal(model(x), model.eval()(x))


@pytest.mark.filterwarnings("ignore:Was not able to save")
def test_fx_trace_and_export_of_the_evaluation_network(tmp_path: Path) -> None:
    space = DartsSpace(C=4, layers=4, auxiliary=True, drop_path_prob=0.2, in_channels=1, input_size=(16, 16))
    model = space.build(space.parse("PC_DARTS")).eval()
    x = torch.randn(2, 1, 16, 16)
    traced = symbolic_trace(model)
    assert not any("auxiliary" in str(node.target) or "bernoulli" in str(node.target) for node in traced.graph.nodes)
    assert torch.equal(traced(x), model(x))
    export_model(model, x, tmp_path / "child")
    assert (tmp_path / "child" / "model.py").is_file()


def _small(variant: str = "darts") -> DartsSpace:
    return DartsSpace(variant=variant, in_channels=1, supernet_C=4, supernet_layers=4)  # type: ignore[arg-type]


def test_supernet_single_path_equals_its_exported_child(tmp_path: Path) -> None:
    space = _small()
    supernet = space.supernet()
    assert isinstance(supernet, DartsSupernet)
    x = torch.randn(4, 1, 12, 12)
    rng = np.random.default_rng(5)
    archs = [space.sample(rng) for _ in range(3)] + [space.parse("DARTS_V2")]
    supernet.train()
    for arch in archs:  # fill the batch-norm statistics
        supernet.activate(arch)
        supernet(x)
    # Any combination runs on the supernet, even one is_valid rejects (a node reading node 1 twice).
    archs.append(archs[0].replace(**{"normal.n3.in0": 1, "normal.n3.in1": 1}))
    supernet.eval()
    for arch in archs:
        supernet.activate(arch)
        expected = supernet(x)
        child = supernet.export(arch)
        assert type(child) is DartsNetwork and not any(isinstance(m, MixedOp) for m in child.modules())
        assert not set(map(id, child.parameters())) & set(map(id, supernet.parameters()))
        assert torch.allclose(child.eval()(x), expected, atol=1e-5, rtol=0)
    export_model(child, x, tmp_path / "child")


def test_single_path_runs_only_the_chosen_ops() -> None:
    space = _small()
    supernet = space.supernet()
    arch = space.parse("DARTS_V2")
    supernet.activate(arch)
    calls: list[str] = []
    for cell in supernet.search_cells:
        for edge in cell.edges:
            for value, op in zip(edge.values, edge.ops, strict=True):
                op.register_forward_hook(lambda *_, name=f"{edge.name}:{value}": calls.append(name))
    supernet(torch.randn(2, 1, 8, 8))
    assert len(calls) == 4 * 8  # 4 cells, 4 nodes, 2 ops each
    assert set(calls) == {
        f"{cell}.{i}<-{arch[f'{cell}.n{i}.in{k}']}:{arch[f'{cell}.n{i}.op{k}']}"
        for cell in ("normal", "reduce")
        for i in range(2, 6)
        for k in (0, 1)
    }


def test_weighted_mode_and_derivation() -> None:
    space = _small()
    supernet = space.supernet()
    edges = space.edge_choices()
    assert len(edges) == 2 * 14 and set(supernet.choice_names()) == set(edges)
    assert edges["reduce.5<-4"].candidates == ("none", *DARTS_OPS)
    torch.manual_seed(0)
    alphas = {name: (1e-3 * torch.randn(len(choice))).requires_grad_() for name, choice in edges.items()}
    supernet.set_weights({name: alpha.softmax(0) for name, alpha in alphas.items()})
    loss = nn.functional.cross_entropy(supernet(torch.randn(4, 1, 8, 8)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(alpha.grad is not None and alpha.grad.abs().sum() > 0 for alpha in alphas.values())
    with pytest.raises(KeyError, match="no weights for edge"):
        supernet.set_weights({})

    # DARTS' rule: per node the two edges with the strongest non-none op, `none` never chosen.
    target = space.parse("GDAS")
    weights = {name: torch.zeros(len(choice)) for name, choice in edges.items()}
    for name, value in target.items():
        cell, node, slot = name.split(".")
        if slot.startswith("op"):
            source = target[f"{cell}.{node}.in{slot[-1]}"]
            weights[f"{cell}.{node[1:]}<-{source}"][1 + DARTS_OPS.index(str(value))] = 1.0
    for w in weights.values():
        w[0] = 5.0  # a strong `none` changes nothing
    assert space.derive(weights) == target
    supernet.activate(target)  # back to single path after weighted mode
    assert supernet(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_enas_supernet_runs_repeated_inputs() -> None:
    space = _small("enas")
    supernet = space.supernet().eval()
    arch = space.parse("ENAS")
    x = torch.randn(2, 1, 8, 8)
    supernet.activate(arch)
    assert torch.allclose(supernet.export(arch).eval()(x), supernet(x), atol=1e-5, rtol=0)
    assert len(space.edge_choices()) == 2 * (2 + 3 + 4 + 5 + 6)


def test_space_rejects_bad_archs(space: DartsSpace) -> None:
    arch = space.parse("DARTS_V2")
    with pytest.raises(InvalidArchError, match="'conv_3x3' is not a candidate of choice 'normal.n2.op0'"):
        space.build(arch.replace(**{"normal.n2.op0": "conv_3x3"}))
    with pytest.raises(InvalidArchError, match="missing choice"):
        space.format(Arch({"normal.n2.in0": 0}))
    with pytest.raises(InvalidArchError, match="arch is missing choice"):
        space.supernet().activate(Arch({"normal.n2.in0": 0}))
