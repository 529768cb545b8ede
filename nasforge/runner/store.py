"""The experiment store: every trial of a search in an embedded SQLite database.

One row per finished trial, committed as soon as it is told, so a search killed at any moment
keeps every trial that finished before it. ``":memory:"`` gives a throwaway store.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from nasforge.core.errors import CheckpointError
from nasforge.core.trial import Trial

__all__ = ["TrialStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    number   INTEGER PRIMARY KEY,
    arch     TEXT NOT NULL,
    seed     INTEGER NOT NULL,
    status   TEXT NOT NULL,
    metrics  TEXT NOT NULL,
    cost     TEXT NOT NULL,
    "values" TEXT NOT NULL,
    feasible INTEGER NOT NULL,
    error    TEXT,
    extras   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _dumps(value: Any) -> str:
    # JSON has no infinities; failed trials score -inf, so encode them as strings.
    def fix(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return repr(x)
        if isinstance(x, dict):
            return {k: fix(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [fix(v) for v in x]
        return x

    return json.dumps(fix(value), separators=(",", ":"))


def _loads_numbers(text: str) -> Any:
    value = json.loads(text)
    if isinstance(value, dict):
        return {k: float(v) if isinstance(v, str) and v in ("inf", "-inf", "nan") else v for k, v in value.items()}
    return [float(v) if isinstance(v, str) else v for v in value]


def _uri(path: Path, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{quote(str(path.resolve()))}?{query}"


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """Open ``path`` for reading only (``mode=ro``): nothing is created or changed, so stores in
    read-only run directories can be read.

    A WAL database needs its ``-shm`` file, which SQLite cannot create in a read-only folder once a
    clean close removed it; then, with no write-ahead log left to read, it is opened
    ``immutable=1`` (the file is read as it is, without locks).
    """
    if not path.is_file():
        raise CheckpointError(f"trial store {path} does not exist")
    try:
        db = sqlite3.connect(_uri(path, mode="ro"), uri=True, isolation_level=None, check_same_thread=False)
        try:
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            db.close()
            raise
        return db
    except sqlite3.OperationalError:
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise
    return sqlite3.connect(_uri(path, mode="ro", immutable="1"), uri=True, isolation_level=None, check_same_thread=False)


class TrialStore:
    """Append-only trial storage backed by SQLite (a file in the run directory, or memory).

    ``readonly=True`` opens an existing file with SQLite's ``mode=ro`` (see :func:`_connect_readonly`):
    what ``derive``, ``plot`` and the other readers use, so a read-only run directory is readable.
    """

    def __init__(self, path: str | Path = ":memory:", *, readonly: bool = False) -> None:
        self.path = str(path)
        self.readonly = readonly
        try:
            if readonly:
                self._db = _connect_readonly(Path(self.path))
                return
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(f"trial store {self.path} is not a readable SQLite database: {exc}") from None

    def add(self, trial: Trial) -> None:
        """Record a finished trial (one committed transaction)."""
        self._db.execute(
            'INSERT INTO trials (number, arch, seed, status, metrics, cost, "values", feasible, error, extras) '
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                trial.number,
                str(trial.arch),
                trial.seed,
                trial.status.value,
                _dumps(trial.metrics),
                _dumps(trial.cost),
                _dumps(list(trial.values)),
                int(trial.feasible),
                trial.error,
                _dumps(trial.extras),
            ),
        )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM trials").fetchone()[0])

    def __iter__(self) -> Iterator[Trial]:
        return iter(self.trials())

    def trials(self) -> list[Trial]:
        """Every stored trial in number order."""
        try:
            rows = self._db.execute(
                'SELECT number, arch, seed, status, metrics, cost, "values", feasible, error, extras '
                "FROM trials ORDER BY number"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(f"trial store {self.path} is corrupt: {exc}") from None
        return [
            Trial.from_dict(
                {
                    "number": number,
                    "arch": json.loads(arch),
                    "seed": seed,
                    "status": status,
                    "metrics": _loads_numbers(metrics),
                    "cost": _loads_numbers(cost),
                    "values": _loads_numbers(values),
                    "feasible": bool(feasible),
                    "error": error,
                    "extras": json.loads(extras),
                }
            )
            for number, arch, seed, status, metrics, cost, values, feasible, error, extras in rows
        ]

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON value under ``key`` (run seed, config digest, ...)."""
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under ``key``, or ``default``."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def close(self) -> None:
        """Close the database (further calls fail)."""
        self._db.close()
