"""Distributed set-up for ``torchrun --nproc_per_node=N tools/train.py ...``.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`init_distributed`
reads them and starts the process group: NCCL when the device is CUDA (one GPU per
process, ``cuda:LOCAL_RANK``), gloo on the CPU, with a timeout so that a rank that dies
does not leave the others waiting forever. Without those variables everything here is
a no-op for a single process, so the same code path serves both.

Rules the engine follows: every rank trains on its own shard (DistributedSampler) with
gradients averaged by DistributedDataParallel; every rank takes part in evaluation
(evaluators gather on rank 0); only rank 0 logs, prints and writes files, and the other
ranks wait until it is done (:func:`on_main_process`, which also stops every rank when
the work failed on rank 0, rather than leaving the others waiting at a barrier until
the process-group timeout).
"""
from __future__ import annotations

import datetime
import os
from typing import Any, Callable

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device: torch.device, timeout_s: float = 1800) -> bool:
    """Start the process group when launched by torchrun; return whether it is distributed.

    A CUDA ``device`` (``detect.engine.device.resolve_device`` gives ``cuda:LOCAL_RANK``
    under torchrun) becomes the process's current CUDA device first, which NCCL needs.
    Idempotent: an already-initialised group (e.g. a test that set it up) is kept.
    """
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if is_distributed():
        return True
    if not launched_by_torchrun():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = dict(backend=backend, timeout=datetime.timedelta(seconds=float(timeout_s)))
    if device.type == "cuda":
        kwargs["device_id"] = device
    dist.init_process_group(**kwargs)
    return True


def destroy_distributed() -> None:
    if is_distributed():
        dist.destroy_process_group()


class MainProcessError(RuntimeError):
    """Raised on the other ranks when work that only rank 0 does failed there."""


def on_main_process(fn: Callable[[], Any], what: str) -> None:
    """Run ``fn`` on rank 0 while the other ranks wait; if it fails, every rank stops.

    Rank 0 re-raises its own exception; the other ranks raise :class:`MainProcessError`
    naming it (``what`` says what rank 0 was doing). In one process this is ``fn()``.
    Every rank must call it (it is a collective: the others wait there for rank 0).
    """
    if not is_distributed():
        fn()
        return
    error = None
    if is_main_process():
        try:
            fn()
        except Exception as err:  # shared with the other ranks below, then re-raised
            error = err
    failure = broadcast_object(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    if failure is not None:
        raise MainProcessError(f"rank 0 failed {what}: {failure}")


def all_reduce_mean(values: dict[str, float], device: torch.device | None = None) -> dict[str, float]:
    """Average scalar floats over ranks (for logging); identity in one process."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device or _comm_device())
    dist.all_reduce(tensor)
    tensor /= get_world_size()
    return dict(zip(keys, tensor.tolist()))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        tensor = tensor.clone().to(_comm_device())
        dist.all_reduce(tensor)
    return tensor


def any_across_ranks(flag: bool) -> bool:
    """True when ``flag`` is True on at least one rank (every rank gets the same answer)."""
    if not is_distributed():
        return bool(flag)
    tensor = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _comm_device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo moves CPU tensors.
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def wrap_model(model: torch.nn.Module, device: torch.device, *, find_unused_parameters: bool = False) -> torch.nn.Module:
    """DistributedDataParallel under torch.distributed (convert to SyncBatchNorm before,
    if wanted); the model itself otherwise."""
    if not is_distributed():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
