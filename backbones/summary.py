"""A table of backbones: outputs, channels, strides, parameters and forward latency.

    from backbones.summary import summarize, format_table
    print(format_table(summarize()))

``summarize(names)`` builds each backbone (random weights, eval mode) and times its forward
pass on one ``size`` x ``size`` image (median of ``repeats`` after one warm-up call, with the
current torch thread count); ``tools/backbones_table.py`` prints the result. Latencies are
for orientation, not comparison: ``tools/benchmark.py backbones`` compares with torchvision.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from backbones.registry import BACKBONES, build_backbone

#: torchvision classifiers shown besides ours by default.
DEFAULT_TV_EXAMPLES = ("tv:vgg16", "tv:mobilenet_v3_large")


@dataclass
class BackboneRow:
    name: str
    outputs: list[str]
    channels: list[int]
    strides: list[int]
    parameters: int
    latency_ms: float


def default_names() -> list[str]:
    return [*BACKBONES, *DEFAULT_TV_EXAMPLES]


@torch.no_grad()
def summarize(names: Sequence[str] | None = None, size: int = 224, repeats: int = 3,
              options: dict | None = None) -> list[BackboneRow]:
    """Build and time each backbone in ``names`` (default: ours and a few ``tv:`` examples)."""
    rows = []
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    for name in names or default_names():
        model = build_backbone(name, **(options or {})).eval()
        model(x)  # warm-up: allocator and oneDNN primitive creation
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
        rows.append(BackboneRow(
            name=name,
            outputs=list(model.out_channels),
            channels=list(model.out_channels.values()),
            strides=list(model.strides.values()),
            parameters=sum(p.numel() for p in model.parameters()),
            latency_ms=statistics.median(times) * 1e3,
        ))
    return rows


def format_table(rows: Sequence[BackboneRow], size: int = 224) -> str:
    """Markdown table of ``rows``."""
    lines = [f"| backbone | outputs | channels | strides | parameters (M) | forward {size} px (ms) |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row.name} | {', '.join(row.outputs)} | {', '.join(map(str, row.channels))} | "
            f"{', '.join(map(str, row.strides))} | {row.parameters / 1e6:.1f} | {row.latency_ms:.1f} |")
    return "\n".join(lines)
