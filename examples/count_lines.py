"""Count the lines of user code behind the usability setups, for docs/usability.md.

``python examples/count_lines.py`` prints the table; ``--write`` puts it into docs/usability.md
(between its ``count_lines`` markers), and tests/test_converter.py checks the doc is current.

What is counted, in lines that are neither blank nor comments:

- **model**: the user's network (examples/usability_resnet.py); plain PyTorch, no NAS code in it.
- **space**: the ``space:`` section of a setup's config (factory and conversion rule).
- **setup**: the Python the user writes for the setup (the Python files its config names, the
  model left out: each setup is ``nasforge search CONFIG``), and the config lines it changes
  from setup (A).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
DOC = EXAMPLES.parent / "docs" / "usability.md"
MODEL = EXAMPLES / "usability_resnet.py"
SETUPS = {
    "A": ("random search, each child from scratch", EXAMPLES / "usability_a_random.yaml"),
    "B": ("ProxylessNAS supernet", EXAMPLES / "usability_b_proxyless.yaml"),
    "C": ("depth and width, OFA-style inheritance", EXAMPLES / "usability_c_ofa.yaml"),
}
BEGIN, END = "<!-- count_lines: begin -->", "<!-- count_lines: end -->"


def config_lines(path: Path) -> list[str]:
    """The config's lines that say something (no blanks, no comments, no run name)."""
    lines = [line.split(" #")[0].rstrip() for line in path.read_text().splitlines()]
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#") and not line.startswith("name:")]


def section(lines: list[str], key: str) -> list[str]:
    """The lines of top-level section ``key`` (its own line and the indented ones below)."""
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return lines[start:end]


def python_lines(path: Path) -> int:
    """Lines of code in a Python file, docstrings and comments left out."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))  # type: ignore[operator]
    return sum(
        1
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#") and number not in docstrings
    )


def setup_python(path: Path) -> list[Path]:
    """Python files a config names (factories), the model excepted."""
    named = {EXAMPLES.parent / name for name in re.findall(r"[\w./-]+\.py", "\n".join(config_lines(path)))}
    return sorted(p for p in named if p.resolve() != MODEL)


def count() -> dict[str, dict[str, int]]:
    """Per setup: ``space`` (config lines), ``python`` (user Python lines for the setup) and
    ``changed`` (config lines differing from setup A); plus ``model`` (lines of the model)."""
    base = config_lines(SETUPS["A"][1])
    counts: dict[str, dict[str, int]] = {"model": {"python": python_lines(MODEL)}}
    for key, (_, path) in SETUPS.items():
        lines = config_lines(path)
        changed = sum(1 for diff in difflib.ndiff(base, lines) if diff.startswith("+ "))
        counts[key] = {
            "space": len(section(lines, "space")),
            "python": sum(python_lines(p) for p in setup_python(path)),
            "changed": changed,
        }
    return counts


def table() -> str:
    """The markdown table of docs/usability.md."""
    c = count()
    space = max(c[k]["space"] for k in SETUPS)
    rows = [
        "| | space | (A) | (B) | (C) |",
        "|---|---|---|---|---|",
        "| NNI (ModularNAS Table 7) | 30 | 15 | 15 | 200 |",
        "| ModularNAS (Table 7) | <10 | 0 | 0 | 25 |",
        f"| nasforge, user Python | 0 | {c['A']['python']} | {c['B']['python']} | {c['C']['python']} |",
        f"| nasforge, config lines | {space} | {len(config_lines(SETUPS['A'][1]))} (whole config) "
        f"| {c['B']['changed']} changed from (A) | {c['C']['changed']} changed from (A) |",
    ]
    per_setup = ", ".join(f"{key}: {c[key]['space']}" for key in SETUPS)
    notes = (
        f"The model itself is {c['model']['python']} lines of plain PyTorch and is not counted: every "
        f"setup starts from it unchanged. Space: the `space:` section of the config ({per_setup})."
    )
    return "\n".join([*rows, "", notes])


def write_doc() -> None:
    """Replace the table between the markers of docs/usability.md."""
    text = DOC.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    DOC.write_text(pattern.sub(lambda _: f"{BEGIN}\n{table()}\n{END}", text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update docs/usability.md")
    if parser.parse_args().write:
        write_doc()
    print(table())


if __name__ == "__main__":
    main()
