"""The ``command`` estimator: score an arch by running an external program and reading its output.

This is how ModularNAS tunes a training script it does not own: the arch's values are written
into a command line, the command runs in a subprocess, and the metric is read from what it
prints. Any program in any language can so be searched or tuned::

    space: {type: params, choices: {lr: [0.01, 0.1], width: [16, 32]}}
    estimator:
      type: command
      cmd: "{python} train.py --lr {lr} --width {width} --seed {seed}"
      metric_regex: "val_acc=([0-9.]+)"
      timeout_s: 600

A failed program (nonzero exit, timeout, no metric in its output) fails that trial only, with the
tail of its output in the error; the search goes on.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import signal
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar

from pydantic import PositiveFloat, PositiveInt

from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError
from nasforge.core.estimator import Context, Estimator
from nasforge.core.registry import register
from nasforge.core.space import SearchSpace
from nasforge.core.trial import Result

__all__ = ["CommandEstimator", "CommandFailed", "SEED_ENV"]

#: Environment variable holding the trial's seed in the command's environment.
SEED_ENV = "NASFORGE_TRIAL_SEED"

#: Placeholders every command may use besides the space's choice names.
_BUILTIN_FIELDS = ("seed", "python")


class CommandFailed(RuntimeError):
    """The command exited nonzero, timed out or printed no metric (fails the trial only)."""


class _WholeNameFormatter(string.Formatter):
    """``str.format`` that looks a field up by its whole name, so ``{hp.lr}`` and ``{2<-1}`` work."""

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        return kwargs[field_name], field_name


_FORMATTER = _WholeNameFormatter()


def _fields(template: str) -> list[str]:
    """The placeholder names of a format template."""
    try:
        return [name for _, name, _, _ in _FORMATTER.parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"command: cannot read the placeholders of {template!r}: {exc}") from None


def _read(file: IO[bytes]) -> str:
    """All of a temporary output file, decoded (undecodable bytes replaced)."""
    file.seek(0)
    return file.read().decode(errors="replace")


def _tail(text: str, chars: int) -> str:
    return text if len(text) <= chars else "..." + text[-chars:]


@register("estimator", "command")
class CommandEstimator(Estimator):
    """Run an external command per arch and parse its metric(s) from standard output.

    Args:
        cmd: the command line; ``{NAME}`` is replaced by the arch's value of choice ``NAME``,
            ``{seed}`` by the trial's seed, ``{python}`` by the running Python interpreter.
            Split like a shell would (``shlex``) before the values go in, so a value is always
            one argument and never shell syntax (no shell runs; for pipes, call a script).
        metric_regex: a regex whose first group is the metric (named ``metric``), or a mapping
            ``{metric name: regex}``; the last match in stdout counts. Without it the last
            stdout line that is a JSON object gives the metrics (its numeric entries).
        metric: the metric's name for a single ``metric_regex``.
        timeout_s: seconds before the command (and everything it started) is killed and the
            trial fails; None waits for ever.
        cwd: working folder of the command (default: the current one).
        env: extra environment variables; ``NASFORGE_TRIAL_SEED`` is always set.
        tail_chars: characters of stdout and stderr kept in the trial's extras.
        space: offered by the runner; placeholders are checked against its choices up front.

    Metrics: whatever the command prints. Cost: ``seconds``. Extras: ``command``,
    ``returncode``, ``stdout_tail`` and ``stderr_tail``.
    """

    #: Values for the required options that `nasforge gen-config` writes as a template.
    example_options: ClassVar[dict[str, Any]] = {"cmd": "{python} train.py --lr {lr} --seed {seed}", "metric_regex": "val_acc=([0-9.]+)"}

    #: Tiny settings for the conformance suite (nasforge.testing.suites).
    conformance_options: ClassVar[dict[str, Any]] = {"cmd": "{python} -c \"print('val_acc=0.5')\"", "metric_regex": "val_acc=([0-9.]+)"}

    def __init__(
        self,
        cmd: str,
        metric_regex: str | dict[str, str] | None = None,
        metric: str = "val_acc",
        timeout_s: PositiveFloat | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        tail_chars: PositiveInt = 2000,
        space: SearchSpace | None = None,
    ) -> None:
        self.template = shlex.split(cmd)
        if not self.template:
            raise ConfigError("command: `cmd` is empty")
        patterns = {metric: metric_regex} if isinstance(metric_regex, str) else dict(metric_regex or {})
        self.patterns: dict[str, re.Pattern[str]] = {}
        for name, pattern in patterns.items():
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"command: metric_regex for {name!r} ({pattern!r}) is not a valid regex: {exc}") from None
            if compiled.groups < 1:
                raise ConfigError(f"command: metric_regex for {name!r} ({pattern!r}) needs a group around the number")
            self.patterns[name] = compiled
        if space is not None:
            known = [*space.choices(), *_BUILTIN_FIELDS]
            unknown = [name for token in self.template for name in _fields(token) if name not in known]
            if unknown:
                raise ConfigError(f"command: cmd uses {{{unknown[0]}}}, which is no choice of the space; usable: {', '.join(known)}")
        if cwd is not None and not Path(cwd).is_dir():
            raise ConfigError(f"command: cwd {cwd!r} is not a folder")
        self.timeout_s = timeout_s
        self.cwd = cwd
        self.env = dict(env or {})
        self.tail_chars = tail_chars

    def reported_metrics(self) -> frozenset[str] | None:
        """The metrics its ``metric_regex`` names; None (unknown) when it reads a JSON line."""
        return frozenset(self.patterns) if self.patterns else None

    def command_line(self, arch: Arch, seed: int) -> list[str]:
        """The argument list for ``arch`` (each template token formatted on its own)."""
        values = {"seed": seed, "python": sys.executable, **arch}
        try:
            return [_FORMATTER.vformat(token, (), values) for token in self.template]
        except KeyError as exc:
            raise ConfigError(f"command: cmd uses {{{exc.args[0]}}}, but the arch has no such choice; it has {', '.join(arch)}") from None

    def _run(self, args: list[str], seed: int) -> tuple[int | None, str, str]:
        """Run the command; returns (exit status or None on timeout, stdout, stderr).

        Output goes to temporary files, not pipes: the command is done when it exits, even if a
        child it left running still holds its output. That child, and anything else in the
        command's session, is killed when the command ends, times out or is interrupted.
        """
        env = {**os.environ, **self.env, SEED_ENV: str(seed)}
        with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen(args, cwd=self.cwd, env=env, stdout=stdout, stderr=stderr, start_new_session=True)
            try:
                returncode: int | None = process.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                returncode = None
            finally:
                with contextlib.suppress(ProcessLookupError):  # nothing of the session left
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            return returncode, _read(stdout), _read(stderr)

    def parse_metrics(self, stdout: str) -> dict[str, float]:
        """The metrics in ``stdout`` (regexes, else the last JSON line); missing ones are left out.

        Raises:
            ValueError: a regex matched text that is not a number (the message names the metric).
        """
        metrics: dict[str, float] = {}
        if self.patterns:
            for name, pattern in self.patterns.items():
                found = pattern.findall(stdout)
                if found:
                    last = found[-1]
                    text = last[0] if isinstance(last, tuple) else last
                    try:
                        metrics[name] = float(text)
                    except ValueError:
                        raise ValueError(f"{name} = {text!r}, which is not a number (metric_regex {pattern.pattern!r})") from None
            return metrics
        for line in reversed(stdout.splitlines()):
            try:
                loaded = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(loaded, dict):
                return {k: float(v) for k, v in loaded.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return metrics

    def estimate(self, arch: Arch, ctx: Context) -> Result:
        """Run the command for ``arch``; a failure raises :class:`CommandFailed` (the trial fails)."""
        args = self.command_line(arch, ctx.seed)
        shown = shlex.join(args)
        start = time.perf_counter()
        try:
            returncode, stdout, stderr = self._run(args, ctx.seed)
        except OSError as exc:
            raise CommandFailed(f"cannot run `{shown}`: {exc}") from None
        seconds = time.perf_counter() - start
        stdout_tail, stderr_tail = _tail(stdout, self.tail_chars), _tail(stderr, self.tail_chars)
        output = f"\n--- stdout (tail) ---\n{stdout_tail}\n--- stderr (tail) ---\n{stderr_tail}"
        if returncode is None:
            raise CommandFailed(f"`{shown}` timed out after {self.timeout_s:g} s and was killed{output}")
        if returncode != 0:
            raise CommandFailed(f"`{shown}` exited with status {returncode}{output}")
        try:
            metrics = self.parse_metrics(stdout)
        except ValueError as exc:
            raise CommandFailed(f"`{shown}` reported {exc}{output}") from None
        wanted = list(self.patterns) or ["a JSON object line"]
        if not metrics or any(name not in metrics for name in self.patterns):
            missing = [name for name in wanted if name not in metrics]
            raise CommandFailed(f"`{shown}` printed no {', '.join(missing)} in its output{output}")
        bad = [name for name, value in metrics.items() if not math.isfinite(value)]
        if bad:
            raise CommandFailed(f"`{shown}` reported a non-finite {bad[0]} = {metrics[bad[0]]}{output}")
        return Result(
            metrics=metrics,
            cost={"seconds": seconds},
            extras={"command": shown, "returncode": returncode, "stdout_tail": stdout_tail, "stderr_tail": stderr_tail},
        )
