"""Small file-system helpers shared by the engine, the evaluators and the inference tools.

- :func:`ensure_writable_directory`: create a directory and prove a file can be written
  in it, so that a run fails before any work with the reason;
- :func:`atomic_write`: write a file so that it appears under its name only complete and
  on disk (checkpoints, ``config.json``, COCO results, ``detections.json``);
- :func:`remove_stale_temporary_files`: delete the temporary files that an
  :func:`atomic_write` killed mid-write (SIGKILL, power cut) left behind.
"""
from __future__ import annotations

import os
import re
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")  # see _TEMPORARY_NAME
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


# The names atomic_write gives its temporary files: ".<name>.<pid>.<8 hex digits>.tmp".
_TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def remove_stale_temporary_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of :func:`atomic_write` in ``directory`` whose writer is gone.

    Only names of atomic_write's pattern are touched, and only when the process id in
    the name is not alive (a live writer, e.g. another tool writing there now, keeps its
    file). Returns the files removed; a missing directory removes nothing.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for entry in sorted(directory.iterdir()):
        match = _TEMPORARY_NAME.match(entry.name)
        if match is None or not entry.is_file() or _process_alive(int(match["pid"])):
            continue
        entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process (or an unknowable id): leave its file alone
    return True


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
