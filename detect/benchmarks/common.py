"""Timing helpers shared by every benchmark in ``tools/benchmark.py``.

Contract: a benchmark compares *our* callable with the torchvision equivalent in the
same process, on the same inputs, with a fixed number of threads, and reports medians
over repeats after warm-up plus the ratio ours / theirs (< 1 means we are faster).
Runs of the two callables are interleaved so that slow drift of the machine (thermal,
other processes) hits both sides alike. Nothing here asserts a speed: figures are
printed and recorded in docs/benchmarks.md, never checked in tests.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch


def calibrate_batchnorm_(model: torch.nn.Module, size: int = 64, run: Callable | None = None) -> torch.nn.Module:
    """Give a randomly initialised model's BatchNorms random affine parameters and statistics
    from one random ``[2, 3, size, size]`` batch (cumulative average, so that one batch sets
    them exactly): activations stay O(1) and every norm does real work in a comparison.
    ``run(batch)`` is the forward to use (default ``model.train()``); draws from the global
    RNG, so seed first. Returns the model in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.momentum = None
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
        (run or model.train())(torch.randn(2, 3, size, size))
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def set_threads(num_threads: int) -> None:
    """Fix intra-op threads for torch and OpenCV so that runs are comparable."""
    torch.set_num_threads(num_threads)
    try:
        import cv2

        cv2.setNumThreads(num_threads)
    except ImportError:  # OpenCV is a dependency, but timing torch alone needs no cv2
        pass


def machine_info() -> str:
    """One line naming the CPU, core count, and the torch / torchvision versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import torchvision

    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {os.cpu_count()} cores{gpu}; torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, {torch.get_num_threads()} threads"
    )


def _sync(device: str | torch.device | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@dataclass
class Comparison:
    """Medians (seconds) of ours and theirs, and every individual sample."""

    name: str
    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)

    @property
    def ours_median(self) -> float:
        return statistics.median(self.ours)

    @property
    def theirs_median(self) -> float:
        return statistics.median(self.theirs)

    @property
    def ratio(self) -> float:
        """ours / theirs: below 1.0 means ours is faster."""
        return self.ours_median / self.theirs_median

    def row(self) -> str:
        return (
            f"| {self.name} | {self.ours_median * 1e3:.1f} | {self.theirs_median * 1e3:.1f} "
            f"| {self.ratio:.2f} |"
        )


def time_once(fn: Callable[[], object], device=None) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def compare(
    name: str,
    ours: Callable[[], object],
    theirs: Callable[[], object],
    warmup: int = 2,
    repeats: int = 5,
    device=None,
) -> Comparison:
    """Time ``ours`` and ``theirs`` alternately: ``warmup`` untimed calls each, then
    ``repeats`` timed calls each, interleaved."""
    for _ in range(warmup):
        ours()
        theirs()
    result = Comparison(name)
    for _ in range(repeats):
        result.ours.append(time_once(ours, device))
        result.theirs.append(time_once(theirs, device))
    return result


def table_header(first: str = "case") -> str:
    return f"| {first} | ours (ms) | torchvision (ms) | ratio ours/tv |\n|---|---|---|---|"


def peak_rss_bytes(fn: Callable[[], object]) -> int:
    """Peak resident memory reached while ``fn`` runs, above the resident size before it.

    Linux only: resets the process high-water mark through /proc/self/clear_refs, then
    reads VmHWM. Returns -1 where that interface is missing.
    """

    def read_kb(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
        raise KeyError(key)

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = read_kb("VmRSS:")
    except OSError:
        return -1
    fn()
    return (read_kb("VmHWM:") - before) * 1024
