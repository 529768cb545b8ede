"""The NAS-Bench-201 space: its notation, its errors, and a build faithful to the benchmark."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.fx import symbolic_trace

from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError, InvalidArchError
from nasforge.core.registry import create, get
from nasforge.nn.counters import count_flops, count_params
from nasforge.nn.ops import Zero
from nasforge.spaces.nb201 import NB201_EDGES, NB201_OPS, NB201Cell, NB201Network, NB201Space

EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
#: NASLib's op codes in naslib_zc_nasbench201_subset.json.
NASLIB_OPS = {0: "skip_connect", 1: "none", 2: "nor_conv_3x3", 3: "nor_conv_1x1", 4: "avg_pool_3x3"}
#: NASLib's key lists the edges as |e0~0|+|e1~0|e3~1|+|e2~0|e4~1|e5~2|: its position of each of our edges.
NASLIB_POSITIONS = {"1<-0": 0, "2<-0": 1, "2<-1": 3, "3<-0": 2, "3<-1": 4, "3<-2": 5}


@pytest.fixture(scope="module")
def space() -> NB201Space:
    return NB201Space()


def test_choices_follow_the_benchmark(space: NB201Space) -> None:
    choices = space.choices()
    assert tuple(choices) == ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2") == NB201_EDGES
    assert all(choice.candidates == NB201_OPS for choice in choices.values())
    assert NB201_OPS == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert space.size() == 15_625


def test_registered_and_validated_from_config() -> None:
    registration = get("space", "nb201")
    assert registration.target is NB201Space and "cell" in registration.tags
    space = create("space", "nb201", {"C": 8, "N": 1, "ops": ["none", "nor_conv_3x3"]})
    assert (space.C, space.N, space.ops) == (8, 1, ("none", "nor_conv_3x3"))
    with pytest.raises(ConfigError, match="greater than 0"):
        create("space", "nb201", {"C": 0})
    with pytest.raises(ConfigError, match="allowed: none, skip_connect"):
        create("space", "nb201", {"ops": ["conv_5x5"]})


def test_restricted_op_set() -> None:
    space = NB201Space(ops=("nor_conv_3x3", "none"))
    assert space.ops == ("none", "nor_conv_3x3")
    assert space.size() == 2**6
    arch = space.parse("|none~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|nor_conv_3x3~2|")
    assert space.format(arch).count("nor_conv_3x3") == 2
    with pytest.raises(InvalidArchError, match=r"unknown op 'skip_connect'; allowed: none, nor_conv_3x3"):
        space.parse("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(ValueError, match="unknown NB201 op.*'conv'.*allowed: none, skip_connect"):
        NB201Space(ops=("none", "conv"))
    with pytest.raises(ValueError, match="at least one op"):
        NB201Space(ops=())
    with pytest.raises(ValueError, match="more than once"):
        NB201Space(ops=("none", "none"))


def test_parse_reads_edges(space: NB201Space) -> None:
    arch = space.parse(f"  {EXAMPLE}\n")
    assert arch.to_dict() == {
        "1<-0": "nor_conv_3x3",
        "2<-0": "nor_conv_3x3",
        "2<-1": "avg_pool_3x3",
        "3<-0": "skip_connect",
        "3<-1": "nor_conv_3x3",
        "3<-2": "skip_connect",
    }
    assert space.format(arch) == EXAMPLE
    assert space.parse(str(arch)) == arch  # the generic JSON form
    reordered = "|nor_conv_3x3~0|+|avg_pool_3x3~1|nor_conv_3x3~0|+|skip_connect~2|skip_connect~0|nor_conv_3x3~1|"
    assert space.parse(reordered) == arch


def test_round_trip_over_the_whole_space(space: NB201Space) -> None:
    texts = set()
    for arch in space.enumerate():
        text = space.format(arch)
        assert space.parse(text) == arch
        texts.add(text)
    assert len(texts) == 15_625


def test_round_trip_of_the_benchmark_strings(space: NB201Space, shared_data: Path) -> None:
    with open(shared_data / "nb201" / "nb201_minibench_12epoch.csv", newline="") as f:
        strings = [row["arch_str"] for row in csv.DictReader(f)]
    assert len(set(strings)) == 15_625
    for text in strings:
        assert space.format(space.parse(text)) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"has 1 node\(s\).*expected 3"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", r"has 2 node\(s\).*expected 3"),
        (EXAMPLE + "+|none~0|", r"has 4 node\(s\)"),
        ("nor_conv_3x3~0+|none~0|none~1|+|none~0|none~1|none~2|", r"node 1 is written 'nor_conv_3x3~0'.*\|op~input\|"),
        (
            "|conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|",
            r"node 1, input 0: unknown op 'conv_3x3'; allowed: none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3",
        ),
        ("|none~0|+|none~0|none~1|+|none~0|pool~1|none~2|", r"node 3, input 1: unknown op 'pool'"),
        (
            "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
            r"node 1: entry 'none~1' has input '1'; node 1 takes inputs 0$",
        ),
        (
            "|none~0|+|none~0|none~x|+|none~0|none~1|none~2|",
            r"node 2: entry 'none~x' has input 'x'; node 2 takes inputs 0, 1",
        ),
        (
            "|none~0|+|none~0|none~1|+|none~0|none~1|none~3|",
            r"node 3: entry 'none~3' has input '3'; node 3 takes inputs 0, 1, 2",
        ),
        ("|none|+|none~0|none~1|+|none~0|none~1|none~2|", r"node 1: entry 'none' must be op~input"),
        ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", r"node 2: input 0 appears more than once"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", r"node 2 \('\|none~0\|'\) is missing input\(s\) 1"),
        ('{"1<-0": "none"}', r"missing choice\(s\) '2<-0'"),
        (
            '{"1<-0": "conv", "2<-0": "none", "2<-1": "none", "3<-0": "none", "3<-1": "none", "3<-2": "none"}',
            r"'conv' is not a candidate of choice '1<-0'",
        ),
    ],
)
def test_malformed_strings_name_the_bad_part(space: NB201Space, text: str, message: str) -> None:
    with pytest.raises(InvalidArchError, match=message):
        space.parse(text)


def test_format_rejects_an_arch_of_another_space(space: NB201Space) -> None:
    with pytest.raises(InvalidArchError, match="missing choice"):
        space.format(Arch({"1<-0": "none"}))


def test_build_for_digits_trains_on_8x8_inputs() -> None:
    space = NB201Space(in_channels=1, num_classes=10)
    model = space.build(space.parse(EXAMPLE))
    assert type(model) is NB201Network
    x = torch.randn(4, 1, 8, 8)
    logits = model(x)
    assert logits.shape == (4, 10)
    logits.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.eval()(x).isfinite().all()


@pytest.mark.parametrize("size", [7, 15])
def test_build_runs_on_odd_input_sizes(size: int) -> None:
    """Both paths of the reduction blocks give ceil(H / 2) on odd sizes: 7 -> 4 -> 2, 15 -> 8 -> 4."""
    space = NB201Space(C=4, N=1, in_channels=1)
    rng = np.random.default_rng(size)
    for arch in [space.parse(EXAMPLE), *(space.sample(rng) for _ in range(3))]:
        model = space.build(arch)
        logits = model(torch.randn(2, 1, size, size))
        assert logits.shape == (2, 10) and logits.isfinite().all()
        assert count_flops(model, (1, size, size)) > 0
    block = model.cells[1]  # the first reduction block
    x = torch.randn(1, 4, size, size)
    assert block.shortcut(x).shape == block.conv_b(block.conv_a(x)).shape == (1, 8, (size + 1) // 2, (size + 1) // 2)


def test_none_op_gives_zeros() -> None:
    x = torch.randn(2, 4, 7, 7)
    assert torch.equal(Zero(4, 4)(x), torch.zeros_like(x))
    assert torch.equal(Zero(4, 4, stride=2)(x), torch.zeros(2, 4, 4, 4))
    assert torch.equal(Zero(4, 6, stride=2)(x), torch.zeros(2, 6, 4, 4))
    cell = NB201Cell(["none"] * 6, 4)
    assert torch.equal(cell(x), torch.zeros_like(x))
    # 3<-0 is the only way into the output: the cell is that op alone.
    cell = NB201Cell(["nor_conv_3x3", "avg_pool_3x3", "skip_connect", "avg_pool_3x3", "none", "none"], 4).eval()
    assert torch.equal(cell(x), cell.edges[3](x))


@pytest.mark.filterwarnings("ignore:Was not able to save")  # torch.fx pickles containers it cannot print
def test_fx_traced_child_gives_the_same_outputs(tmp_path: Path) -> None:
    space = NB201Space(in_channels=1, N=1)
    arch = space.parse("|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|")
    model = space.build(arch).eval()
    traced = symbolic_trace(model)
    x = torch.randn(3, 1, 8, 8)
    expected = model(x)
    assert torch.equal(traced(x), expected)

    # Another process may pick other kernels (thread count, SIMD path): equal up to float rounding.
    # Under `from __future__ import annotations` fx records `forward`'s annotations as strings,
    # which to_folder writes as undefined names; an exporter must drop them first.
    for node in traced.graph.nodes:
        if isinstance(node.type, str):
            node.type = None
    traced.recompile()
    traced.to_folder(tmp_path / "exported", "Child")
    torch.save(x, tmp_path / "x.pt")
    torch.save(expected, tmp_path / "expected.pt")
    script = (
        "import sys, torch; sys.modules['nasforge'] = None; sys.path.insert(0, sys.argv[1]);"
        "from exported import Child; m = Child().eval();"
        "x = torch.load(sys.argv[1] + '/x.pt'); y = torch.load(sys.argv[1] + '/expected.pt');"
        "assert torch.allclose(m(x), y, rtol=1e-5, atol=1e-6)"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=120)


def _naslib_arch(key: str) -> Arch:
    codes = [int(c) for c in key.strip("()").split(",")]
    return Arch({edge: NASLIB_OPS[codes[NASLIB_POSITIONS[edge]]] for edge in NB201_EDGES})


def _cifar10_records(shared_data: Path) -> dict[str, dict]:
    with open(shared_data / "nb201" / "naslib_zc_nasbench201_subset.json") as f:
        return json.load(f)["cifar10"]


class _Counts:
    """Params and FLOPs of NB201's CIFAR-10 network, assembled from per-cell counts.

    A stage's ``N`` cells are identical, and an all-``none`` cell has no parameters and no
    FLOPs, so a network's count is that of the all-``none`` network plus ``N`` times each
    stage's cell, counted by the same hooks on the same modules. Building only the 3 cells
    is 10x faster than building 724 networks; ``test_assembled_counts_equal_full_builds``
    checks the two agree, and the slow test builds every network.
    """

    def __init__(self, space: NB201Space, input_shape: tuple[int, int, int]) -> None:
        self.space = space
        self.input_shape = input_shape
        skeleton = space.build(Arch(dict.fromkeys(NB201_EDGES, "none")))
        self.params = count_params(skeleton)
        self.flops = count_flops(skeleton, input_shape)

    def __call__(self, arch: Arch) -> tuple[int, int]:
        ops = [str(arch[edge]) for edge in NB201_EDGES]
        params, flops = self.params, self.flops
        _, height, width = self.input_shape
        for stage in range(3):
            cell = NB201Cell(ops, self.space.C << stage)
            params += self.space.N * count_params(cell)
            flops += self.space.N * count_flops(cell, (self.space.C << stage, height >> stage, width >> stage))
        return params, flops


def test_params_and_flops_match_the_benchmark(space: NB201Space, shared_data: Path) -> None:
    records = _cifar10_records(shared_data)
    assert len(records) == 724
    counts = _Counts(space, (3, 32, 32))
    for key, record in records.items():
        params, flops = counts(_naslib_arch(key))
        # The file gives millions with 6 decimals: exact to the parameter and the FLOP.
        assert params == round(record["params"]["score"] * 1e6), key
        assert flops == round(record["flops"]["score"] * 1e6), key


def test_assembled_counts_equal_full_builds(space: NB201Space) -> None:
    counts = _Counts(space, (3, 32, 32))
    rng = np.random.default_rng(201)
    for arch in [space.parse(EXAMPLE), *(space.sample(rng) for _ in range(4))]:
        model = space.build(arch)
        assert counts(arch) == (count_params(model), count_flops(model, (3, 32, 32)))


@pytest.mark.slow
def test_full_builds_match_the_benchmark(space: NB201Space, shared_data: Path) -> None:
    for key, record in _cifar10_records(shared_data).items():
        model = space.build(_naslib_arch(key))
        assert count_params(model) == round(record["params"]["score"] * 1e6), key
        assert count_flops(model, (3, 32, 32)) == round(record["flops"]["score"] * 1e6), key


def test_build_rejects_an_invalid_arch(space: NB201Space) -> None:
    arch = Arch(dict.fromkeys(NB201_EDGES, "nor_conv_5x5"))
    with pytest.raises(InvalidArchError, match="nor_conv_5x5"):
        space.build(arch)
