"""Seeds, deterministic mode and RNG states that survive ``torch.load(weights_only=True)``.

``get_rng_state()`` returns the torch, CUDA, NumPy and Python generator states as
tensors, tuples, lists and ints only (NumPy's key array becomes an int64 tensor, Python's
state tuple stays a tuple of ints), so a checkpoint holding them still loads with
``weights_only=True``; ``set_rng_state`` puts them back exactly.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels (``torch.use_deterministic_algorithms``) and no cuDNN autotuning.

    On CUDA some ops have no deterministic kernel; torch then raises naming the op. The
    cuBLAS workspace variable must be set before the first cuBLAS call to take effect.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False


def get_rng_state() -> dict[str, Any]:
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (str(np_name), torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)),
        "python": (int(py_version), tuple(int(v) for v in py_internal), py_gauss),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), int(np_pos), int(np_has_gauss), float(np_gauss)))
    py_version, py_internal, py_gauss = state["python"]
    random.setstate((int(py_version), tuple(int(v) for v in py_internal), py_gauss))


@contextmanager
def preserve_rng():
    """Run a block (e.g. validation) without changing any RNG stream seen after it."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)
