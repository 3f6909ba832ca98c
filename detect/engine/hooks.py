"""Hooks of the training loop (see :class:`detect.engine.trainer.Trainer`).

Order, as :func:`detect.engine.launch.train` registers them: LR schedule, EMA, evaluation,
early stopping, checkpoints, logging, plots, time budget. Within ``after_epoch`` the
evaluation therefore runs before the checkpoint (which may become the best one) and the
logger reports both; the time budget comes last so that it measures what the others cost.

Clocks: the hooks read :func:`clock` (``time.perf_counter``), which tests replace to get
deterministic timings.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

from detect.engine.checkpoint import BEST_NAME, LAST_NAME, NonFiniteWeightsError, deployable_payload, save_checkpoint
from detect.distributed import all_reduce_mean, any_across_ranks, is_main_process, on_main_process
from detect.engine.loggers import MetricsFile, ProgressBar, TensorBoardWriter, plot_metrics
from detect.engine.trainer import HookBase
from detect.evaluation.base import is_per_class_metric


def clock() -> float:
    """Seconds of a monotonic clock; the one time source of the hooks (tests replace it)."""
    return time.perf_counter()


class LRSchedulerHook(HookBase):
    """Steps the per-iteration scheduler after every iteration, skipped non-finite steps
    included, so that the LR follows ``trainer.iteration`` (see :mod:`detect.engine.optim`)."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def after_step(self):
        self.scheduler.step()


class EMAHook(HookBase):
    """Updates the EMA after every optimizer step that was taken."""

    def __init__(self, ema):
        self.ema = ema

    def after_step(self):
        if not self.trainer.step_info.skipped:
            self.ema.update(self.trainer.module)


class EvalHook(HookBase):
    """Validates every ``interval`` epochs and at the end of training.

    ``evaluate()`` returns a metrics dict (the same on every rank); it must evaluate the
    EMA model when EMA is on. The result lands in ``trainer.metrics``.
    """

    def __init__(self, interval: int, evaluate: Callable[[], dict]):
        self.interval = int(interval)
        self.evaluate = evaluate

    def _run(self):
        trainer = self.trainer
        start = clock()
        trainer.metrics = self.evaluate()
        trainer.metrics_iteration = trainer.iteration
        trainer.logger.info(
            f"validation after epoch {trainer.epoch} (iteration {trainer.iteration}, "
            f"{clock() - start:.1f} s): {headline(trainer.metrics)}"
        )

    def after_epoch(self):
        if self.interval > 0 and (self.trainer.epoch % self.interval == 0 or self.trainer.epoch == self.trainer.epochs):
            self._run()

    def after_train(self):
        trainer = self.trainer
        if self.interval > 0 and trainer.metrics_iteration != trainer.iteration and trainer.final_validation:
            self._run()


def headline(metrics: dict) -> str:
    """The summary metrics (no per-class entries) as ``key=value`` text."""
    keys = [k for k in metrics if not is_per_class_metric(k)]
    return ", ".join(f"{k}={metrics[k]:.4f}" for k in keys) or "(no metrics)"


def resolve_best_mode(metric: str | None, mode: str) -> str:
    """``"max"`` or ``"min"``; ``"auto"`` is min when the metric's name contains "loss"."""
    if mode == "auto":
        mode = "min" if metric and "loss" in metric else "max"
    if mode not in ("max", "min"):
        raise ValueError(f"eval.best_mode={mode!r}: expected max, min or auto")
    return mode


class EarlyStopHook(HookBase):
    """Stops training when ``metric`` has not improved by more than ``min_delta`` for
    ``patience`` validations in a row (Keras' rule: the reference moves only on such an
    improvement). Its count lives in ``trainer.early_stop`` and so in the checkpoints."""

    def __init__(self, metric: str, patience: int, min_delta: float = 0.0, mode: str = "auto"):
        self.metric = metric
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.mode = resolve_best_mode(metric, mode)

    def before_train(self):
        state = self.trainer.early_stop
        if state and state["evaluations"] >= self.patience:  # a resumed run that had stopped: it stays done
            self.trainer.request_stop(
                f"early stopping: the run stopped at iteration {self.trainer.iteration} after {state['evaluations']} "
                f"validations without improvement (train.early_stop_patience={self.patience}); nothing to train"
            )

    def after_epoch(self):
        trainer = self.trainer
        if trainer.metrics_iteration != trainer.iteration or self.metric not in trainer.metrics:
            return  # no validation this epoch (the checkpoint hook reports a missing metric)
        value = trainer.metrics[self.metric]
        state = trainer.early_stop or {"reference": None, "evaluations": 0, "iteration": None}
        reference = state["reference"]
        sign = 1.0 if self.mode == "max" else -1.0
        if math.isfinite(value) and (reference is None or sign * (value - reference) > self.min_delta):
            state = {"reference": float(value), "evaluations": 0, "iteration": trainer.iteration}
        else:
            state = {**state, "evaluations": state["evaluations"] + 1}
        trainer.early_stop = state
        if state["evaluations"] >= self.patience:
            trainer.request_stop(
                f"early stopping at epoch {trainer.epoch} (iteration {trainer.iteration}): {self.metric} has not "
                f"improved by more than {self.min_delta:g} for {state['evaluations']} validations "
                f"(train.early_stop_patience={self.patience}); best {self.metric}={reference:.4f} at iteration "
                f"{state['iteration']}"
            )


class CheckpointHook(HookBase):
    """Writes ``last.pth`` at the end of every epoch (and every ``interval_iters``
    iterations when > 0, at the end of training and on Ctrl+C), and the deployable
    ``best.pth`` (:func:`detect.engine.checkpoint.deployable_payload`: no optimizer state)
    whenever ``best_metric`` improves.

    ``best_mode``: ``"max"``, ``"min"`` or ``"auto"`` (min when the name contains
    "loss"). Every rank calls the hook (gathering RNG states is collective); rank 0
    writes while the others wait, and a failed write stops every rank
    (:func:`detect.distributed.on_main_process`). Non-finite weights are never written
    (:class:`~detect.engine.checkpoint.NonFiniteWeightsError`; the earlier file stays).
    """

    def __init__(self, output_dir, interval_iters: int = 0, best_metric: str | None = None, best_mode: str = "auto"):
        self.output_dir = Path(output_dir)
        self.interval_iters = int(interval_iters or 0)
        self.best_metric = best_metric
        self.best_mode = resolve_best_mode(best_metric, best_mode)
        self.saved_iteration: int | None = None
        self.last_path = self.output_dir / LAST_NAME
        self.best_path = self.output_dir / BEST_NAME

    def _save(self, best: bool = False, rng_state: dict | None = None):
        trainer = self.trainer
        rng = trainer.gather_rng(rng_state)

        def write():
            payload = trainer.checkpoint_payload(rng)
            save_checkpoint(self.last_path, payload)
            if best:
                save_checkpoint(self.best_path, deployable_payload(payload))
                trainer.logger.info(
                    f"new best {self.best_metric}={trainer.best['value']:.4f}: saved {self.best_path}"
                )

        on_main_process(write, f"to write the checkpoint {self.last_path}" + (f" and {self.best_path}" if best else ""))
        self.saved_iteration = trainer.iteration

    def _improved(self) -> bool:
        trainer = self.trainer
        if not self.best_metric or trainer.metrics_iteration != trainer.iteration:
            return False
        value = trainer.metrics.get(self.best_metric)
        if value is None:
            available = ", ".join(sorted(k for k in trainer.metrics if not is_per_class_metric(k))) or "none"
            raise KeyError(f"eval.best_metric={self.best_metric!r} is not among the validation metrics ({available})")
        if not math.isfinite(value):
            return False
        previous = trainer.best["value"] if trainer.best and trainer.best.get("metric") == self.best_metric else None
        better = previous is None or (value > previous if self.best_mode == "max" else value < previous)
        if better:
            trainer.best = {"metric": self.best_metric, "value": float(value), "epoch": trainer.epoch,
                            "iteration": trainer.iteration}
        return better

    def after_step(self):
        trainer = self.trainer
        mid_epoch = trainer.next_batch < trainer.num_batches
        if self.interval_iters and trainer.iteration % self.interval_iters == 0 and mid_epoch:
            self._save()

    def after_epoch(self):
        self._save(best=self._improved())

    def after_train(self):
        improved = self._improved()
        if improved or self.saved_iteration != self.trainer.iteration:
            self._save(best=improved)

    def on_interrupt(self):
        """Ctrl+C: last.pth at the current position (mid-epoch included), unless it holds it already."""
        if self.saved_iteration == self.trainer.iteration:
            return
        try:
            self._save(rng_state=self.trainer.boundary_rng)
        except NonFiniteWeightsError as err:  # keep the earlier last.pth; the interruption still ends the run
            self.trainer.logger.error(str(err))


class LoggingHook(HookBase):
    """Progress bar, ``metrics.jsonl`` and TensorBoard.

    Training records average the last ``log_interval`` steps' losses over steps and ranks
    (skipped steps left out); ``images_per_s`` counts the images of every rank per second
    of wall time spent loading data and stepping (validation time excluded). Without a
    progress bar (``progress_bar=False`` or no terminal) each record is also one log line:
    iteration, epoch, losses, lr, it/s and ETA.

    At the start, ``metrics.jsonl`` keeps only the records up to the iteration the run
    starts from (rewritten atomically): after a resume the steps since the checkpoint are
    trained again and would otherwise appear twice.
    """

    def __init__(self, output_dir, log_interval: int = 20, progress_bar: bool = True, tensorboard: bool = True):
        self.output_dir = Path(output_dir)
        self.log_interval = max(int(log_interval), 1)
        self.progress_enabled = progress_bar
        self.tensorboard_enabled = tensorboard
        self.metrics_file = MetricsFile(self.output_dir / "metrics.jsonl")
        self._window: list = []
        self._logged_val_iteration = None

    def before_train(self):
        trainer = self.trainer
        dropped = self.metrics_file.truncate_after(trainer.iteration)
        if dropped:
            trainer.logger.info(
                f"{self.metrics_file.path}: removed {dropped} record(s) after iteration {trainer.iteration}, "
                "written after the checkpoint this run starts from (those steps run again)"
            )
        self.bar = ProgressBar(trainer.total_iters, initial=trainer.iteration, enabled=self.progress_enabled)
        self.tb = TensorBoardWriter(self.output_dir / "tensorboard", enabled=self.tensorboard_enabled)
        self._logged_val_iteration = trainer.metrics_iteration
        self._last = clock()

    def after_step(self):
        trainer = self.trainer
        info = trainer.step_info
        now = clock()
        wall = now - self._last  # data loading + step (+ any mid-epoch checkpoint), not validation
        self._last = now
        self._window.append((info, wall))
        self.bar.set_total(trainer.total_iters)  # the time budget may shorten the run
        self.bar.update(1, epoch=trainer.epoch, loss=f"{info.loss:.4f}", lr=f"{info.lr:.2e}",
                        img_s=f"{info.num_images / max(wall, 1e-9):.1f}")
        if trainer.iteration % self.log_interval == 0 or trainer.iteration == trainer.total_iters:
            self._write_train()

    def _write_train(self):
        trainer = self.trainer
        window, self._window = self._window, []
        if not window:
            return
        taken = [s for s, _ in window if not s.skipped]
        values = {}
        if taken:
            values["loss"] = sum(s.loss for s in taken) / len(taken)
            for key in taken[0].losses:
                values[key] = sum(s.losses[key] for s in taken) / len(taken)
        values = all_reduce_mean(values) if values else values
        seconds = sum(wall for _, wall in window)
        record = {"type": "train", "iteration": trainer.iteration, "epoch": trainer.epoch, "lr": window[-1][0].lr,
                  **values, "images_per_s": sum(s.num_images for s, _ in window) / max(seconds, 1e-9),
                  "seconds_per_iter": seconds / len(window), "skipped_steps": len(window) - len(taken)}
        self.metrics_file.write(record)
        self.tb.write("train", record, trainer.iteration)
        if not self.bar.active:
            self._log_line(record, len(window), seconds)

    def _log_line(self, record: dict, steps: int, seconds: float) -> None:
        trainer = self.trainer
        its = steps / max(seconds, 1e-9)
        eta = max(trainer.total_iters - trainer.iteration, 0) / its
        losses = ", ".join(f"{k}={v:.4f}" for k, v in record.items() if k == "loss" or k.startswith("loss_")) \
            or "all steps skipped"
        trainer.logger.info(
            f"iteration {trainer.iteration}/{trainer.total_iters} epoch {trainer.epoch}: {losses}, "
            f"lr={record['lr']:.3e}, {its:.2f} it/s, ETA {_duration(eta)}"
        )

    def _write_val(self):
        trainer = self.trainer
        if trainer.metrics_iteration is None or trainer.metrics_iteration == self._logged_val_iteration:
            return
        self._logged_val_iteration = trainer.metrics_iteration
        record = {"type": "val", "iteration": trainer.iteration, "epoch": trainer.epoch, **trainer.metrics}
        self.metrics_file.write(record)
        self.tb.write("val", trainer.metrics, trainer.iteration)

    def after_epoch(self):
        self._write_val()
        self._last = clock()  # the next step's time starts after validation and checkpoints

    def after_train(self):
        self._write_train()
        self._write_val()
        self.close()

    def on_interrupt(self):
        if hasattr(self, "bar"):  # (Ctrl+C may come before before_train ran)
            self._write_train()
            self._write_val()
        self.close()

    def close(self):
        if hasattr(self, "bar"):
            self.bar.close()
            self.tb.close()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class TimeBudgetHook(HookBase):
    """Fits the run to a wall-clock budget, then holds it to it.

    - Speed: seconds per iteration measured over ``measure_steps`` steps after the first
      ``warmup_steps`` (cuDNN autotuning, allocator and loader start-up are slower), and the
      time the end of the first epoch costs after its last step (validation, checkpoints).
    - Fit: after the measurement, and again with the epoch-end cost at the end of the first
      epoch, the number of epochs becomes the largest that ends within the budget (never
      more than the config's, at least the one in progress) and ``rebuild_schedule(epochs)``
      stretches the LR schedule over the new total, so it still completes its decay. One log
      line says what it chose and why.
    - Hard stop: when the budget is spent anyway, the run stops after the step in progress,
      without a final validation; the last checkpoint is written where it stopped, so
      ``--resume auto`` continues it.

    Must be the last hook, so that its epoch-end timing includes the others' work.
    """

    def __init__(self, budget_s: float, rebuild_schedule: Callable[[int], None] | None = None,
                 warmup_steps: int = 3, measure_steps: int = 20):
        self.budget = float(budget_s)
        self.rebuild_schedule = rebuild_schedule
        self.warmup_steps = int(warmup_steps)
        self.measure_steps = int(measure_steps)

    def before_train(self):
        self.start = self.last_step = clock()
        self.config_epochs = self.trainer.epochs
        self.steps = 0
        self.measure_start: float | None = None
        self.seconds_per_iter: float | None = None
        self.fitted_epoch_end = False
        self.reported = False

    def _spent(self, now: float) -> bool:
        # one rank over budget stops them all, at the same step
        return any_across_ranks(now - self.start > self.budget)

    def after_step(self):
        trainer = self.trainer
        now = self.last_step = clock()
        self.steps += 1
        if self.steps == self.warmup_steps:
            self.measure_start = now
        elif self.measure_start is not None and self.steps == self.warmup_steps + self.measure_steps:
            self.seconds_per_iter = (now - self.measure_start) / self.measure_steps
            self._fit(now, epoch_end_cost=None)
        if self._spent(now):
            trainer.request_stop(
                f"time budget of {_duration(self.budget)} used up at iteration {trainer.iteration} "
                f"(epoch {trainer.epoch}, batch {trainer.next_batch} of {trainer.num_batches}): stopping here; "
                "last.pth holds this point, continue with --resume auto", validate=False)

    def after_epoch(self):
        trainer = self.trainer
        now = clock()
        if not self.fitted_epoch_end:
            self.fitted_epoch_end = True
            if self.seconds_per_iter is None:  # an epoch shorter than the measurement: use what there is
                measured = self.steps - self.warmup_steps
                self.seconds_per_iter = ((self.last_step - self.measure_start) / measured if measured > 0
                                         else (self.last_step - self.start) / max(self.steps, 1))
            self._fit(now, epoch_end_cost=now - self.last_step)
        if self._spent(now):
            trainer.request_stop(f"time budget of {_duration(self.budget)} used up after epoch {trainer.epoch}: "
                                 "stopping", validate=False)
        self.last_step = now

    def _fit(self, now: float, epoch_end_cost: float | None) -> None:
        trainer = self.trainer
        per_iter, extra = self.seconds_per_iter, epoch_end_cost or 0.0
        batches = trainer.num_batches
        epoch_cost = batches * per_iter + extra
        left = batches - trainer.next_batch if trainer.next_batch else 0  # steps left in the epoch in progress
        finish_current = left * per_iter + (extra if left else 0.0)
        remaining = self.budget - (now - self.start)
        current = trainer.epoch + (1 if left else 0)  # the epoch in progress is always finished
        more = max(int((remaining - finish_current) // epoch_cost), 0) if epoch_cost > 0 else self.config_epochs
        epochs = max(min(self.config_epochs, current + more), current, 1)
        estimate = (now - self.start) + finish_current + (epochs - current) * epoch_cost
        cost = f"{per_iter:.3g} s/iteration x {batches} iterations/epoch" + (
            f" + {extra:.3g} s of validation and checkpoints per epoch" if epoch_end_cost is not None
            else " (validation not measured yet)")
        if epochs == trainer.epochs:
            if not self.reported:  # one line unless the plan changes
                trainer.logger.info(f"time budget {_duration(self.budget)}: {cost}; the {epochs} epochs fit "
                                    f"(about {_duration(estimate)})")
            self.reported = True
            return
        self.reported = True
        trainer.logger.info(
            f"time budget {_duration(self.budget)}: {cost}; training {epochs} epochs instead of "
            f"{self.config_epochs} (about {_duration(estimate)}), the LR schedule fitted to {epochs * batches} iterations"
        )
        trainer.epochs = epochs
        if self.rebuild_schedule is not None:
            self.rebuild_schedule(epochs)


class PlotHook(HookBase):
    """PNG plots of the losses and validation metrics at the end (rank 0)."""

    def __init__(self, output_dir):
        self.output_dir = Path(output_dir)

    def after_train(self):
        if is_main_process():
            written = plot_metrics(self.output_dir / "metrics.jsonl", self.output_dir / "plots")
            if written:
                self.trainer.logger.info("plots: " + ", ".join(str(p) for p in written))
