"""The CLI's consoles (rich, never wrapped off a terminal), its logging set-up and the tables and
progress bars the commands share."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console, ConsoleDimensions
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nasforge.core.trial import Trial

__all__ = [
    "console", "err_console", "log", "setup_logging", "fmt", "trial_table", "progress_bar", "step_progress",
    "epoch_progress",
]


class _Console(Console):
    """A rich console that wraps only on a terminal: logs, pipes and files get one line per
    message, whatever the terminal's width or the length of the paths printed."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(_UNWRAPPED_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


_UNWRAPPED_WIDTH = 100_000
console = _Console(highlight=False)
err_console = _Console(stderr=True, highlight=False)
log = logging.getLogger("nasforge")


def setup_logging(run_dir: Path | None, verbose: bool) -> None:
    """Warnings (every message with ``verbose``) to stderr; everything to ``run_dir/search.log``."""
    log.handlers.clear()
    log.setLevel(logging.DEBUG)
    handler: logging.Handler
    if err_console.is_terminal:
        handler = RichHandler(console=err_console, show_path=False, show_time=False, markup=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
    log.addHandler(handler)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(run_dir / "search.log")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        file_handler.setLevel(logging.DEBUG)
        log.addHandler(file_handler)


def fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def trial_table(space: Any, trials: Sequence[Trial], names: Sequence[str], title: str) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("trial", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("arch")
    for rank, trial in enumerate(trials, start=1):
        table.add_row(str(rank), str(trial.number), *(fmt(v) for v in trial.values), space.format(trial.arch))
    return table


def progress_bar(label: str, *, disable: bool) -> Progress:
    """A progress bar on :data:`console`: ``label``, bar, done/total, time, description."""
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        disable=disable,
    )


@contextmanager
def step_progress(label: str, what: str) -> Iterator[Callable[[int, int], None]]:
    """``progress(done, total)`` for a loop of measurements (blocks, children), drawn as a bar on
    :data:`console` only when it is a terminal (pipes and logs get nothing)."""
    with progress_bar(label, disable=not console.is_terminal) as bar:
        task = bar.add_task(what, total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield progress


def epoch_progress(bar: Progress) -> Callable[[str, int, int, Mapping[str, float]], None]:
    """A :class:`~nasforge.core.estimator.Context` ``progress`` callable drawing the epochs of a
    trial as a second task of ``bar`` (reset whenever the epochs start over)."""
    tasks: dict[str, Any] = {}

    def progress(what: str, done: int, total: int, metrics: Mapping[str, float]) -> None:
        if bar.disable:
            return
        shown = "  ".join(f"{k} {fmt(float(v))}" for k, v in metrics.items())
        if what not in tasks:
            tasks[what] = bar.add_task(what, total=total)
        bar.update(tasks[what], completed=done, total=total, description=f"{what} {done}/{total}  {shown}")

    return progress
