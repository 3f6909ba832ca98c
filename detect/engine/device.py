"""Where and in what precision a model runs: one answer for training, evaluation and inference.

- :func:`resolve_device`: ``"auto"`` / ``"cpu"`` / ``"cuda"`` / ``"cuda:N"`` to a
  ``torch.device``, with a clear error when CUDA is asked for and missing;
- :func:`resolve_amp`: a config's ``train.amp`` to ``None``, ``"fp16"`` or ``"bf16"`` for a device;
- :func:`autocast`: the autocast context of such a mode (a no-op for ``None``).
"""
from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch


def resolve_device(requested: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; anything else as torch reads it.

    A CUDA device without an index becomes ``cuda:LOCAL_RANK`` under torchrun (one GPU
    per process) and the current CUDA device otherwise. Nothing global is changed (the
    engine makes the device current when it starts a process group).
    """
    requested = str(requested or "auto")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {requested!r} asked for but CUDA is not available; use device 'cpu' (--device cpu)")
        if device.index is None:
            local_rank = os.environ.get("LOCAL_RANK")
            device = torch.device("cuda", int(local_rank) if local_rank is not None else torch.cuda.current_device())
    return device


def resolve_amp(amp: Any, device: torch.device) -> str | None:
    """``False``/``None`` -> None; ``True`` -> ``"fp16"`` on CUDA and off elsewhere (so that a
    GPU recipe runs unchanged on a CPU); ``"fp16"`` / ``"bf16"`` as named (bf16 on the CPU is
    opt-in: it pays off only on CPUs with bf16 instructions)."""
    if amp in (False, None, "none", "off"):
        return None
    if amp is True:
        return "fp16" if device.type == "cuda" else None
    if amp not in ("fp16", "bf16"):
        raise ValueError(f"train.amp={amp!r}: expected False, True, 'fp16' or 'bf16'")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("train.amp='fp16' needs a CUDA device; on the CPU use train.amp='bf16'")
    return amp


def autocast(amp: str | None, device: torch.device | str) -> AbstractContextManager:
    """``torch.autocast`` to float16 (``"fp16"``) or bfloat16 (``"bf16"``) on ``device``'s
    type; a context that does nothing for ``None``."""
    if amp is None:
        return nullcontext()
    if amp not in ("fp16", "bf16"):
        raise ValueError(f"amp={amp!r}: expected None, 'fp16' or 'bf16'")
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
