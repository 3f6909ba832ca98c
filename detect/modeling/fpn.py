"""Feature Pyramid Network neck (Lin et al., 2017) on torchvision.ops.FeaturePyramidNetwork.

Contract
--------
``FPN(in_channels, in_strides, out_channels=256, extra_max_pool=True)`` maps backbone
features ``OrderedDict[cN -> Tensor]`` (increasing stride) to ``OrderedDict[pN -> Tensor]``
with ``out_channels`` each and the same strides; with ``extra_max_pool`` one more level
``p{N+1}`` is the last output subsampled by 2 (``LastLevelMaxPool``, used by the RPN only).
``out_channels`` and ``strides`` are dicts keyed by the output names.

Parameter names are those of ``torchvision.ops.FeaturePyramidNetwork`` (``inner_blocks``,
``layer_blocks``), so torchvision's ``backbone.fpn.*`` weights load after stripping the
prefix, and the outputs equal torchvision's for the same weights.
"""
from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool


def norm_layer(norm: str | None):
    """The norm-layer constructor for ``norm`` = ``None``, ``"bn"`` or ``"frozen_bn"``."""
    if norm is None:
        return None
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "frozen_bn":
        from backbones.norm import FrozenBatchNorm2d

        return FrozenBatchNorm2d
    raise ValueError(f"norm must be None, 'bn' or 'frozen_bn', got {norm!r}")


def _level(name: str) -> int:
    if len(name) < 2 or not name[1:].isdigit():
        raise ValueError(f"feature names must be cN (stride 2**N), got {name!r}")
    return int(name[1:])


def lateral_conv(block: nn.Module) -> nn.Module | None:
    """The convolution of a lateral block that is a convolution alone: ``Sequential(conv)``
    or, once a norm is folded into it (``fpn_norm="bn"``), ``Sequential(conv, Identity...)``;
    ``None`` for any other block."""
    if not isinstance(block, nn.Sequential) or len(block) == 0:
        return None
    if all(isinstance(m, nn.Identity) for m in list(block)[1:]):
        return block[0]
    return None


class FPN(FeaturePyramidNetwork):
    """Top-down pathway with lateral 1x1 and output 3x3 convolutions, plus optional P(N+1).

    Args:
        in_channels: channels of each input level, e.g. ``{"c2": 256, ..., "c5": 2048}``.
        in_strides: stride of each input level, e.g. ``{"c2": 4, ..., "c5": 32}``.
        out_channels: channels of every output level.
        extra_max_pool: add a stride-2 subsampled copy of the last level (P6 for C2-C5).
        norm: ``None`` (convolutions with bias, the FPN paper and torchvision's v1), ``"bn"``
            or ``"frozen_bn"`` (BatchNorm after every conv, torchvision's v2).
    """

    def __init__(
        self,
        in_channels: dict[str, int],
        in_strides: dict[str, int],
        out_channels: int = 256,
        extra_max_pool: bool = True,
        norm: str | None = None,
    ):
        names = list(in_channels)
        super().__init__(
            [in_channels[n] for n in names],
            out_channels,
            extra_blocks=LastLevelMaxPool() if extra_max_pool else None,
            norm_layer=norm_layer(norm),
        )
        self.in_features = names
        out_names = [f"p{_level(n)}" for n in names]
        strides = {o: int(in_strides[n]) for o, n in zip(out_names, names)}
        if extra_max_pool:
            last = _level(names[-1]) + 1
            out_names.append(f"p{last}")
            strides[f"p{last}"] = 2 * strides[out_names[-2]]
        self.out_names = out_names
        self.strides = strides
        self.out_channels = {n: out_channels for n in out_names}

    def _lateral(self, index: int, x: Tensor, top_down: Tensor | None = None) -> Tensor:
        """Lateral 1x1 conv of level ``index``, plus the upsampled top-down map if given. An
        inference-fused conv (see :mod:`detect.modeling.fast_inference`) adds it as a post-op."""
        block = self.inner_blocks[index]
        conv = lateral_conv(block)
        if top_down is not None and getattr(conv, "accepts_residual", False):
            return conv(x, top_down)
        lateral = block(x)
        return lateral if top_down is None else lateral + top_down

    def forward(self, features: dict[str, Tensor]) -> "OrderedDict[str, Tensor]":
        # torchvision's FeaturePyramidNetwork.forward, operation for operation.
        x = [features[n] for n in self.in_features]
        last_inner = self._lateral(len(x) - 1, x[-1])
        results = [self.layer_blocks[-1](last_inner)]
        for index in range(len(x) - 2, -1, -1):
            top_down = F.interpolate(last_inner, size=x[index].shape[-2:], mode="nearest")
            last_inner = self._lateral(index, x[index], top_down)
            results.insert(0, self.layer_blocks[index](last_inner))
        if self.extra_blocks is not None:
            results, _ = self.extra_blocks(results, x, list(self.in_features))
        return OrderedDict(zip(self.out_names, results))
