"""Normalisation layers shared by every backbone family.

Contract:

- ``build_norm(kind, num_channels, eps)`` returns the layer for ``norm="bn" | "frozen_bn" | "gn"``:
  ``nn.BatchNorm2d``, :class:`FrozenBatchNorm2d` (statistics and affine fixed, buffers only) or
  ``nn.GroupNorm`` with 32 groups (fewer where the channel count is not a multiple of 32).
- :class:`FrozenBatchNorm2d` keeps ``weight``, ``bias``, ``running_mean`` and ``running_var``
  as buffers, so a torchvision ``BatchNorm2d`` state dict loads into it unchanged
  (``num_batches_tracked`` is accepted and dropped) and an optimizer never sees it.
- ``convert_frozen_batchnorm(module)`` swaps every ``BatchNorm2d`` of an existing module for a
  :class:`FrozenBatchNorm2d` carrying the same statistics (used for torchvision models, whose
  constructors do not all take a norm layer).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORMS = ("bn", "frozen_bn", "gn")
GROUP_NORM_GROUPS = 32


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d whose statistics and affine parameters never change.

    Computes ``(x - running_mean) / sqrt(running_var + eps) * weight + bias`` per channel
    in train and eval mode alike. All four tensors are buffers: they load from and save to
    the same state-dict keys as ``nn.BatchNorm2d`` but receive no gradient.

    Args:
        num_features (int): number of channels ``C`` of the ``[N, C, H, W]`` input.
        eps (float): added to the variance, as in the BatchNorm it replaces (1e-5 for ResNet,
            1e-3 for torchvision's GoogLeNet).
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A BatchNorm2d checkpoint carries a step counter that means nothing here.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def scale_and_shift(self) -> tuple[Tensor, Tensor]:
        """Per-channel ``(scale, shift)`` with ``y = x * scale + shift``."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad:
            # F.batch_norm's backward would also compute (unused) weight and bias gradients
            # and keep extra buffers; the affine form needs only the input gradient.
            scale, shift = self.scale_and_shift()
            return x * scale.reshape(1, -1, 1, 1).to(x.dtype) + shift.reshape(1, -1, 1, 1).to(x.dtype)
        # Without autograd the native inference kernel is the fastest path on CPU and GPU.
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, momentum=0.0, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> "FrozenBatchNorm2d":
        """A frozen copy of ``bn`` (its running statistics and affine parameters)."""
        reference = next(iter(bn.buffers()), None) if bn.weight is None else bn.weight
        frozen = cls(bn.num_features, bn.eps)
        if reference is not None:
            frozen = frozen.to(reference.device)
        with torch.no_grad():
            if bn.affine:
                frozen.weight.copy_(bn.weight)
                frozen.bias.copy_(bn.bias)
            if bn.track_running_stats:
                frozen.running_mean.copy_(bn.running_mean)
                frozen.running_var.copy_(bn.running_var)
        return frozen


def group_norm_groups(num_channels: int) -> int:
    """32 groups, or the largest divisor of ``num_channels`` below 32 (GoogLeNet has 16-channel
    convolutions, where 32 groups cannot exist)."""
    return math.gcd(GROUP_NORM_GROUPS, num_channels)


def build_norm(kind: str, num_channels: int, eps: float = 1e-5) -> nn.Module:
    """The normalisation layer named by ``kind`` ("bn", "frozen_bn" or "gn") for ``num_channels``."""
    if kind == "bn":
        return nn.BatchNorm2d(num_channels, eps=eps)
    if kind == "frozen_bn":
        return FrozenBatchNorm2d(num_channels, eps=eps)
    if kind == "gn":
        return nn.GroupNorm(group_norm_groups(num_channels), num_channels, eps=eps)
    raise ValueError(f"norm={kind!r} is not one of {', '.join(map(repr, NORMS))}")


def check_norm(kind: str) -> str:
    if kind not in NORMS:
        raise ValueError(f"norm={kind!r} is not one of {', '.join(map(repr, NORMS))}")
    return kind


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` (or ``module`` itself) by a
    :class:`FrozenBatchNorm2d` with the same statistics. Returns the converted module."""
    if isinstance(module, nn.BatchNorm2d):
        return FrozenBatchNorm2d.from_batchnorm(module)
    for name, child in module.named_children():
        converted = convert_frozen_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module
