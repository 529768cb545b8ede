"""The supernet ranking benchmark: plans, NB201 de-isomorphism, parallel and split-up runs, caches."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

from nasforge.core.errors import ConfigError
from nasforge.hardware.machine import machine_summary
from nasforge.spaces.nb201 import NB201Space

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("supernet_ranking_bench", REPO / "benchmarks" / "supernet_ranking" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses (and forked workers) look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        # node 2 feeds nothing: its incoming edges are dead; then nodes 1 and 2 swap to the first labelling
        (
            "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_3x3~0|skip_connect~1|none~2|",
            "|none~0|+|nor_conv_3x3~0|none~1|+|nor_conv_3x3~0|none~1|skip_connect~2|",
        ),
        # node 2 gets nothing from the input: the conv after it is dead, and so is node 1
        (
            "|skip_connect~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
            "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
        ),
        # the output gets nothing at all: every edge is dead
        ("|avg_pool_3x3~0|+|avg_pool_3x3~0|none~1|+|none~0|none~1|none~2|", "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"),
        # every edge counts and 2<-1 joins the nodes: already canonical
        (
            "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|",
            "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|",
        ),
    ],
)
def test_canonical_nb201_drops_dead_edges_and_picks_one_labelling(bench: ModuleType, text: str, canonical: str) -> None:
    space = NB201Space(C=4, N=1, in_channels=1)
    assert bench.canonical_nb201(space, text) == canonical
    assert bench.canonical_nb201(space, canonical) == canonical  # a fixed point


def test_canonical_form_computes_the_same_function(bench: ModuleType) -> None:
    """The dropped edges carry nothing: at initialisation (batch norm shifts 0) the outputs agree."""
    space = NB201Space(C=4, N=1, in_channels=1)
    text = "|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|skip_connect~2|"
    canonical = bench.canonical_nb201(space, text)
    assert canonical == "|none~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|skip_connect~2|"
    torch.manual_seed(0)
    supernet = space.supernet().eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        supernet.activate(space.parse(text))
        expected = supernet(x)
        supernet.activate(space.parse(canonical))
        assert torch.allclose(supernet(x), expected, atol=1e-6)


def test_plans_and_supernet_learning_rates(bench: ModuleType) -> None:
    assert bench.PLANS["cpu"] == bench.Plan()
    gpu = {options["rule"]: options for options in (bench.supernet_options(bench.PLANS["gpu"], r, e) for r, e in bench.PLANS["gpu"].supernet_epochs)}
    assert gpu["spos"]["batch_size"] == 256 and gpu["spos"]["lr"] == pytest.approx(0.1)  # 0.05 at batch 64, x sqrt(4)
    assert gpu["rsps"]["lr"] == pytest.approx(0.05)
    assert bench.supernet_options(bench.Plan(), "spos", 3) == {"rule": "spos", "epochs": 3}  # the rule's own recipe
    with pytest.raises(ConfigError, match="unknown rule"):
        bench.main(["--quick", "--rules", "spos,darts", "--no-docs"])


def test_scratch_cache_of_the_cpu_plan_is_found(bench: ModuleType) -> None:
    """The committed ground truth is keyed so the default plan reuses it."""
    cache = json.loads((REPO / "benchmarks" / "supernet_ranking" / "scratch_cache.json").read_text())
    assert len(cache[bench.scratch_key(bench.Plan())]) >= 50


@pytest.mark.slow  # ~20 s idle, a minute under load: six runs of the quick plan
def test_workers_split_calls_and_cached_only(bench: ModuleType, shared_data: Path, tmp_path: Path) -> None:
    """Two worker processes give the results one process gives; a call with a spent budget trains
    nothing; the supernet scores are cached, so --cached-only reproduces the rows."""
    base = ["--quick", "--archs", "3", "--no-docs"]
    one, two = tmp_path / "one" / "scratch_cache.json", tmp_path / "two" / "scratch_cache.json"
    assert bench.main([*base, "--stage", "scratch", "--cache", str(one), "--budget-s", "0"]) == []
    assert not one.exists()
    bench.main([*base, "--stage", "scratch", "--cache", str(one)])
    bench.main([*base, "--stage", "scratch", "--cache", str(two), "--workers", "2"])
    first, second = (next(iter(json.loads(path.read_text()).values())) for path in (one, two))
    assert len(first) == 3
    assert {a: r["test_acc"] for a, r in first.items()} == {a: r["test_acc"] for a, r in second.items()}
    assert all(r["machine"] == machine_summary("cpu") for r in first.values())
    with pytest.raises(ConfigError, match="cached-only"):
        bench.main([*base, "--rules", "spos", "--cache", str(one), "--cached-only"])
    rows = bench.main([*base, "--rules", "spos", "--cache", str(one)])
    again = bench.main([*base, "--rules", "spos", "--cache", str(one), "--cached-only"])
    assert rows == again and rows[0]["rule"] == "spos"
    assert (one.parent / "supernet_cache.json").exists()


def test_machine_summary_names_a_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "cores" in machine_summary() and "GiB" not in machine_summary("cpu")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=80 * 2**30))
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    line = machine_summary("cuda")
    assert line.startswith("NVIDIA H100 80GB HBM3 (80 GiB), CUDA 12.4, on ") and "cores" in line


@pytest.mark.gpu
def test_quick_plan_on_cuda_with_worker_processes(shared_data: Path, tmp_path: Path) -> None:
    """Spawned workers share the GPU for scratch training; the supernets run on it too."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cache = tmp_path / "scratch_cache.json"
    command = [sys.executable, str(REPO / "benchmarks" / "supernet_ranking" / "run.py"), "--quick", "--archs", "2"]
    command += ["--rules", "spos", "--device", "cuda", "--workers", "2", "--cache", str(cache), "--doc", str(tmp_path / "b.md")]
    subprocess.run(command, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    records = next(iter(json.loads(cache.read_text()).values()))
    assert len(records) == 2 and all("CUDA" in r["machine"] for r in records.values())
    assert "CUDA" in (tmp_path / "b.md").read_text()
