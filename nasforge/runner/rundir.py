"""Run directories: one writer at a time, resumable only by their own run, readable when read-only.

A process that writes a run directory (a search, its resume, a pipeline, ``nasforge train`` into
the run) holds :class:`RunLock` for its whole life: an exclusive ``fcntl.flock`` on
``RUN_DIR/run.lock``, which holds the writer's PID. A second writer fails at once with a
:class:`RunLockedError` naming that PID. The kernel releases a flock when its process dies, so the
lock of a writer killed with SIGKILL is stale: the next writer takes it over (and says so). The
lock file is never deleted (deleting it would let two writers lock two different files).

The lock is re-entrant within one process: the CLI takes it before writing anything, and the
:class:`~nasforge.runner.loop.Runner` it starts takes it again without blocking itself.

See ``docs/run-directories.md`` for what lives in a run directory and what resume guarantees.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

from nasforge.core.errors import CheckpointError

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_FILE",
    "RunLock",
    "RunLockedError",
    "clean_leftovers",
    "fingerprint",
    "fingerprint_mismatch",
    "require_writable",
]

log = logging.getLogger("nasforge")

LOCK_FILE = "run.lock"

#: Locks this process holds: resolved run directory -> [lock file descriptor, depth].
_HELD: dict[str, list[int]] = {}


class RunLockedError(CheckpointError):
    """Another live process writes this run directory."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


class RunLock:
    """The exclusive writer's lock of ``run_dir`` (a context manager; :meth:`acquire` /
    :meth:`release` by hand). Creates ``run_dir`` if it does not exist.

    Raises (on acquiring):
        RunLockedError: another live process holds the lock; the message names its PID.
        CheckpointError: the lock file cannot be created (a read-only run directory).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._key = ""

    def acquire(self) -> RunLock:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot create the run directory {self.run_dir}: {exc.strerror or exc}") from None
        self._key = str(self.run_dir.resolve())
        held = _HELD.get(self._key)
        if held is not None:  # re-entrant: this process already writes the run
            held[1] += 1
            return self
        if fcntl is None:  # pragma: no cover - Windows
            _HELD[self._key] = [-1, 1]
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CheckpointError(
                f"cannot lock the run directory {self.run_dir}: {LOCK_FILE} cannot be written ({exc.strerror or exc}); "
                "is the directory read-only? Copy it elsewhere to continue it"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise CheckpointError(f"cannot lock the run directory {self.run_dir}: {exc.strerror or exc}") from None
            holder = f"PID {pid}" if pid is not None else "a process that has not written its PID yet"
            raise RunLockedError(
                f"run directory {self.run_dir} is in use by another nasforge process ({holder}); two processes "
                f"writing one run would mix their trials. Wait for it to finish (or stop it: kill {pid or 'PID'}), "
                "or choose another run directory (--run-dir DIR)"
            ) from None
        previous = _read_pid(fd)
        if previous is not None and previous != os.getpid():
            state = "no longer running" if not _pid_alive(previous) else "no longer holding it"
            log.warning("took over the stale lock of %s from PID %d (%s; it was killed or crashed)", self.run_dir, previous, state)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        _HELD[self._key] = [fd, 1]
        return self

    def release(self) -> None:
        held = _HELD.get(self._key)
        if held is None:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del _HELD[self._key]
        fd = held[0]
        if fd >= 0:
            try:
                os.ftruncate(fd, 0)  # a clean end leaves no PID: only a killed writer's lock is stale
            except OSError:
                pass
            os.close(fd)  # releases the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def require_writable(run_dir: str | Path, action: str) -> None:
    """Raise a :class:`CheckpointError` when this user cannot write ``run_dir`` or its run files
    (checked with ``os.access``), saying what ``action`` needed."""
    run_dir = Path(run_dir)
    names = ("config.yaml", "trials.sqlite", "checkpoint.pt", LOCK_FILE)
    denied = [str(p) for p in (run_dir, *(run_dir / n for n in names)) if p.exists() and not os.access(p, os.W_OK)]
    if denied:
        raise CheckpointError(
            f"cannot {action} {run_dir}: it is read-only for this user ({', '.join(denied)} not writable). "
            f"Reading it works (derive, plot, train --out elsewhere); to continue it, copy it (cp -r {run_dir} NEW_DIR) "
            "and resume the copy"
        )


def clean_leftovers(run_dir: str | Path) -> list[Path]:
    """Remove the temporary files and folders (``.*.tmp``) a killed writer left anywhere under
    ``run_dir``; returns what was removed. Call it only while holding the run's lock."""
    removed = []
    for path in sorted(Path(run_dir).rglob(".*.tmp")):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) a killed run left: %s", len(removed), ", ".join(p.name for p in removed))
    return removed


def fingerprint(sections: dict[str, Any]) -> dict[str, str]:
    """A short hash of each config section (JSON with sorted keys): what a resumed run must match."""
    return {
        name: hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
        for name, value in sections.items()
    }


def fingerprint_mismatch(recorded: dict[str, str] | None, current: dict[str, str] | None) -> list[str]:
    """The sections whose hashes differ (none when either side recorded nothing)."""
    if not recorded or not current:
        return []
    return sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))
