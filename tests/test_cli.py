"""The `nasforge` command end to end: search -> derive -> train -> test -> export, and bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from nasforge.cli import main

TINY = {
    "name": "tiny",
    "seed": 1,
    "threads": 1,
    "data": {"type": "digits", "train_limit": 300, "test_limit": 100},
    "space": {"type": "nb201", "C": 4, "N": 1},
    "strategy": {"type": "evolution", "population_size": 3, "sample_size": 2},
    "estimator": {"type": "scratch", "epochs": 1, "batch_size": 64},
    "budget": {"trials": 4},
    "train": {"epochs": 1},
}


def write_config(tmp_path: Path, config: dict | str = TINY, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return path


def run_cli(*args: str) -> int:
    return main(list(args))


def test_search_derive_train_test_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    assert run_cli("search", str(write_config(tmp_path)), "--run-dir", str(run_dir)) == 0
    out = capsys.readouterr().out
    assert "best arch:" in out and "test accuracy" in out
    for name in ("config.yaml", "trials.sqlite", "checkpoint.pt", "topk.yaml", "search.log", "final/weights.pt"):
        assert (run_dir / name).exists(), name
    topk = yaml.safe_load((run_dir / "topk.yaml").read_text())["archs"]
    assert topk and topk[0]["arch"].startswith("|")

    derived = tmp_path / "top2.yaml"
    assert run_cli("derive", str(run_dir), "-n", "2", "-o", str(derived)) == 0
    archs = yaml.safe_load(derived.read_text())["archs"]
    assert len(archs) == 2 and archs[0]["arch"] == topk[0]["arch"]

    model_dir = tmp_path / "model"
    assert run_cli("train", "--run", str(run_dir), "--arch", str(derived), "--index", "1", "--out", str(model_dir), "--quiet") == 0
    assert (model_dir / "weights.pt").exists()
    assert yaml.safe_load((model_dir / "model.yaml").read_text())["arch"] == archs[1]["arch"]
    capsys.readouterr()
    assert run_cli("test", str(model_dir)) == 0
    assert "test accuracy" in capsys.readouterr().out

    export_dir = tmp_path / "exported"
    assert run_cli("export", str(model_dir), "-o", str(export_dir)) == 0
    check_export_without_nasforge(model_dir, export_dir)


def check_export_without_nasforge(model_dir: Path, export_dir: Path) -> None:
    """The exported model loads and reproduces the trained one where nasforge cannot be imported."""
    import torch

    from nasforge.tasks.model_folder import load_model_folder

    folder = load_model_folder(model_dir)
    x = torch.randn(3, *folder.input_shape[1:])
    torch.save(x, export_dir / "x.pt")
    with torch.no_grad():
        torch.save(folder.model(x), export_dir / "expected.pt")
    script = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "nasforge":
                    raise ImportError("nasforge is blocked in this test")
        sys.meta_path.insert(0, Block())
        sys.path = [p for p in sys.path if "work/main" not in p or p.endswith("site-packages")]
        sys.path.insert(0, ".")
        import torch, model
        net = model.load()
        got = net(torch.load("x.pt"))
        assert torch.allclose(got, torch.load("expected.pt"), atol=1e-5), (got - torch.load("expected.pt")).abs().max()
        assert not any(m.startswith("nasforge") for m in sys.modules)
        try:
            import nasforge  # noqa: F401
        except ImportError:
            print("ok: loaded without nasforge")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=export_dir, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ok: loaded without nasforge" in done.stdout


def test_registry_and_gen_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("registry", "strategy") == 0
    out = capsys.readouterr().out
    assert "evolution" in out and "random" in out
    generated = tmp_path / "generated.yaml"
    assert run_cli("gen-config", "--space", "nb201", "-o", str(generated)) == 0
    text = generated.read_text()
    data = yaml.safe_load(text)
    assert data["space"]["type"] == "nb201" and data["space"]["C"] == 16 and data["space"]["N"] == 5
    assert "in_channels" not in data["space"]  # filled from the data, not by the user
    assert "# other strategy choices:" in text and "type: random" in text
    assert "population_size: 10" in text


def _gen_config_cases() -> list[tuple[str, dict[str, str]]]:
    """Every registered space with the defaults, and every strategy and estimator on a space it fits."""
    from nasforge.core import registry
    from nasforge.core.capabilities import combination_problem

    spaces = registry.names("space")
    cases: list[tuple[str, dict[str, str]]] = [(space, {}) for space in spaces]
    for kind in ("strategy", "estimator"):
        for reg in registry.registrations(kind):
            fits = [s for s in spaces if combination_problem(s, **{kind: reg.name}) is None]
            cases.append(("nb201" if "nb201" in fits else fits[0], {kind: reg.name}))
    return cases


@pytest.mark.parametrize(("space", "chosen"), _gen_config_cases(), ids=lambda v: str(v or "defaults"))
def test_gen_config_validates_or_names_what_to_fill_in(space: str, chosen: dict[str, str]) -> None:
    from nasforge.core.errors import ConfigError
    from nasforge.runner.config import parse_config
    from nasforge.runner.gen_config import FILL_IN, generate_config

    text = generate_config(space, **chosen)
    try:
        parse_config(yaml.safe_load(text), "<generated config>")
    except ConfigError as exc:
        notes = [line for line in text.splitlines() if line.startswith(FILL_IN)]
        assert notes, f"gen-config for {space} {chosen} does not validate and names nothing to fill in: {exc}"
        bad = str(exc).split(" = ")[0].rsplit(".", 1)[-1]  # "... space.factory = None: ..." -> factory
        assert any(bad in note for note in notes), (bad, notes)


def test_gen_config_without_an_example_marks_the_required_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nasforge.spaces.latency_bounded import LatencyBoundedSpace

    out = tmp_path / "bounded.yaml"
    assert run_cli("gen-config", "--space", "latency_bounded", "-o", str(out)) == 0
    data = yaml.safe_load(out.read_text())
    assert data["space"]["inner"]["type"] == "nb201" and data["space"]["max_ms"] > 0  # the example values
    assert "# space: inner, table, max_ms hold example values" in out.read_text()
    monkeypatch.setattr(LatencyBoundedSpace, "example_options", {})
    assert run_cli("gen-config", "--space", "latency_bounded", "-o", str(out)) == 0
    assert "# FILL IN space: inner, max_ms (required, no default)" in out.read_text()
    assert "FILL IN" in capsys.readouterr().err
    expect_error(capsys, ["gen-config", "--space", "ofa", "--estimator", "nb201_table"], "estimator 'nb201_table' fits space(s) nb201 only, not space 'ofa'")


def test_eval_arch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arch = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"
    assert run_cli("eval-arch", str(write_config(tmp_path)), arch) == 0
    assert "val_acc" in capsys.readouterr().out


# -- bad input: one clear paragraph, exit status 2, no traceback, nothing lost ------------------


def expect_error(capsys: pytest.CaptureFixture[str], args: list[str], *fragments: str) -> str:
    assert run_cli(*args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    flat = " ".join(err.split())
    for fragment in fragments:
        assert fragment in flat, f"{fragment!r} not in {flat!r}"
    return flat


def test_malformed_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "space: {type: nb201\nstrategy: [oops\n")
    expect_error(capsys, ["search", str(path)], "malformed YAML", str(path), "line")


def test_unknown_component_lists_registered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, {**TINY, "strategy": {"type": "evolutoin"}})
    expect_error(capsys, ["search", str(path)], "unknown strategy type 'evolutoin'", "Did you mean 'evolution'", "random")


def test_unknown_top_level_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = {**TINY, "strtegy": TINY["strategy"]}
    del config["strategy"]
    expect_error(capsys, ["search", str(write_config(tmp_path, config))], "unknown key 'strtegy'", "config.yaml", "'strategy'")


def test_misspelled_component_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = {**TINY, "strategy": {"type": "evolution", "popuation_size": 5}}
    expect_error(
        capsys, ["search", str(write_config(tmp_path, config))], "unknown key 'popuation_size'", "config.yaml: strategy", "population_size"
    )


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("budget.trials=-3", "budget.trials = -3"),
        ("strategy.population_size=0", "population_size"),
        ("data.valid_fraction=1.5", "valid_fraction"),
        ("strategy.sample_size=50", "sample_size=50 must not exceed population_size=3"),
    ],
)
def test_out_of_range_values(tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, fragment: str) -> None:
    expect_error(capsys, ["search", str(write_config(tmp_path)), "--set", override, "--run-dir", str(tmp_path / "r")], fragment)


def test_arch_that_does_not_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = "|nor_conv_3x3~0|+|conv_9x9~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"
    expect_error(capsys, ["train", "--config", str(write_config(tmp_path)), "--arch", bad, "--out", str(tmp_path / "m")], "conv_9x9")


def test_missing_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    config = {**TINY, "data": {"type": "fashion_mnist", "data_dir": str(empty)}}
    expect_error(
        capsys, ["search", str(write_config(tmp_path, config)), "--run-dir", str(tmp_path / "r")], "train-images-idx3-ubyte", "apt-get install dataset-fashion-mnist"
    )


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoint_on_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str) -> None:
    run_dir = tmp_path / "run"
    config = {**TINY, "train": None, "budget": {"trials": 2}}
    assert run_cli("search", str(write_config(tmp_path, config)), "--run-dir", str(run_dir), "--quiet") == 0
    checkpoint = run_dir / "checkpoint.pt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a checkpoint at all")
    store_before = (run_dir / "trials.sqlite").read_bytes()
    capsys.readouterr()
    expect_error(capsys, ["search", "--resume", str(run_dir)], "checkpoint", "corrupt or truncated", str(checkpoint))
    assert (run_dir / "trials.sqlite").read_bytes() == store_before  # nothing lost


def test_existing_run_is_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, {**TINY, "train": None, "budget": {"trials": 1}})
    assert run_cli("search", str(config), "--run-dir", str(run_dir), "--quiet") == 0
    capsys.readouterr()
    expect_error(capsys, ["search", str(config), "--run-dir", str(run_dir)], "already holds a search", "--resume")


def test_missing_config_and_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expect_error(capsys, ["search", str(tmp_path / "nope.yaml")], "does not exist")
    expect_error(capsys, ["search", "--resume", str(tmp_path)], "cannot resume")


def test_train_init_from_a_run_without_a_supernet_fails_before_announcing_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arch = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"
    config = str(write_config(tmp_path))
    assert run_cli("train", "--config", config, "--arch", arch, "--init-from", str(tmp_path / "scratch_run")) == 2
    captured = capsys.readouterr()
    assert "holds no supernet checkpoint" in captured.err + captured.out
    assert "training" not in captured.out


def test_output_to_a_pipe_is_never_wrapped(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Logs and pipes get one line per message, whatever the terminal's width or the path's length."""
    monkeypatch.setenv("COLUMNS", "30")
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6)
    deep.mkdir(parents=True)
    out = deep / "config.yaml"
    assert main(["gen-config", "--space", "nb201", "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out.splitlines()
