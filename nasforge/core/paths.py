"""Where data files are looked for. Nothing is ever downloaded: a missing file is an error that
names it, every place that was searched, and how to get it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from nasforge.core.errors import DataNotFoundError

__all__ = ["data_roots", "find_data_dir"]


def data_roots() -> list[Path]:
    """Folders searched for datasets and benchmark tables, in order.

    ``$NASFORGE_DATA_DIR`` (may hold several folders separated by ``os.pathsep``), then
    ``$NASFORGE_HOME/data`` (default ``~/.nasforge/data``).
    """
    roots = [Path(p) for p in os.environ.get("NASFORGE_DATA_DIR", "").split(os.pathsep) if p]
    home = Path(os.environ.get("NASFORGE_HOME", Path.home() / ".nasforge"))
    return [*roots, home / "data"]


def find_data_dir(
    subdir: str,
    required: Sequence[str | Sequence[str]],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    extra: Sequence[str | os.PathLike[str]] = (),
    how_to_get: str = "",
) -> Path:
    """The first folder holding every required file.

    Args:
        subdir: the dataset's folder name under each data root (``"fashion-mnist"``, ``"nb201"``).
        required: file names that must all be present; an entry that is a sequence of names is
            satisfied by any one of them (e.g. a file or its ``.gz``).
        data_dir: an explicit folder from the config; when given, only it (and ``data_dir/subdir``)
            is searched.
        extra: further folders to try after the data roots (e.g. ``/usr/share/datasets/...``).
        how_to_get: one sentence on obtaining the files, appended to the error.
    """
    if data_dir is not None:
        candidates = [Path(data_dir), Path(data_dir) / subdir]
    else:
        candidates = [root / subdir for root in data_roots()] + [Path(p) for p in extra]
    alternatives = [[r] if isinstance(r, str) else list(r) for r in required]
    for folder in candidates:
        if all(any((folder / name).is_file() for name in names) for names in alternatives):
            return folder
    wanted = ", ".join(" or ".join(names) for names in alternatives)
    searched = ", ".join(str(c) for c in candidates)
    raise DataNotFoundError(
        f"cannot find {subdir} data: need {wanted}; looked in {searched}. "
        + (how_to_get + " " if how_to_get else "")
        + "Set `data_dir` in the config or the NASFORGE_DATA_DIR environment variable to the folder that holds them."
    )
