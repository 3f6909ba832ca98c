"""Where training reports go: console log, progress bar, metrics.jsonl, TensorBoard, plots.

All of them write on rank 0 only.

- ``get_logger(output_dir)``: the ``detect`` logger; messages go to the console (through
  ``tqdm.write`` so they do not break the progress bar) and to ``<output_dir>/log.txt``.
- :class:`ProgressBar`: tqdm over the run's iterations showing epoch, loss, lr and images/s
  (tqdm adds the ETA); only on a terminal (``active`` tells): in a log file or a pipe the
  logging hook writes a text line every ``log_interval`` iterations instead.
- :class:`MetricsFile`: one JSON object per line in ``<output_dir>/metrics.jsonl``:
  ``{"type": "train", "iteration", "epoch", "lr", "loss", "loss_<term>"..., "images_per_s", "time"}``
  every ``log_interval`` iterations and ``{"type": "val", "iteration", "epoch", <metric>: value...}``
  after each validation. NaN is written as ``NaN`` (what Python's json reads back).
  ``truncate_after(iteration)`` drops the records beyond an iteration (a resumed run).
- :class:`TensorBoardWriter`: the same scalars as real TensorBoard event files
  (``torch.utils.tensorboard.SummaryWriter``; ``<output_dir>/tensorboard/events.out.tfevents.*``),
  tagged ``train/<key>`` and ``val/<key>`` at the run's iteration; numbers only (ints, floats,
  numpy scalars, one-element tensors), booleans and text skipped. tensorboard is in the
  ``dev`` extra; where it is not installed one warning per process says so.
- :func:`plot_metrics`: ``<output_dir>/plots/losses.png`` (training losses) and ``metrics.png``
  (validation metrics and losses) against iterations, from metrics.jsonl.
"""
from __future__ import annotations

import json
import logging
import math
import numbers
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from detect.distributed import is_main_process
from detect.evaluation.base import is_per_class_metric
from detect.filesystem import atomic_write

LOGGER_NAME = "detect"


class _TqdmHandler(logging.StreamHandler):
    def emit(self, record):
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record))
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def get_logger(output_dir=None) -> logging.Logger:
    """The ``detect`` logger; on rank 0 it prints and (given ``output_dir``) appends to log.txt."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    logger.propagate = True
    if not is_main_process():
        # rank 0 reports for everyone (the engine gathers what other ranks need to say)
        logger.setLevel(logging.ERROR)
        return logger
    if not any(isinstance(h, _TqdmHandler) for h in logger.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    if output_dir is not None:
        log_path = str(Path(output_dir) / "log.txt")
        for h in list(logger.handlers):
            if isinstance(h, logging.FileHandler) and h.baseFilename != str(Path(log_path).resolve()):
                logger.removeHandler(h)
                h.close()
        if not any(isinstance(h, logging.FileHandler) for h in logger.handlers):
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            file_handler = logging.FileHandler(log_path, encoding="utf-8")
            file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            logger.addHandler(file_handler)
    return logger


def close_logger() -> None:
    logger = logging.getLogger(LOGGER_NAME)
    for h in list(logger.handlers):
        if isinstance(h, logging.FileHandler):
            logger.removeHandler(h)
            h.close()


class ProgressBar:
    """tqdm on rank 0 when ``enabled`` and stderr is a terminal (a bar in a file is noise)."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True):
        self.bar = None
        if enabled and is_main_process() and _is_terminal(sys.stderr):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True, leave=True)

    @property
    def active(self) -> bool:
        return self.bar is not None

    def set_total(self, total: int) -> None:
        if self.bar is not None and self.bar.total != total:
            self.bar.total = total

    def update(self, n: int = 1, **postfix: Any) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MetricsFile:
    def __init__(self, path):
        self.path = Path(path)
        self.enabled = is_main_process()
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


    def truncate_after(self, iteration: int) -> int:
        """Keep the records with ``iteration <= iteration`` (and drop a line cut off by a
        kill); rewrites the file atomically when anything goes. Returns how many went."""
        if not self.enabled or not self.path.is_file():
            return 0
        lines = [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("iteration", 0) <= iteration:
                kept.append(line)
        if len(kept) == len(lines):
            return 0
        with atomic_write(self.path, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in kept))
        return len(lines) - len(kept)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def read_metrics(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


_warned_no_tensorboard = False


class TensorBoardWriter:
    """SummaryWriter when tensorboard is importable and ``enabled``; otherwise does nothing."""

    def __init__(self, log_dir, enabled: bool = True):
        self.writer = None
        if enabled and is_main_process():
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                global _warned_no_tensorboard
                if not _warned_no_tensorboard:
                    _warned_no_tensorboard = True
                    get_logger().warning(
                        "train.tensorboard=True but the tensorboard package is not installed: no TensorBoard "
                        "events are written (pip install tensorboard, or set train.tensorboard=False)"
                    )
                return
            self.writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, prefix: str, values: Mapping[str, Any], step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
                # validation metrics already say "val/loss": no second prefix ("val/val/loss")
                tag = key if key.startswith(f"{prefix}/") else f"{prefix}/{key}"
                self.writer.add_scalar(tag, float(value), step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        """Flush and close; idempotent (the training end and the crash clean-up both call it)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def plot_metrics(metrics_path, out_dir) -> list[Path]:
    """Plot training losses and validation metrics against iterations; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    train = [r for r in records if r.get("type") == "train"]
    if train:
        keys = sorted({k for r in train for k in r if k == "loss" or k.startswith("loss_")})
        fig, ax = plt.subplots(figsize=(8, 5))
        for key in keys:
            points = [(r["iteration"], r[key]) for r in train if _finite(r.get(key))]
            if points:
                ax.plot(*zip(*points), label=key, linewidth=2 if key == "loss" else 1)
        ax.set_yscale("log")
        _label_axes(ax, "training loss")
        written.append(_save_figure(fig, out_dir / "losses.png"))
    val = [r for r in records if r.get("type") == "val"]
    if val:
        # headline metrics only: AP-style values and validation losses, not per-class tables
        keys = sorted({k for r in val for k in r if "/" in k and not is_per_class_metric(k) and _finite(r.get(k))})
        ap_keys = [k for k in keys if not k.startswith("val/")]
        loss_keys = [k for k in keys if k.startswith("val/")]
        panels = [p for p in ((ap_keys, "metric"), (loss_keys, "validation loss")) if p[0]]
        if panels:
            fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
            for ax, (panel_keys, ylabel) in zip(axes[0], panels):
                values = []
                for key in panel_keys:
                    points = [(r["iteration"], r[key]) for r in val if _finite(r.get(key))]
                    if points:
                        ax.plot(*zip(*points), marker="o", label=key)
                        values += [v for _, v in points]
                if ylabel == "metric" and values and 0.0 <= min(values) and max(values) <= 1.0:
                    ax.set_ylim(0.0, 1.0)  # AP-style fractions
                _label_axes(ax, ylabel)
            written.append(_save_figure(fig, out_dir / "metrics.png"))
    return written


def _label_axes(ax, ylabel: str) -> None:
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def _save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
