"""``nasforge new-component``: a skeleton for every registry kind that loads as a plugin and passes
its kind's conformance suite as generated."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from nasforge.cli import main
from nasforge.core import registry
from nasforge.runner.scaffold import TEMPLATES, render


def test_every_kind_has_a_template() -> None:
    assert set(registry.KINDS) <= set(TEMPLATES), f"no template for {sorted(set(registry.KINDS) - set(TEMPLATES))}"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh NASFORGE_HOME, and a copy of the registry so generated components vanish afterwards."""
    registry.registrations()  # discover the built-ins before copying
    monkeypatch.setattr(registry, "_REGISTRY", {kind: dict(regs) for kind, regs in registry._REGISTRY.items()})
    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.parametrize("kind", list(registry.KINDS))
def test_generated_component_loads_as_a_plugin_and_passes_its_suite(kind: str, home: Path) -> None:
    name = f"gen_{kind}_{uuid.uuid4().hex[:8]}"  # plugins load once per module name: never reuse one
    assert main(["new-component", kind, name]) == 0
    path = home / "plugins" / f"{name}.py"
    assert path.is_file() and "TODO" in path.read_text()
    module_name = f"nasforge_plugin_{name}"
    try:
        assert str(path) in registry.load_plugins(), f"{path} did not load as a plugin"
        assert name in registry.names(kind)
        stub = getattr(sys.modules[module_name], f"test_{name}_conformance")
        stub()  # the generated test: the kind's conformance suite on the component
    finally:
        sys.modules.pop(module_name, None)


def test_refuses_an_existing_file_bad_kinds_and_bad_names(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["new-component", "space", "my_space", "-o", str(out)]) == 0
    written = (out / "my_space.py").read_text()
    capsys.readouterr()

    assert main(["new-component", "space", "my_space", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and len(err.splitlines()) == 1
    assert (out / "my_space.py").read_text() == written

    assert main(["new-component", "spaces", "x"]) == 2
    err = capsys.readouterr().err
    assert all(kind in err for kind in registry.KINDS)

    for bad in ("MySpace", "1space", "my-space"):
        assert main(["new-component", "space", bad, "-o", str(out)]) == 2
        assert "lowercase Python identifier" in capsys.readouterr().err

    assert main(["new-component", "space", "nb201", "-o", str(out)]) == 2
    assert "already registered" in capsys.readouterr().err


def test_render_names_the_class_and_the_test() -> None:
    text = render("cost_model", "my_cost")
    assert '@register("cost_model", "my_cost")' in text and "class MyCost(CostModel)" in text
    assert "def test_my_cost_conformance()" in text and 'check("cost_model", "my_cost")' in text
