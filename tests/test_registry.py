"""One open registry: criteria, supernet rules, cost models, encodings and pipeline step kinds are
registry kinds like spaces and strategies; `nasforge registry` lists them; a plugin file adds one
that configs then use, with no edit of nasforge."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nasforge.cli import main
from nasforge.core import registry
from nasforge.core.errors import ConfigError
from nasforge.hardware.costmodels import make_cost_model
from nasforge.oneshot.rules import get_rule
from nasforge.predictors.encodings import get_encoder
from nasforge.runner.config import parse_config
from nasforge.tasks.criteria import make_criterion

NEW_KINDS = {
    "criterion": {"cross_entropy", "label_smoothing", "focal", "triplet", "kd", "mixup"},
    "rule": {"spos", "fairnas", "rsps", "enas"},
    "cost_model": {"naive_sum", "linear_sum", "linear_sum_count", "mlp", "lstm", "gbt"},
    "encoding": {"onehot", "adjacency", "path"},
    "step": {"search", "tune", "train"},
}

PLUGIN = '''
"""A user's plugin: a criterion and a supernet training rule, registered from outside nasforge."""
import torch.nn.functional as F

from nasforge.core.registry import register
from nasforge.oneshot.rules import RuleDefaults, TrainingRule
from nasforge.tasks.criteria import Criterion

CALLS = {"loss": 0, "paths": 0}


@register("criterion", "scaled_ce")
class ScaledCrossEntropy(Criterion):
    """Cross-entropy times ``scale`` (a plugin's criterion)."""

    def __init__(self, scale: float = 2.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, outputs, targets):
        CALLS["loss"] += 1
        return self.scale * F.cross_entropy(outputs, targets)


@register("rule", "two_paths")
class TwoPaths(TrainingRule):
    """Two uniformly sampled paths per step (a plugin's rule)."""

    defaults = RuleDefaults(epochs=1, batch_size=64, lr=0.05, weight_decay=0.0, bn_batches=2, eval_batches=0)

    def paths(self, space, rng):
        CALLS["paths"] += 1
        return [space.sample(rng), space.sample(rng)]
'''

PLUGIN_MODULE = "nasforge_plugin_my_components"


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registrations made by the test (its plugin's) vanish afterwards, as does the plugin module."""
    registry.registrations()  # built-ins discovered before the snapshot
    monkeypatch.setattr(registry, "_REGISTRY", {kind: dict(regs) for kind, regs in registry._REGISTRY.items()})
    yield
    sys.modules.pop(PLUGIN_MODULE, None)


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_registry: None) -> Path:
    """A ``$NASFORGE_HOME/plugins/my_components.py`` adding criterion ``scaled_ce`` and rule ``two_paths``."""
    home = tmp_path / "home"
    (home / "plugins").mkdir(parents=True)
    (home / "plugins" / "my_components.py").write_text(PLUGIN)
    monkeypatch.setenv("NASFORGE_HOME", str(home))
    sys.modules.pop(PLUGIN_MODULE, None)
    # plugins load once per process (at the first registry query), so load this one explicitly
    assert str(home / "plugins" / "my_components.py") in registry.load_plugins()
    return home


# -- the new kinds -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(NEW_KINDS))
def test_side_registries_are_registry_kinds(kind: str) -> None:
    assert kind in registry.KINDS
    assert NEW_KINDS[kind] <= set(registry.names(kind))
    for reg in registry.registrations(kind):
        assert reg.summary, f"{kind} {reg.name!r} has no docstring summary"


def test_registry_command_lists_every_kind_one_line_per_component(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(registry.registrations())  # stdout is no terminal: no table, no wrapping
    listed = {(line.split()[0], line.split()[1]) for line in lines}
    for kind, names in NEW_KINDS.items():
        assert {(kind, name) for name in names} <= listed
    assert main(["registry", "rule"]) == 0
    rules = capsys.readouterr().out.splitlines()
    assert {line.split()[1] for line in rules} == set(registry.names("rule"))
    assert all(line.startswith("rule ") for line in rules)


def test_registry_json_parses_and_spaces_show_capabilities(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(registry.registrations())
    assert all({"kind", "name", "summary", "tags", "module"} <= set(row) for row in rows)
    by_key = {(row["kind"], row["name"]): row for row in rows}
    assert by_key[("criterion", "focal")]["module"] == "nasforge.tasks.criteria"
    assert by_key[("step", "train")]["module"] == "nasforge.runner.pipeline"
    assert isinstance(by_key[("space", "nb201")]["capabilities"], list)
    assert main(["registry", "cost_model", "--json"]) == 0
    assert {row["name"] for row in json.loads(capsys.readouterr().out)} == set(registry.names("cost_model"))


# -- unknown names ---------------------------------------------------------------------------------


def _config(**sections: object) -> dict:
    return {
        "name": "t",
        "data": {"type": "digits"},
        "space": {"type": "nb201", "C": 4, "N": 1},
        "strategy": "random",
        "estimator": {"type": "scratch", "epochs": 1},
        "budget": {"trials": 1},
        **sections,
    }


def test_unknown_criterion_and_rule_names_list_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown criterion type 'focall'\. Did you mean 'focal'\?.*Registered criterion types: cross_entropy, focal"):
        parse_config(_config(train={"criterion": "focall"}))
    with pytest.raises(ConfigError, match=r"unknown criterion type 'focall'.*Registered criterion types"):
        parse_config(_config(estimator={"type": "scratch", "criterion": "focall"}))
    with pytest.raises(ConfigError, match=r"unknown rule type 'fairnass'\. Did you mean 'fairnas'\? Registered rule types: enas, fairnas"):
        parse_config(_config(estimator={"type": "supernet", "rule": "fairnass"}))
    with pytest.raises(ConfigError, match=r"unknown encoding type 'pth'\. Did you mean 'path'\?.*Also allowed: auto"):
        parse_config(_config(strategy={"type": "bananas", "encoding": "pth"}))
    with pytest.raises(ConfigError, match="Registered criterion types"):
        make_criterion("focall")
    with pytest.raises(ConfigError, match="Registered rule types"):
        get_rule("fairnass")
    with pytest.raises(ConfigError, match=r"unknown cost_model type 'linear'\..*linear_sum_count"):
        make_cost_model("linear")
    with pytest.raises(ConfigError, match="Registered encoding types"):
        get_encoder("pth", registry.create("space", "nb201", {"C": 4, "N": 1}))
    # built-in names keep working
    parse_config(_config(train={"criterion": "label_smoothing"}, estimator={"type": "supernet", "rule": "fairnas"}))


# -- plugins -----------------------------------------------------------------------------------------


def test_a_plugin_criterion_and_rule_run_a_yaml_search_end_to_end(
    plugin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert {"scaled_ce"} <= set(registry.names("criterion")) and "two_paths" in registry.names("rule")
    assert main(["registry", "criterion"]) == 0
    assert any(line.split()[1] == "scaled_ce" for line in capsys.readouterr().out.splitlines())

    config = tmp_path / "plugin.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            name: plugin-search
            seed: 0
            threads: 1
            data: {type: digits, train_limit: 300, test_limit: 60}
            space: {type: nb201, C: 4, N: 1}
            strategy: random
            estimator: {type: supernet, rule: two_paths, criterion: scaled_ce, criterion_options: {scale: 3.0}, epochs: 1}
            budget: {trials: 3}
            train: {epochs: 1, batch_size: 64, criterion: scaled_ce}
            """
        )
    )
    run_dir = tmp_path / "run"
    assert main(["search", str(config), "--run-dir", str(run_dir)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    calls = sys.modules[PLUGIN_MODULE].CALLS
    assert calls["paths"] > 0 and calls["loss"] >= 2 * calls["paths"]  # the rule picked the paths, the loss trained them
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["estimator"]["rule"] == "two_paths" and saved["train"]["criterion"] == "scaled_ce"
