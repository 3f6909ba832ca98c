"""The training loop: a small step plus hooks, in the manner of detectron2's train_loop.py.

:class:`Trainer` owns the loop state (``epoch`` = completed epochs, ``iteration`` = steps
taken, ``next_batch`` = position in the current epoch) and runs one step per batch:

1. move the batch to the device; forward under autocast when AMP is on;
2. sum the loss terms; check them all for NaN/inf at once (one host sync per step);
3. when every rank's losses are finite: zero the gradients, backward (through the
   GradScaler for fp16), compute the global gradient norm (one foreach norm; clipping
   reuses it), clip it if asked, step the optimizer; otherwise the non-finite-loss guard
   names the image ids and the loss terms and either skips the step on every rank
   (buffers such as BatchNorm statistics are put back as they were before the forward)
   (``nonfinite_loss="skip"``, at most ``max_nonfinite_skips`` in a row) or raises
   :class:`NonFiniteLossError` (``"stop"``);
4. a finite loss with a NaN/inf gradient norm gets the same guard (the step is not taken,
   so the weights never become NaN), naming the iteration and every image id of the
   batch. With fp16 the GradScaler owns that case: inf gradients are how it finds its
   scale, and it skips those optimizer steps itself.

Stopping early: a hook calls :meth:`Trainer.request_stop` (early stopping, the time
budget); the loop ends after the current step, ``after_train`` runs and the last
checkpoint records the exact position, so the run can be resumed.

Ctrl+C: while :meth:`Trainer.train` runs in the main thread, SIGINT only sets a flag that
the loop reads after the step in progress, so the state is consistent; a
``KeyboardInterrupt`` raised before a step is taken (by a hook, the data loader, a second
Ctrl+C) is caught too. Either way the hooks' ``on_interrupt`` run (the checkpoint hook
writes last.pth at the current position, the logger flushes) and :class:`TrainingInterrupted`
(a KeyboardInterrupt) is raised.

Everything else is a hook (:mod:`detect.engine.hooks`): the LR schedule, EMA,
validation, checkpoints, logging, plots. A hook implements any of ``before_train``,
``before_epoch``, ``before_step``, ``after_step``, ``after_epoch``, ``after_train``, ``on_interrupt`` and
sees the trainer as ``self.trainer``. ``after_train`` runs when the loop finishes (all
epochs, ``max_iters`` or a stop request), not after an exception.

Batches come from :func:`detect.engine.data_order.iterate_epoch`, so an epoch's order
depends on ``(seed, epoch)`` only and a resumed run continues at the exact next batch.
``num_batches`` is ``len(train_loader)``; the loader must yield exactly that many batches
per epoch (torch's and detect.data's batch samplers do).
"""
from __future__ import annotations

import math
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

import detect
from detect.engine.checkpoint import FORMAT_VERSION, CheckpointError
from detect.engine.data_order import iterate_epoch
from detect.engine.device import autocast
from detect.distributed import (
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
    """A loss or gradient was NaN or inf and the configuration says to stop (or too many steps were skipped)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl+C stopped training; ``str()`` is the one line to print (where to resume)."""

    def __init__(self, message: str, iteration: int):
        super().__init__(message)
        self.iteration = iteration


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
    def on_interrupt(self): ...


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
        self.early_stop: dict[str, Any] | None = None  # EarlyStopHook's {"reference", "evaluations"}
        self.stop_reason: str | None = None
        self.final_validation = True
        self._interrupt_requested = False
        # RNG states where the loop last stood between steps: Ctrl+C may come after the next
        # batch was drawn (augmentation uses the global RNG), so its checkpoint takes these.
        self.boundary_rng: dict | None = None
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
        return (self.epoch >= self.epochs or (self.max_iters is not None and self.iteration >= self.max_iters)
                or self.stop_reason is not None)

    def request_stop(self, reason: str, validate: bool = True) -> None:
        """End the loop after the current step (hooks: early stopping, time budget); logged once.
        ``validate=False``: no final validation either (the time budget is spent)."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.final_validation = validate
            self.logger.info(reason)

    def autocast(self):
        """The forward passes' autocast context (a no-op without AMP)."""
        return autocast(self.amp, self.device)

    # ------------------------------------------------------------------ loop
    def train(self) -> None:
        """Run to the end; raises :class:`TrainingInterrupted` after Ctrl+C (see the module docstring)."""
        if self.num_batches == 0:
            raise RuntimeError("the training loader yields no batches; is the training set empty?")
        self.model.train()
        with self._deferred_sigint():
            try:
                self._call("before_train")
                self._loop()
            except KeyboardInterrupt:
                if self._interrupt_requested:
                    raise  # a second Ctrl+C, mid-step: abort without a checkpoint of a half-taken step
                self._interrupted()
            if self._interrupt_requested:
                self._interrupted()
        self._call("after_train")

    def _loop(self) -> None:
        self.boundary_rng = get_rng_state()
        while not self._done():
            batches = iterate_epoch(self.train_loader, self.epoch, self.seed, self.next_batch)
            self._call("before_epoch")
            for images, targets in batches:
                self._call("before_step")
                self.run_step(images, targets)
                self.iteration += 1
                self.next_batch += 1
                self._call("after_step")
                self.boundary_rng = get_rng_state()
                if self._interrupt_requested:
                    return
                if self.stop_reason is not None and self.next_batch < self.num_batches:
                    return  # mid-epoch: last.pth records the position
                if self.max_iters is not None and self.iteration >= self.max_iters and self.next_batch < self.num_batches:
                    break  # (at the end of an epoch the loop ends by itself and the epoch completes)
            else:  # the epoch's batches ran out (not stopped by max_iters)
                self.epoch += 1
                self.next_batch = 0
                self._call("after_epoch")
                self.boundary_rng = get_rng_state()
                if self._interrupt_requested:
                    return

    def _interrupted(self) -> None:
        """Ctrl+C: the hooks save the current position; then :class:`TrainingInterrupted`."""
        self._interrupt_requested = False
        self._call("on_interrupt")
        raise TrainingInterrupted(f"interrupted at iteration {self.iteration}; resume with --resume auto",
                                  self.iteration)

    def _deferred_sigint(self):
        """While training in the main thread, the first SIGINT sets a flag read between steps
        (so the checkpoint is exact); a second one raises KeyboardInterrupt at once."""
        trainer = self

        class _Deferred:
            def __enter__(self):
                self.previous = None
                if threading.current_thread() is threading.main_thread() \
                        and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                    self.previous = signal.signal(signal.SIGINT, self._handle)
                return self

            def _handle(self, signum, frame):
                if trainer._interrupt_requested:
                    raise KeyboardInterrupt
                trainer._interrupt_requested = True
                trainer.logger.warning("Ctrl+C: stopping after this step to save a checkpoint (again to abort)")

            def __exit__(self, *exc):
                if self.previous is not None:
                    signal.signal(signal.SIGINT, self.previous)
                return False

        return _Deferred()

    def run_step(self, images: list[torch.Tensor], targets: list[dict]) -> None:
        # A skipped step must leave no trace: a NaN batch would otherwise poison BatchNorm's
        # running stats; nor must a step Ctrl+C cut short (before its optimizer step).
        saved_buffers = [b.detach().clone() for b in self._state_buffers]
        try:
            self._step(images, targets, saved_buffers)
        except KeyboardInterrupt:
            self._restore_buffers(saved_buffers)
            raise

    def _step(self, images: list[torch.Tensor], targets: list[dict], saved_buffers: list[torch.Tensor]) -> None:
        images, targets_dev = move_to_device(images, targets, self.device, non_blocking=True)
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
            self._restore_buffers(saved_buffers)
            self._handle_nonfinite(targets, info.losses)
            info.skipped = True
            self.step_info = info
            return
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        grads = [p.grad for p in self._params if p.grad is not None]
        fp16 = self.scaler.is_enabled()
        if grads and (self.clip_grad_norm is not None or not fp16):
            if fp16:
                self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.get_total_norm(grads, 2.0)
            info.grad_norm = float(norm)  # the step's one extra host sync
            # with fp16 an inf norm is the scaler's business (it skips that step and lowers its scale)
            if not fp16 and any_across_ranks(not math.isfinite(info.grad_norm)):
                self._restore_buffers(saved_buffers)
                self._handle_nonfinite(targets, info.losses, gradient=True)
                info.skipped = True
                self.step_info = info
                return
            if self.clip_grad_norm is not None:
                torch.nn.utils.clip_grads_with_norm_(self._params, self.clip_grad_norm, norm)
        self.consecutive_skips = 0
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step_info = info

    def _restore_buffers(self, saved_buffers: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for buffer, saved in zip(self._state_buffers, saved_buffers):
                buffer.copy_(saved)

    def _handle_nonfinite(self, targets: list[dict], losses: dict[str, float], gradient: bool = False) -> None:
        """Skip or stop (``nonfinite_loss``) after a NaN/inf loss, or with ``gradient`` a finite
        loss whose gradient norm is NaN/inf (then every rank's image ids are named: the
        gradients are averaged, so no single rank is to blame)."""
        local = {
            "rank": get_rank(),
            "image_ids": [_image_id(t) for t in targets],
            "terms": {k: v for k, v in losses.items() if not math.isfinite(v)},
        }
        reports = [r for r in all_gather_object(local) if r["terms"] or gradient]
        rank = (lambda r: f"rank {r['rank']}: ") if get_world_size() > 1 else (lambda r: "")
        if gradient:
            where = "; ".join(f"{rank(r)}image ids {r['image_ids']}" for r in reports)
            message = (f"non-finite gradient at iteration {self.iteration} (epoch {self.epoch}) with a finite loss "
                       f"({', '.join(f'{k}={v:.4g}' for k, v in losses.items())}) on {where}")
        else:
            where = "; ".join(
                rank(r) + ", ".join(f"{k}={v}" for k, v in r["terms"].items()) + f" on image ids {r['image_ids']}"
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
            "epochs": self.epochs,  # the run's plan, after a time budget fitted it
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
            "early_stop": dict(self.early_stop) if self.early_stop else None,
        }

    @staticmethod
    def gather_rng(state: dict | None = None) -> list[dict]:
        """Every rank's RNG states (``state``, default the current ones); a collective call."""
        return all_gather_object(get_rng_state() if state is None else state)

    def load_state(self, payload: Mapping[str, Any]) -> list[str]:
        """Restore a checkpoint for resuming; returns a description of what was restored."""
        restored = []
        try:
            self.module.load_state_dict(payload["model"])
        except RuntimeError as err:
            raise CheckpointError(
                f"the checkpoint's weights do not fit this run's model ({_first_line(err)}); resume with the "
                "config the run was started with, or start a new run from those weights with --weights CKPT "
                "(which re-initialises the class-specific layers for another class count)"
            ) from err
        restored.append("model")
        for name, obj in (("optimizer", self.optimizer), ("scheduler", self.scheduler), ("ema", self.ema)):
            state = payload.get(name)
            if obj is not None and state is not None:
                try:
                    obj.load_state_dict(state)
                except (ValueError, KeyError, RuntimeError) as err:
                    raise CheckpointError(
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
        self.early_stop = dict(payload["early_stop"]) if payload.get("early_stop") else None
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


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _image_id(target: Mapping) -> Any:
    image_id = target.get("image_id") if isinstance(target, Mapping) else None
    if isinstance(image_id, torch.Tensor):
        return image_id.tolist()
    return image_id
