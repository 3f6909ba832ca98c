"""SE-ResNet-50 / 101 (Hu et al., "Squeeze-and-Excitation Networks", 2018) as a backbone and as
an image classifier, and the squeeze-and-excitation block as a reusable module.

Registered names: ``seresnet50``, ``seresnet101``.

Architecture: ResNet-50 / 101 with bottleneck blocks (the stride on the 3x3 convolution, as in
:mod:`backbones.resnet`), and one :class:`SEBlock` per bottleneck, applied after the last
BatchNorm (``bn3``) and before the residual addition, reduction ratio 16.

Parameter names are those of timm's ``seresnet50`` / ``seresnet101`` (which are torchvision's
ResNet names plus ``layerX.Y.se.fc1`` / ``se.fc2``), so timm's ImageNet state dicts load
unchanged with ``weights=path``; their classifier keys ``fc.*`` are ignored by the backbone and
loaded by :class:`SEResNetClassifier`. There are no torchvision weights
(``weights="torchvision"`` raises ``WeightsError``).

Outputs ``c2`` (after layer1), ``c3``, ``c4``, ``c5`` (after layer4), strides 4, 8, 16, 32,
channels 256, 512, 1024, 2048; for an input of size H, ``cN`` is ``ceil(H / 2**N)`` high. The
layer layout is ResNet's, so ``split_last_stage_()`` works as for ResNet.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from backbones.base import PooledClassifierMixin
from backbones.resnet import Bottleneck, ResNet


class SEBlock(nn.Module):
    """Squeeze-and-excitation: rescale each channel by a gate computed from the whole map.

    ``y = x * sigmoid(fc2(relu(fc1(mean_hw(x)))))`` where ``fc1`` / ``fc2`` are 1x1
    convolutions with bias (``channels -> channels // reduction -> channels``).

    Args:
        channels (int): channels ``C`` of the ``[N, C, H, W]`` input (and output).
        reduction (int): ratio of ``channels`` to the hidden width (at least 1 channel).

    Parameter names (``fc1``, ``fc2``) are timm's ``SEModule``'s; for channel counts that are
    multiples of ``8 * reduction`` the hidden width is timm's too.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ValueError(f"SEBlock needs channels >= 1 and reduction >= 1, got {channels}, {reduction}")
        hidden = max(1, channels // reduction)
        self.channels, self.reduction = channels, reduction
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        squeezed = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.relu(self.fc1(squeezed))))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"


class SEBottleneck(Bottleneck):
    """ResNet bottleneck with an :class:`SEBlock` (``se``) after ``bn3``, before the addition."""

    def __init__(self, in_channels: int, channels: int, stride: int, norm: str,
                 reduction: int = 16):
        super().__init__(in_channels, channels, stride, norm)
        self.se = SEBlock(channels * self.expansion, reduction)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


#: depth -> blocks per stage
SE_ARCHITECTURES: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class SEResNet(ResNet):
    """SE-ResNet feature extractor returning ``c2``..``c5`` (strides 4, 8, 16, 32).

    Args:
        depth (int): 50 or 101.
        norm (str): "bn", "frozen_bn" or "gn" (the SE blocks have no norm layer).
        frozen_stages (int): -1 nothing, 0 the stem (conv1, bn1), k the stem and layer1..layerk.
        out_features (Sequence[str] | None): subset of ``("c2", "c3", "c4", "c5")``; layers
            after the last one are not built and their keys in a weights file are ignored.
        zero_init_residual (bool): start every ``bn3`` at zero (each block begins as the identity).
        reduction (int): the SE reduction ratio (16 in the paper and in timm).

    Channels ``c2..c5`` = 256, 512, 1024, 2048. Forward, ``stem``, weight filtering and
    ``split_last_stage_`` are :class:`backbones.resnet.ResNet`'s.
    """

    family = "SE-ResNet"
    has_torchvision_weights = False

    def __init__(self, depth: int = 50, norm: str = "bn", frozen_stages: int = -1,
                 out_features: Sequence[str] | None = None, zero_init_residual: bool = False,
                 reduction: int = 16):
        self.reduction = int(reduction)  # read by _make_block during ResNet's construction
        super().__init__(depth, norm, frozen_stages, out_features, zero_init_residual)

    @property
    def architectures(self) -> dict:
        return {depth: (SEBottleneck, blocks) for depth, blocks in SE_ARCHITECTURES.items()}

    def _make_block(self, block, in_channels: int, width: int, stride: int, norm: str, conv2) -> nn.Module:
        return block(in_channels, width, stride, norm, self.reduction)


class SEResNetClassifier(PooledClassifierMixin, SEResNet):
    """SE-ResNet image classifier: the backbone, global average pooling and a linear ``fc``.

    ``forward(x)`` returns logits ``[B, num_classes]``; the state dict is exactly timm's
    ``seresnet{depth}(num_classes=...)``. ``forward_features`` still returns ``c2``..``c5``.
    """

    def __init__(self, depth: int = 50, num_classes: int = 1000, norm: str = "bn",
                 frozen_stages: int = -1, zero_init_residual: bool = False, reduction: int = 16):
        super().__init__(depth, norm, frozen_stages, None, zero_init_residual, reduction)
        self.name = f"seresnet{depth} classifier"
        self._add_classifier(self.out_channels["c5"], num_classes)


def seresnet50(**options) -> SEResNet:
    """SE-ResNet-50: c2..c5. Options as :class:`SEResNet`."""
    return SEResNet(50, **options)


def seresnet101(**options) -> SEResNet:
    """SE-ResNet-101: c2..c5. Options as :class:`SEResNet`."""
    return SEResNet(101, **options)
