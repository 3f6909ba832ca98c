"""Hooks of the training loop (see :class:`detect.engine.trainer.Trainer`).

Order, as :func:`detect.engine.launch.train` registers them: LR schedule, EMA, evaluation,
checkpoints, logging, plots. Within ``after_epoch`` the evaluation therefore runs before
the checkpoint (which may become the best one) and the logger reports both.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

from detect.engine.checkpoint import BEST_NAME, LAST_NAME, save_checkpoint
from detect.engine.distributed import all_reduce_mean, is_main_process, on_main_process
from detect.engine.loggers import MetricsFile, ProgressBar, TensorBoardWriter, plot_metrics
from detect.engine.trainer import HookBase
from detect.evaluation.base import is_per_class_metric


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
        start = time.perf_counter()
        trainer.metrics = self.evaluate()
        trainer.metrics_iteration = trainer.iteration
        trainer.logger.info(
            f"validation after epoch {trainer.epoch} (iteration {trainer.iteration}, "
            f"{time.perf_counter() - start:.1f} s): {headline(trainer.metrics)}"
        )

    def after_epoch(self):
        if self.interval > 0 and (self.trainer.epoch % self.interval == 0 or self.trainer.epoch == self.trainer.epochs):
            self._run()

    def after_train(self):
        if self.interval > 0 and self.trainer.metrics_iteration != self.trainer.iteration:
            self._run()


def headline(metrics: dict) -> str:
    """The summary metrics (no per-class entries) as ``key=value`` text."""
    keys = [k for k in metrics if not is_per_class_metric(k)]
    return ", ".join(f"{k}={metrics[k]:.4f}" for k in keys) or "(no metrics)"


class CheckpointHook(HookBase):
    """Writes ``last.pth`` at the end of every epoch (and every ``interval_iters``
    iterations when > 0), and ``best.pth`` whenever ``best_metric`` improves.

    ``best_mode``: ``"max"``, ``"min"`` or ``"auto"`` (min when the name contains
    "loss"). Every rank calls the hook (gathering RNG states is collective); rank 0
    writes while the others wait, and a failed write stops every rank
    (:func:`detect.engine.distributed.on_main_process`).
    """

    def __init__(self, output_dir, interval_iters: int = 0, best_metric: str | None = None, best_mode: str = "auto"):
        self.output_dir = Path(output_dir)
        self.interval_iters = int(interval_iters or 0)
        self.best_metric = best_metric
        if best_mode == "auto":
            best_mode = "min" if best_metric and "loss" in best_metric else "max"
        if best_mode not in ("max", "min"):
            raise ValueError(f"eval.best_mode={best_mode!r}: expected max, min or auto")
        self.best_mode = best_mode
        self.saved_iteration: int | None = None
        self.last_path = self.output_dir / LAST_NAME
        self.best_path = self.output_dir / BEST_NAME

    def _save(self, best: bool = False):
        trainer = self.trainer
        rng = trainer.gather_rng()

        def write():
            payload = trainer.checkpoint_payload(rng)
            save_checkpoint(self.last_path, payload)
            if best:
                save_checkpoint(self.best_path, payload)
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


class LoggingHook(HookBase):
    """Progress bar, ``metrics.jsonl`` and TensorBoard.

    Training records average the last ``log_interval`` steps' losses over steps and ranks
    (skipped steps left out); ``images_per_s`` counts the images of every rank per second
    of wall time spent loading data and stepping (validation time excluded).
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
        self.bar = ProgressBar(trainer.total_iters, initial=trainer.iteration, enabled=self.progress_enabled)
        self.tb = TensorBoardWriter(self.output_dir / "tensorboard", enabled=self.tensorboard_enabled)
        self._logged_val_iteration = trainer.metrics_iteration
        self._last = time.perf_counter()

    def after_step(self):
        trainer = self.trainer
        info = trainer.step_info
        now = time.perf_counter()
        wall = now - self._last  # data loading + step (+ any mid-epoch checkpoint), not validation
        self._last = now
        self._window.append((info, wall))
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
        self._last = time.perf_counter()  # the next step's time starts after validation and checkpoints

    def after_train(self):
        self._write_train()
        self._write_val()
        self.close()

    def close(self):
        if hasattr(self, "bar"):
            self.bar.close()
            self.tb.close()


class PlotHook(HookBase):
    """PNG plots of the losses and validation metrics at the end (rank 0)."""

    def __init__(self, output_dir):
        self.output_dir = Path(output_dir)

    def after_train(self):
        if is_main_process():
            written = plot_metrics(self.output_dir / "metrics.jsonl", self.output_dir / "plots")
            if written:
                self.trainer.logger.info("plots: " + ", ".join(str(p) for p in written))
