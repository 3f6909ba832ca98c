"""Small file-system helpers shared by the engine and the inference tools."""
from __future__ import annotations

import os
from pathlib import Path


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
