"""The training loop: a small step plus hooks, in the manner of detectron2's train_loop.py.

:class:`Trainer` owns the loop state (``epoch`` = completed epochs, ``iteration`` = steps
taken, ``next_batch`` = position in the current epoch) and runs one step per batch:

1. move the batch to the device; forward under autocast when AMP is on;
2. sum the loss terms; check them all for NaN/inf at once (one host sync per step);
3. when every rank's losses are finite: zero the gradients, backward (through the
   GradScaler for fp16), clip the global gradient norm if asked, step the optimizer;
   otherwise the non-finite-loss guard names the image ids and the loss terms and either
   skips the step on every rank (buffers such as BatchNorm statistics are put back as they
   were before the forward) (``nonfinite_loss="skip"``, at most
   ``max_nonfinite_skips`` in a row) or raises :class:`NonFiniteLossError` (``"stop"``).

Everything else is a hook (:mod:`detect.engine.hooks`): the LR schedule, EMA,
validation, checkpoints, logging, plots. A hook implements any of ``before_train``,
``before_epoch``, ``before_step``, ``after_step``, ``after_epoch``, ``after_train`` and
sees the trainer as ``self.trainer``. ``after_train`` runs when the loop finishes (all
epochs or ``max_iters``), not after an exception.

Batches come from :func:`detect.engine.data_order.iterate_epoch`, so an epoch's order
depends on ``(seed, epoch)`` only and a resumed run continues at the exact next batch.
``num_batches`` is ``len(train_loader)``; the loader must yield exactly that many batches
per epoch (torch's and detect.data's batch samplers do).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

import detect
from detect.engine.checkpoint import FORMAT_VERSION
from detect.engine.data_order import iterate_epoch
from detect.engine.device import autocast
from detect.engine.distributed import (
    all_gather_object,
    any_across_ranks,
    get_rank,
    get_world_size,
    unwrap_model,
)
from detect.engine.evaluation import move_to_device
from detect.engine.loggers import get_logger
from detect.engine.rng import get_rng_state, set_rng_state


class NonFiniteLossError(FloatingPointError):
    """A loss was NaN or inf and the configuration says to stop (or too many steps were skipped)."""


@dataclass
class StepInfo:
    """What the last step did, for hooks."""

    losses: dict[str, float] = field(default_factory=dict)
    loss: float = float("nan")
    lr: float = float("nan")
    skipped: bool = False
    num_images: int = 0
    grad_norm: float | None = None


class HookBase:
    trainer: "Trainer"

    def before_train(self): ...
    def before_epoch(self): ...
    def before_step(self): ...
    def after_step(self): ...
    def after_epoch(self): ...
    def after_train(self): ...


class Trainer:
    """Runs the training loop.

    Args:
        model: the Detector, possibly wrapped in DistributedDataParallel (the forward of
            the training step goes through the wrapper; everything else uses the module).
        optimizer, scheduler: the scheduler needs ``step``/``state_dict``/``load_state_dict``.
        train_loader: a DataLoader yielding ``(list[Tensor[3,H,W]], list[target dict])``.
        epochs: epochs of the run; ``max_iters`` ends it earlier.
        device: where the batches go.
        amp: None, ``"fp16"`` (CUDA, with a GradScaler) or ``"bf16"`` (autocast only).
        clip_grad_norm: maximum global L2 norm of the gradients, or None.
        nonfinite_loss: ``"skip"`` or ``"stop"``; ``max_nonfinite_skips`` bounds skips in a row.
        seed: the data-order seed (see :mod:`detect.engine.data_order`).
        ema: a :class:`detect.engine.ema.ModelEMA` or None (updated by its hook).
        config, class_names: stored in every checkpoint.
        hooks: called in order.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, train_loader, *, epochs: int,
                 device: torch.device | str = "cpu", scheduler=None, amp: str | None = None,
                 clip_grad_norm: float | None = None, nonfinite_loss: str = "skip", max_nonfinite_skips: int = 20,
                 max_iters: int | None = None, seed: int = 0, ema=None, config: Mapping | None = None,
                 class_names: Sequence[str] | None = None, hooks: Iterable[HookBase] = ()):
        if nonfinite_loss not in ("skip", "stop"):
            raise ValueError(f"train.nonfinite_loss={nonfinite_loss!r}: expected 'skip' or 'stop'")
        self.model = model
        self.module = unwrap_model(model)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_loader = train_loader
        self.epochs = int(epochs)
        self.max_iters = None if max_iters is None else int(max_iters)
        self.device = torch.device(device)
        self.amp = amp
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=(amp == "fp16"))
        self.clip_grad_norm = clip_grad_norm
        self.nonfinite_loss = nonfinite_loss
        self.max_nonfinite_skips = int(max_nonfinite_skips)
        self.seed = int(seed)
        self.ema = ema
        self.config = dict(config or {})
        self.class_names = list(class_names or [])
        self.epoch = 0
        self.iteration = 0
        self.next_batch = 0
        self.num_batches = len(train_loader)
        self.metrics: dict[str, float] = {}
        self.metrics_iteration: int | None = None
        self.best: dict[str, Any] | None = None
        self.step_info = StepInfo()
        self.consecutive_skips = 0
        self.total_skips = 0
        self.logger = get_logger()
        self._params = [p for p in self.module.parameters() if p.requires_grad]
        self._state_buffers = list(self.module.buffers())
        self.hooks: list[HookBase] = []
        self.register_hooks(hooks)

    # ----------------------------------------------------------------- hooks
    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        for hook in hooks:
            hook.trainer = self
            self.hooks.append(hook)

    def _call(self, name: str) -> None:
        for hook in self.hooks:
            getattr(hook, name)()

    @property
    def total_iters(self) -> int:
        total = self.epochs * max(self.num_batches, 1)
        return total if self.max_iters is None else min(total, self.max_iters)

    def _done(self) -> bool:
        return self.epoch >= self.epochs or (self.max_iters is not None and self.iteration >= self.max_iters)

    def autocast(self):
        """The forward passes' autocast context (a no-op without AMP)."""
        return autocast(self.amp, self.device)

    # ------------------------------------------------------------------ loop
    def train(self) -> None:
        if self.num_batches == 0:
            raise RuntimeError("the training loader yields no batches; is the training set empty?")
        self.model.train()
        self._call("before_train")
        while not self._done():
            batches = iterate_epoch(self.train_loader, self.epoch, self.seed, self.next_batch)
            self._call("before_epoch")
            for images, targets in batches:
                self._call("before_step")
                self.run_step(images, targets)
                self.iteration += 1
                self.next_batch += 1
                self._call("after_step")
                if self.max_iters is not None and self.iteration >= self.max_iters and self.next_batch < self.num_batches:
                    break  # (at the end of an epoch the loop ends by itself and the epoch completes)
            else:  # the epoch's batches ran out (not stopped by max_iters)
                self.epoch += 1
                self.next_batch = 0
                self._call("after_epoch")
        self._call("after_train")

    def run_step(self, images: list[torch.Tensor], targets: list[dict]) -> None:
        images, targets_dev = move_to_device(images, targets, self.device, non_blocking=True)
        # A skipped step must leave no trace: a NaN batch would otherwise poison BatchNorm's running stats.
        saved_buffers = [b.detach().clone() for b in self._state_buffers]
        with self.autocast():
            loss_dict = self.model(images, targets_dev)
        if not isinstance(loss_dict, Mapping) or not loss_dict:
            raise TypeError(f"the model's training forward must return a non-empty dict of losses, got {type(loss_dict).__name__}")
        names = list(loss_dict)
        terms = [loss_dict[k].float() for k in names]
        total = torch.stack(terms).sum()
        values = torch.stack([total.detach()] + [t.detach() for t in terms]).tolist()
        finite = all(math.isfinite(v) for v in values)
        info = StepInfo(losses=dict(zip(names, values[1:])), loss=values[0],
                        lr=self.optimizer.param_groups[0]["lr"], num_images=len(images) * get_world_size())
        if any_across_ranks(not finite):
            with torch.no_grad():
                for buffer, saved in zip(self._state_buffers, saved_buffers):
                    buffer.copy_(saved)
            self._handle_nonfinite(targets, info.losses)
            info.skipped = True
        else:
            self.consecutive_skips = 0
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            if self.clip_grad_norm is not None:
                self.scaler.unscale_(self.optimizer)
                info.grad_norm = float(torch.nn.utils.clip_grad_norm_(self._params, self.clip_grad_norm))
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.step_info = info

    def _handle_nonfinite(self, targets: list[dict], losses: dict[str, float]) -> None:
        local = {
            "rank": get_rank(),
            "image_ids": [_image_id(t) for t in targets],
            "terms": {k: v for k, v in losses.items() if not math.isfinite(v)},
        }
        reports = [r for r in all_gather_object(local) if r["terms"]]
        where = "; ".join(
            (f"rank {r['rank']}: " if get_world_size() > 1 else "")
            + ", ".join(f"{k}={v}" for k, v in r["terms"].items())
            + f" on image ids {r['image_ids']}"
            for r in reports
        )
        message = f"non-finite loss at iteration {self.iteration} (epoch {self.epoch}): {where}"
        self.optimizer.zero_grad(set_to_none=True)
        if self.nonfinite_loss == "stop":
            raise NonFiniteLossError(
                message + ". Stopping (train.nonfinite_loss='stop'); check those images and their boxes "
                "(tools/check_dataset.py), lower the learning rate or enable train.clip_grad_norm"
            )
        self.consecutive_skips += 1
        self.total_skips += 1
        if self.consecutive_skips > self.max_nonfinite_skips:
            raise NonFiniteLossError(
                message + f". {self.consecutive_skips} steps in a row were non-finite "
                f"(train.max_nonfinite_skips={self.max_nonfinite_skips}); the run has diverged: lower the "
                "learning rate, lengthen the warm-up or enable train.clip_grad_norm"
            )
        self.logger.warning(message + f"; step skipped ({self.consecutive_skips} in a row)")

    # ------------------------------------------------------------ checkpoint
    def checkpoint_payload(self, rng_per_rank: list[dict] | None = None) -> dict:
        """The checkpoint of the current state (see :mod:`detect.engine.checkpoint`).

        ``rng_per_rank`` comes from :meth:`gather_rng` (a collective call on every rank).
        """
        rng_per_rank = rng_per_rank or [get_rng_state()]
        return {
            "format_version": FORMAT_VERSION,
            "library_version": detect.__version__,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": self.epoch,
            "iteration": self.iteration,
            "rng": rng_per_rank[0],
            "rng_per_rank": rng_per_rank,
            "data_order": {
                "seed": self.seed,
                "next_batch": self.next_batch,
                "num_batches": self.num_batches,
                "world_size": get_world_size(),
            },
            "config": self.config,
            "class_names": self.class_names,
            "color_order": "RGB",
            "box_format": "xyxy",
            "metrics": dict(self.metrics),
            "metrics_iteration": self.metrics_iteration,
            "best": dict(self.best) if self.best else None,
        }

    @staticmethod
    def gather_rng() -> list[dict]:
        return all_gather_object(get_rng_state())

    def load_state(self, payload: Mapping[str, Any]) -> list[str]:
        """Restore a checkpoint for resuming; returns a description of what was restored."""
        restored = []
        self.module.load_state_dict(payload["model"])
        restored.append("model")
        for name, obj in (("optimizer", self.optimizer), ("scheduler", self.scheduler), ("ema", self.ema)):
            state = payload.get(name)
            if obj is not None and state is not None:
                try:
                    obj.load_state_dict(state)
                except (ValueError, KeyError, RuntimeError) as err:
                    raise ValueError(
                        f"cannot restore the {name} state from the checkpoint ({err}); the run's config "
                        "differs from the checkpoint's: resume with the same config, or start from its "
                        "weights with --weights"
                    ) from err
                restored.append(name)
            elif obj is not None:
                restored.append(f"{name}: not in the checkpoint, starts fresh")
        if self.scaler.is_enabled() and payload.get("scaler") is not None:
            self.scaler.load_state_dict(payload["scaler"])
            restored.append("AMP scaler")
        self.epoch = int(payload.get("epoch", 0))
        self.iteration = int(payload.get("iteration", 0))
        order = payload.get("data_order") or {}
        self.next_batch = int(order.get("next_batch", 0))
        if self.next_batch and (order.get("num_batches") != self.num_batches or order.get("seed") != self.seed
                                or order.get("world_size") != get_world_size()):
            self.logger.warning(
                f"the checkpoint's data order (seed {order.get('seed')}, {order.get('num_batches')} batches per epoch, "
                f"{order.get('world_size')} processes) differs from this run's (seed {self.seed}, {self.num_batches} "
                f"batches, {get_world_size()} processes); continuing epoch {self.epoch} at batch {self.next_batch} "
                "of the new order"
            )
        restored.append(
            f"epoch {self.epoch}, iteration {self.iteration}"
            + (f", next batch {self.next_batch} of epoch {self.epoch}" if self.next_batch else "")
        )
        self.metrics = dict(payload.get("metrics") or {})
        # Which iteration validated them: a resumed run that is already done then neither
        # validates again nor logs the same validation twice.
        iteration = payload.get("metrics_iteration")
        self.metrics_iteration = None if iteration is None else int(iteration)
        self.best = dict(payload["best"]) if payload.get("best") else None
        if self.best:
            restored.append(f"best {self.best['metric']}={self.best['value']:.4f} (iteration {self.best['iteration']})")
        states = payload.get("rng_per_rank") or [payload.get("rng")]
        if states and states[0] is not None:
            if len(states) == get_world_size():
                set_rng_state(states[get_rank()])
                restored.append("RNG states")
            else:
                set_rng_state(states[0])
                restored.append(f"RNG states of rank 0 ({len(states)} processes saved, {get_world_size()} now)")
        return restored


def _image_id(target: Mapping) -> Any:
    image_id = target.get("image_id") if isinstance(target, Mapping) else None
    if isinstance(image_id, torch.Tensor):
        return image_id.tolist()
    return image_id
