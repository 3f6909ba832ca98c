"""Small file-system helpers shared by the engine, the evaluators and the inference tools.

- :func:`ensure_writable_directory`: create a directory and prove a file can be written
  in it, so that a run fails before any work with the reason;
- :func:`atomic_write`: write a file so that it appears under its name only complete and
  on disk (checkpoints, ``config.json``, COCO results, ``detections.json``).
"""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


def ensure_writable_directory(directory: str | os.PathLike) -> Path:
    """Create ``directory`` if needed and prove that a file can be written in it.

    Raises the ``OSError`` of the failing step, so that callers fail early (before a model
    is built or a frame decoded) with their own hint on what to change.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f".write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()
    return directory


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; on a clean exit make it ``path``.

    ::

        with atomic_write(path, "w", encoding="utf-8") as f:
            json.dump(data, f)

    The data goes to ``.<name>.<pid>.<random>.tmp`` in the same directory (created if
    needed), which is flushed and fsynced, then ``os.replace``-d over ``path``; the
    directory is fsynced too so that the rename itself survives a power cut. Any failure
    (an exception in the block, a full disk, Ctrl+C) removes the temporary file and leaves
    the previous file of that name, if any, untouched. The file gets the usual
    permissions (umask applied), like one written by ``open``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, mode.replace("w", "x"), encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: str | os.PathLike) -> None:
    """Make renames in ``directory`` durable; a no-op where a directory cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
