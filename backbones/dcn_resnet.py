"""Deformable ResNet (Dai et al., 2017; Zhu et al., "Deformable ConvNets v2", 2019).

The 3x3 convolution of every bottleneck in the chosen stages (default ``c3``-``c5``, as DCNv2
and mmdetection's ``dconv_c3-c5``) becomes a :class:`DeformableConv2d` running
``torchvision.ops.deform_conv2d`` (no compiled extension): a plain convolution (``conv_offset``)
predicts per-position sampling offsets (v1) and, for v2, a modulation mask.

Parameter names extend torchvision's ResNet: the deformable conv keeps ``conv2.weight`` and adds
``conv2.conv_offset.weight/bias``, so torchvision ResNet weights load and the offset convs are
reported as new. ``conv_offset`` starts at zero, so at initialisation

- v1 samples the regular grid and computes exactly what the plain ResNet computes with the same
  weights (to float rounding: deform_conv2d sums in another order than the dense conv kernel);
- v2's mask is ``sigmoid(0) = 0.5`` everywhere, so each deformable conv outputs half of the
  plain conv's output (before its norm): with BatchNorm in training mode the next
  normalisation absorbs the factor; with frozen/eval statistics from a plain ResNet the
  activations of those blocks start scaled until training adapts (the DCNv2 paper trains from
  this initialisation).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

from backbones.resnet import ARCHITECTURES, STAGE_NAMES, Bottleneck, ResNet

DCN_VERSIONS = (1, 2)


class DeformableConv2d(nn.Module):
    """Deformable convolution with its own offset (v1) or offset-and-mask (v2) predictor.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation: as ``nn.Conv2d``.
        version (int): 1 (offsets) or 2 (offsets and a sigmoid modulation mask).
        deform_groups (int): channel groups sharing one offset field.
        bias (bool): learnable bias of the main convolution.

    ``weight`` has ``nn.Conv2d``'s shape and name. ``conv_offset`` outputs
    ``deform_groups * 2 * k * k`` offset channels ((dy, dx) per kernel tap), followed for v2
    by ``deform_groups * k * k`` mask logits (the layout of mmcv's modulated deformable conv),
    and starts at zero (see the module docstring).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, version: int = 1, deform_groups: int = 1,
                 bias: bool = False):
        super().__init__()
        if version not in DCN_VERSIONS:
            raise ValueError(f"dcn_version={version!r} is not one of {DCN_VERSIONS}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.version, self.deform_groups = version, deform_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.register_parameter("bias", nn.Parameter(torch.zeros(out_channels)) if bias else None)
        self.offset_channels = deform_groups * 2 * kernel_size * kernel_size
        mask_channels = deform_groups * kernel_size * kernel_size if version == 2 else 0
        self.conv_offset = nn.Conv2d(in_channels, self.offset_channels + mask_channels, kernel_size,
                                     stride, padding, dilation, bias=True)
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)  # nn.Conv2d's default
        self.reset_offsets()

    @torch.no_grad()
    def reset_offsets(self) -> None:
        """Zero the offset (and mask) predictor: regular sampling grid, mask 0.5 for v2."""
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor) -> Tensor:
        offset = self.conv_offset(x)
        mask = None
        if self.version == 2:
            offset, mask = offset[:, : self.offset_channels], offset[:, self.offset_channels:].sigmoid()
        return deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, mask=mask)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, version={self.version}, "
                f"deform_groups={self.deform_groups}")


class DeformableResNet(ResNet):
    """ResNet-50/101/152 with deformable 3x3 convolutions in ``dcn_stages``; returns c2..c5.

    Args:
        depth (int): 50, 101 or 152 (bottleneck ResNets).
        dcn_version (int): 1 (offsets) or 2 (modulated: offsets and a mask).
        dcn_stages (Sequence[str]): stages whose 3x3 convs are deformable, from
            ``("c2", "c3", "c4", "c5")``; default ``("c3", "c4", "c5")``.
        deform_groups (int): offset groups per deformable conv (1, as DCNv2's ResNet).
        norm, frozen_stages, out_features, zero_init_residual, replace_stride_with_dilation:
            as :class:`ResNet` (a dilated stage's deformable convs dilate their sampling grid).

    ``weights="torchvision"`` loads torchvision's plain ``resnet{depth}`` weights; the offset
    convs keep their zero initialisation and are listed as new.
    """

    def __init__(self, depth: int = 50, dcn_version: int = 1,
                 dcn_stages: Sequence[str] = ("c3", "c4", "c5"), deform_groups: int = 1,
                 norm: str = "bn", frozen_stages: int = -1,
                 out_features: Sequence[str] | None = None, zero_init_residual: bool = False,
                 replace_stride_with_dilation: Sequence[bool] | None = None):
        if depth not in ARCHITECTURES or ARCHITECTURES[depth][0] is not Bottleneck:
            bottlenecks = [d for d, (block, _) in ARCHITECTURES.items() if block is Bottleneck]
            raise ValueError(f"deformable ResNet depth={depth!r} must be one of {bottlenecks}")
        if dcn_version not in DCN_VERSIONS:
            raise ValueError(f"dcn_version={dcn_version!r} is not one of {DCN_VERSIONS}")
        dcn_stages = (dcn_stages,) if isinstance(dcn_stages, str) else tuple(dcn_stages)
        unknown = [s for s in dcn_stages if s not in STAGE_NAMES]
        if unknown:
            raise ValueError(f"dcn_stages={list(dcn_stages)} must be a subset of {list(STAGE_NAMES)}")

        def conv2_factory(stage_index: int, channels: int, stride: int, dilation: int) -> nn.Module | None:
            if STAGE_NAMES[stage_index] not in dcn_stages:
                if dilation == 1:
                    return None
                return nn.Conv2d(channels, channels, 3, stride, dilation, dilation=dilation, bias=False)
            return DeformableConv2d(channels, channels, 3, stride, dilation, dilation=dilation,
                                    version=dcn_version, deform_groups=deform_groups)

        super().__init__(depth, norm, frozen_stages, out_features, zero_init_residual,
                         conv2_factory=conv2_factory,
                         replace_stride_with_dilation=replace_stride_with_dilation)
        self.dcn_version = dcn_version
        self.dcn_stages = dcn_stages
        self.name = f"dcn_resnet{depth} (v{dcn_version}, deformable in {', '.join(dcn_stages)})"

    def _init_weights(self, zero_init_residual: bool) -> None:
        super()._init_weights(zero_init_residual)
        for m in self.modules():
            if isinstance(m, DeformableConv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                m.reset_offsets()  # the generic init above drew random offset weights

    def is_new_weight(self, key: str) -> bool:
        return ".conv_offset." in key


def dcn_resnet50(**options) -> DeformableResNet:
    """Deformable ResNet-50 (deformable 3x3 in c3-c5 by default). Options as
    :class:`backbones.dcn_resnet.DeformableResNet`."""
    return DeformableResNet(50, **options)


def dcn_resnet101(**options) -> DeformableResNet:
    """Deformable ResNet-101 (deformable 3x3 in c3-c5 by default). Options as
    :class:`backbones.dcn_resnet.DeformableResNet`."""
    return DeformableResNet(101, **options)
