"""Declared capabilities: the protocols match the spaces that implement them, tags agree with
them, and impossible space/strategy/estimator combinations are refused up front."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from nasforge.core import registry
from nasforge.core.capabilities import (
    PROTOCOLS,
    Capability,
    HasCostLayers,
    HasEdges,
    HasElasticKinds,
    HasModes,
    HasSupernet,
    check_combination,
    combination_problem,
    declared,
)
from nasforge.core.errors import ConfigError

#: Which registered spaces implement each capability (by their methods).
EXPECTED = {
    "darts": {"supernet", "edges"},
    "nb201": {"supernet"},
    "fbnet": {"supernet"},
    "proxyless": {"supernet"},
    "spos": {"supernet"},
    "mnasnet": {"supernet", "cost-layers"},
    "ofa": {"supernet", "elastic", "cost-layers"},
    "model": {"supernet", "elastic", "modes"},
    "hpo": set(),
    "params": set(),
    "with_hparams": set(),
    "latency_bounded": set(),  # a wrapper: its capabilities are its inner space's
}

#: Registration tags that name a capability; they must agree with the protocols.
CAPABILITY_TAGS = ("supernet", "elastic")


def _methods(capability: Capability) -> list[str]:
    protocol = PROTOCOLS[capability]
    return [name for name in vars(protocol) if not name.startswith("_") and callable(vars(protocol)[name])]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_protocol_matches_the_spaces_that_implement_it(name: str) -> None:
    target = registry.get("space", name).target
    assert set(declared(target)) == EXPECTED[name]
    for capability in Capability:
        implements = all(callable(vars(klass).get(m)) for m in _methods(capability) for klass in [_owner(target, m)])
        assert (capability.value in declared(target)) == implements, (name, capability)


def _owner(cls: type, method: str) -> type:
    return next((klass for klass in cls.__mro__ if method in vars(klass)), object)


def test_every_registered_space_is_covered_and_tags_agree_with_protocols() -> None:
    for reg in registry.registrations("space"):
        if reg.target.__module__.startswith("nasforge."):
            assert reg.name in EXPECTED, f"add space {reg.name!r} to EXPECTED"
        for tag in CAPABILITY_TAGS:
            assert (tag in reg.tags) == (tag in declared(reg.target)), (reg.name, tag, sorted(reg.tags))


def test_differentiable_tag_agrees_with_declared_arch_parameters() -> None:
    for reg in registry.registrations("strategy"):
        assert ("differentiable" in reg.tags) == (reg.target.arch_parameters == "with-weights"), reg.name


def test_instances_and_wrappers() -> None:
    from nasforge.spaces.darts_cells import DartsSpace
    from nasforge.spaces.nb201 import NB201Space

    nb201 = NB201Space(C=4, N=1)
    assert isinstance(nb201, HasSupernet) and not isinstance(nb201, HasEdges)
    assert not isinstance(nb201, (HasElasticKinds, HasCostLayers, HasModes))
    assert declared(nb201) == ["supernet"]
    assert declared(DartsSpace) == ["supernet", "edges"]
    from nasforge.core.space import ConstrainedSpace

    wrapped = ConstrainedSpace(nb201, lambda arch: True)
    assert declared(wrapped) == ["supernet"]
    assert combination_problem({"type": "latency_bounded", "inner": {"type": "nb201"}}, "random", "supernet") is None
    with pytest.raises(ConfigError, match="'with_latency\\(supernet\\)'.*'latency_bounded\\(hpo\\)'"):
        check_combination(
            {"type": "latency_bounded", "inner": {"type": "hpo"}}, "random", {"type": "with_latency", "inner": {"type": "supernet"}}
        )


@pytest.mark.parametrize(
    ("space", "strategy", "estimator", "words"),
    [
        ("nb201", "darts", "scratch", ["strategy 'darts'", "estimator 'scratch'", "dnas"]),
        ("nb201", "gdas", "supernet", ["strategy 'gdas'", "estimator 'supernet'"]),
        ("nb201", "evolution", "dnas", ["estimator 'dnas'", "strategy 'evolution'"]),
        ("hpo", "random", "supernet", ["estimator 'supernet'", "space 'hpo'", "supernet()"]),
        ("nb201", "pdarts", "dnas", ["strategy 'pdarts'", "space 'nb201'", "darts"]),
        ("darts", "fbnet", "dnas", ["strategy 'fbnet'", "space 'darts'", "edge weights"]),
        ("nb201", "random", "ofa", ["estimator 'ofa'", "elastic"]),
        ("darts", "random", "nb201_table", ["estimator 'nb201_table'", "nb201"]),
    ],
)
def test_impossible_combinations_are_refused(space: str, strategy: str, estimator: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        check_combination(space, strategy, estimator)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    ("space", "strategy", "estimator"),
    [("nb201", "darts", "dnas"), ("darts", "pdarts", "dnas"), ("nb201", "generator", "supernet"),
     ("nb201", "evolution", "scratch"), ("ofa", "random", "ofa"), ("fbnet", "fbnet", "dnas")],
)
def test_possible_combinations_pass(space: str, strategy: str, estimator: str) -> None:
    check_combination(space, strategy, estimator)


@pytest.mark.parametrize("strategy", registry.names("strategy"))
def test_every_strategy_and_estimator_pair_is_accepted_or_refused_cleanly(strategy: str) -> None:
    for estimator in registry.names("estimator"):
        try:
            check_combination("nb201", strategy, estimator)
        except ConfigError as exc:
            assert str(exc) and "\n" not in str(exc)


def test_search_darts_with_scratch_exits_2_before_loading_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nasforge.cli import main

    created: list[str] = []
    original = registry.create

    def create(kind: str, *args: object, **kwargs: object) -> object:
        created.append(kind)
        return original(kind, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(registry, "create", create)
    config = {
        "name": "bad",
        "data": {"type": "digits", "train_limit": 100, "test_limit": 50},
        "space": {"type": "nb201", "C": 4, "N": 1},
        "strategy": {"type": "darts", "epochs": 1},
        "estimator": {"type": "scratch", "epochs": 1},
        "budget": {"trials": 2},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["search", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    captured = capsys.readouterr()
    text = " ".join((captured.err + captured.out).split())
    assert "strategy 'darts'" in text and "estimator 'scratch'" in text
    assert "Traceback" not in text
    assert "dataset" not in created


def test_gen_config_lists_only_fitting_alternatives() -> None:
    from nasforge.runner.gen_config import generate_config

    text = generate_config("nb201", strategy="darts")
    assert yaml.safe_load(text)["estimator"]["type"] == "dnas"
    listed = re.findall(r"#   \{estimator: \{type: (\w+)", text)
    for name in listed:
        assert registry.get("estimator", name).target.trains_arch_parameters == "with-weights"
    strategies = re.findall(r"#   \{strategy: \{type: (\w+)", text)
    assert "pdarts" not in strategies and "evolution" not in strategies and "gdas" in strategies
    plain = generate_config("nb201")
    assert "dnas" not in re.findall(r"#   \{estimator: \{type: (\w+)", plain)
    with pytest.raises(ConfigError, match="strategy 'darts'.*estimator 'scratch'"):
        generate_config("nb201", strategy="darts", estimator="scratch")
