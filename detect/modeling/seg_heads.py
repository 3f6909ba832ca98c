"""The parts of a fully convolutional segmentation head (the ``fcn`` family, :mod:`.meta_arch.fcn`).

Contract
--------
- :func:`bilinear_kernel(size)` is the FCN reference implementation's ``upsample_filt``: a
  ``[size, size]`` separable tent ``(1 - |i - c| / f) (1 - |j - c| / f)`` with
  ``f = ceil(size / 2)`` and ``c = f - 1`` (odd size) or ``f - 0.5`` (even size); for size 4,
  the 1-D taps are ``0.25, 0.75, 0.75, 0.25``.
- :class:`BilinearUpsample` is a transposed convolution by an integer ``factor`` (kernel
  ``2 * factor``, stride ``factor``, padding ``factor // 2``, no bias) mapping ``C`` channels to
  ``C`` channels, initialised as the FCN surgery does (the bilinear kernel on the channel
  diagonal, zero across channels). For an ``n``-long input the output is exactly ``factor * n``
  long, and output pixel ``o`` samples input coordinate ``(o + 0.5) / factor - 0.5``: it equals
  ``F.interpolate(..., mode="bilinear", align_corners=False)`` away from the border (where the
  transposed convolution sees zeros instead of replicating the edge). ``learnable=False``
  keeps it fixed (``requires_grad=False``; the weight stays in the state dict).
- :class:`FCNHead` is torchvision's ``FCNHead`` layer for layer (same child indices, so the
  same state-dict keys): 3x3 conv to ``in_channels // 4`` without bias, BatchNorm, ReLU,
  dropout 0.1, 1x1 conv to the class count.
- :class:`SkipFusionHead` is the FCN-32s/16s/8s decoder on any backbone: score the deepest
  map (after an optional ``fc`` block: the paper's fc6/fc7 convolutions), then, for each
  shallower tap, upsample the running score map to the tap's stride, crop it to the tap's
  size and add the tap's score (of the tap scaled by its ``skip_scales`` factor, the
  "at-once" variant), and finally upsample to stride 1. Score layers start at zero.
- :func:`sem_seg_loss(logits, masks)`: per-pixel cross entropy over ``[N, C, H, W]`` logits and
  ``[N, H, W]`` int64 masks, pixels equal to ``ignore_index`` (255) left out;
  ``reduction="mean"`` averages over the valid pixels of the batch (0 when there are none),
  ``"sum"`` is the FCN paper's unnormalised loss: the sum over valid pixels divided by the
  number of images (what Caffe's ``SoftmaxWithLoss`` with ``normalize: false`` computes).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOSS_REDUCTIONS = ("mean", "sum")


def bilinear_kernel(size: int) -> Tensor:
    """The ``[size, size]`` bilinear interpolation kernel (see the module docstring)."""
    size = int(size)
    if size < 1:
        raise ValueError(f"kernel size must be positive, got {size}")
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    return (taps[:, None] * taps[None, :]).to(torch.float32)


class BilinearUpsample(nn.ConvTranspose2d):
    """``channels`` -> ``channels`` upsampling by ``factor``, bilinear at initialisation."""

    def __init__(self, channels: int, factor: int, learnable: bool = True):
        factor = int(factor)
        if factor < 2 or factor % 2:
            raise ValueError(f"upsampling factor must be an even integer >= 2, got {factor}")
        super().__init__(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
        self.factor = factor
        self.reset_bilinear()
        self.weight.requires_grad_(bool(learnable))

    @torch.no_grad()
    def reset_bilinear(self) -> None:
        self.weight.zero_()
        index = torch.arange(self.in_channels)
        self.weight[index, index] = bilinear_kernel(self.kernel_size[0])


class FCNHead(nn.Sequential):
    """torchvision's ``FCNHead``: conv3x3 (in -> in/4, no bias), BN, ReLU, dropout, conv1x1."""

    def __init__(self, in_channels: int, num_outputs: int, channels: int | None = None,
                 dropout: float = 0.1, norm: type[nn.Module] = nn.BatchNorm2d):
        channels = in_channels // 4 if channels is None else int(channels)
        super().__init__(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            norm(channels),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(channels, num_outputs, 1),
        )


def crop_to(x: Tensor, reference: Tensor) -> Tensor:
    """``x`` cut at the bottom and right to ``reference``'s height and width (the FCN crop
    layers; with aligned upsampling the offset is 0). A smaller ``x`` is a ValueError."""
    height, width = reference.shape[-2], reference.shape[-1]
    if not torch.jit.is_tracing() and (x.shape[-2] < height or x.shape[-1] < width):
        raise ValueError(f"upsampled scores {tuple(x.shape[-2:])} are smaller than the skip "
                         f"feature {tuple(reference.shape[-2:])}; pad the input to a multiple of "
                         f"the backbone's size_divisibility")
    return x[..., :height, :width]


class SkipFusionHead(nn.Module):
    """FCN-32s/16s/8s fusion of score maps (see the module docstring).

    Args:
        in_channels: ``{feature: channels}`` of the taps, deepest first (e.g. ``c5, c4, c3``).
        strides: ``{feature: stride}``, same keys; each stride divides the previous one.
        num_outputs: K + 1 score channels.
        fc: a module applied to the deepest map before it is scored (the paper's fc6/fc7), or
            ``None``; ``fc_channels``: its output channels (the deepest map's otherwise).
        skip_scales: ``{feature: factor}`` multiplying a shallower tap before its score layer
            (at-once FCN-8s: ``{"c4": 0.01, "c3": 1e-4}``).
        learn_final_upsample: the last upsampling learns (default fixed bilinear, as the paper);
            intermediate ones always learn from a bilinear start.

    Submodules (state-dict keys): ``fc``, ``scores[feature]`` (1x1 convs, zero-initialised;
    the paper's score_fr, score_pool4, score_pool3), ``upsample[feature]`` (the learned 2x
    upsampling applied to the running scores at that feature's stride; upscore2,
    upscore_pool4), ``final_upsample`` (upscore32/16/8; ``nn.Identity`` at stride 1).
    """

    def __init__(self, in_channels: Mapping[str, int], strides: Mapping[str, int], num_outputs: int,
                 fc: nn.Module | None = None, fc_channels: int | None = None,
                 skip_scales: Mapping[str, float] | None = None, learn_final_upsample: bool = False):
        super().__init__()
        names = list(in_channels)
        if not names or list(strides) != names:
            raise ValueError(f"in_channels and strides need the same non-empty keys, got {names}, {list(strides)}")
        self.features = names
        self.strides = {n: int(strides[n]) for n in names}
        self.fc = fc if fc is not None else nn.Identity()
        self.skip_scales = {n: float(v) for n, v in (skip_scales or {}).items()}
        unknown = sorted(set(self.skip_scales) - set(names[1:]))
        if unknown:
            raise ValueError(f"skip_scales names {unknown}, which are not skip taps {names[1:]}")
        self.scores = nn.ModuleDict()
        for index, name in enumerate(names):
            channels = (fc_channels or in_channels[name]) if index == 0 else in_channels[name]
            score = nn.Conv2d(int(channels), int(num_outputs), 1)
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)
            self.scores[name] = score
        self.upsample = nn.ModuleDict()
        for deeper, shallower in zip(names, names[1:]):
            factor = self.strides[deeper] // self.strides[shallower]
            if factor * self.strides[shallower] != self.strides[deeper]:
                raise ValueError(f"stride {self.strides[shallower]} of {shallower} does not divide "
                                 f"stride {self.strides[deeper]} of {deeper}")
            self.upsample[deeper] = (BilinearUpsample(num_outputs, factor) if factor > 1 else nn.Identity())
        last = self.strides[names[-1]]
        self.final_upsample = (BilinearUpsample(num_outputs, last, learnable=learn_final_upsample)
                               if last > 1 else nn.Identity())

    def forward(self, features: Mapping[str, Tensor], size: Sequence | None = None) -> Tensor:
        """Scores at stride 1, cut to ``size`` ``(h, w)`` (the padded input) when given."""
        deepest = self.features[0]
        scores = self.scores[deepest](self.fc(features[deepest]))
        for deeper, name in zip(self.features, self.features[1:]):
            skip = features[name]
            if name in self.skip_scales:
                skip = skip * self.skip_scales[name]
            skip = self.scores[name](skip)
            scores = crop_to(self.upsample[deeper](scores), skip) + skip
        scores = self.final_upsample(scores)
        if size is not None:
            scores = scores[..., : size[0], : size[1]]
        return scores


def sem_seg_loss(logits: Tensor, masks: Tensor, ignore_index: int = 255, reduction: str = "mean") -> Tensor:
    """Per-pixel cross entropy (see the module docstring); ``logits [N, C, H, W]``, ``masks [N, H, W]``."""
    if reduction not in LOSS_REDUCTIONS:
        raise ValueError(f"loss reduction must be one of {LOSS_REDUCTIONS}, got {reduction!r}")
    total = F.cross_entropy(logits, masks, ignore_index=ignore_index, reduction="sum")
    if reduction == "sum":
        return total / logits.shape[0]
    # Dividing by the count (at least 1) rather than using reduction="mean" gives 0, not NaN,
    # for a batch without a valid pixel, and needs no host read.
    valid = (masks != ignore_index).sum().clamp(min=1)
    return total / valid.to(total.dtype)

