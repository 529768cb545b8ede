"""Atomic files: a file written here is always either the old one or the new one, whole.

Every component that writes state a later run reads back (the runner's checkpoints and run
files, supernet slots, model folders, caches) goes through these helpers, so a crash or SIGKILL
at any moment never leaves a half-written file. They live in ``core`` so that estimators and
benchmarks can use them without importing the runner.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nasforge.core.errors import CheckpointError

__all__ = ["atomic_write_bytes", "atomic_write_folder", "folder_in_use", "save_checkpoint", "load_checkpoint"]


def _current_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it back at once
    os.umask(mask)
    return mask


#: The mode ``open()`` gives a new file, which the temporary file (0600 from mkstemp) gets too.
#: Read once at import: changing the umask is not thread-safe.
_UMASK = _current_umask()
_NEW_FILE_MODE = 0o666 & ~_UMASK
_NEW_DIR_MODE = 0o777 & ~_UMASK


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash at any moment leaves the old file or the new one.

    The bytes go to a temporary file in the same folder, are flushed and fsynced, then renamed
    over the target (``os.replace`` is atomic on POSIX and Windows); the folder is fsynced too.
    The file gets the mode ``open()`` would give it (0666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if hasattr(os, "fchmod"):  # POSIX; Windows has no such modes
                os.fchmod(handle.fileno(), _NEW_FILE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _fsync_dir(path: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def folder_in_use(path: str | Path) -> bool:
    """Whether ``path`` exists and is not an empty folder (what :func:`atomic_write_folder` will
    not replace unless asked)."""
    path = Path(path)
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def atomic_write_folder(path: str | Path, files: Mapping[str, bytes], *, replace: bool = False) -> None:
    """Write a folder of ``files`` (name -> bytes) whole: into a temporary folder
    ``.NAME.*.tmp`` beside it, fsynced, then renamed to ``path``, so a crash at any moment leaves
    no folder or the whole one, never a mix of old and new files.

    Raises:
        FileExistsError: ``path`` holds something (see :func:`folder_in_use`) and ``replace`` is
            False. With ``replace`` the old folder is moved aside, the new one renamed in, and
            the old one deleted.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder_in_use(path) and not replace:
        raise FileExistsError(f"{path} already exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, _NEW_DIR_MODE)  # mkdtemp's is 0700
        for name, data in files.items():
            with open(tmp / name, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        _fsync_dir(tmp)
        if folder_in_use(path):
            if not replace:
                raise FileExistsError(f"{path} already exists")
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", suffix=".tmp", dir=path.parent))
            os.replace(path, old)  # onto the empty folder just made
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)  # onto nothing, or onto an empty folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Serialise ``state`` (tensors allowed) with ``torch.save`` and write it atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, *, advice: str = "Move it aside or start a new run directory.") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    A missing, corrupt or foreign file raises :class:`CheckpointError`; a corrupt one's message
    ends with ``advice``, what the caller's user can do about it.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else "no detail"
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}: {detail}). {advice}") from None
    if not isinstance(state, dict) or "version" not in state:
        raise CheckpointError(f"checkpoint {path} is not a nasforge checkpoint")
    return state
