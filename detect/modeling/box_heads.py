"""Box heads (pooled RoI features -> one vector per RoI) and the Fast R-CNN predictor.

Contract
--------
A box head maps pooled features ``[R, C, P, P]`` to ``[R, D]`` and exposes ``out_channels = D``:

- :class:`TwoMLPHead` -- FPN's head: flatten, fc6 + ReLU, fc7 + ReLU (D = 1024). Parameter
  names equal torchvision's ``TwoMLPHead``.
- :class:`VGGHead` -- the Faster R-CNN paper's head on VGG-16: flatten the 7x7 pooled
  conv5_3 features, fc6 (4096) + ReLU + dropout, fc7 (4096) + ReLU + dropout.
- :class:`ConvFCHead` -- convolutions then FC layers (torchvision v2's "4conv1fc", D = 1024).
- :class:`ConvStageHead` -- the "C4" head: the backbone's last stage (ResNet ``layer4``,
  GoogLeNet's inception 5 block) applied to the pooled ``c4`` features, then global average
  pooling (D = the stage's output channels), as in torchvision/detectron2's R50-C4.

:class:`FastRCNNPredictor` maps ``[R, D]`` to class logits ``[R, K + 1]`` (0 = background)
and class-specific box deltas ``[R, 4 * (K + 1)]``; names equal torchvision's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _FlattenFC6:
    """Mixin: flatten pooled ``[R, C, P, P]`` features into fc6.

    After :meth:`expect_channels_last_` (inference only), fc6's input columns are stored in
    ``(P, P, C)`` order, so that channels-last pooled features (what our RoIAlign returns)
    flatten as a free view instead of a copy; the products are the same.
    """

    fc6: nn.Linear
    _channels_last_input = False

    @torch.no_grad()
    def expect_channels_last_(self, channels: int, size: int) -> None:
        weight = self.fc6.weight
        if weight.shape[1] != channels * size * size:
            raise ValueError(f"fc6 takes {weight.shape[1]} inputs, not {channels}x{size}x{size}")
        self.fc6.weight = nn.Parameter(
            weight.view(-1, channels, size, size).permute(0, 2, 3, 1).reshape(weight.shape[0], -1).contiguous(),
            requires_grad=weight.requires_grad,
        )
        self._channels_last_input = True

    def _flatten(self, x: Tensor) -> Tensor:
        if self._channels_last_input:
            return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        return x.flatten(1)


class TwoMLPHead(_FlattenFC6, nn.Module):
    """Two fully connected layers with ReLU.

    Args:
        in_channels: flattened pooled size ``C * P * P``.
        representation_size: width D of both layers.
    """

    def __init__(self, in_channels: int, representation_size: int = 1024):
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)
        self.out_channels = representation_size

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.fc6(self._flatten(x)))
        return F.relu(self.fc7(x))


class VGGHead(_FlattenFC6, nn.Module):
    """VGG-16's fc6/fc7 on 7x7 pooled conv5_3 features, with dropout as in the paper.

    Args:
        in_channels: flattened pooled size (512 * 7 * 7 for VGG-16).
        representation_size: width of fc6 and fc7 (4096).
        dropout: dropout probability after each layer, active in training mode only.
    """

    def __init__(self, in_channels: int, representation_size: int = 4096, dropout: float = 0.5):
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)
        self.dropout = nn.Dropout(dropout)
        self.out_channels = representation_size

    def forward(self, x: Tensor) -> Tensor:
        x = self.dropout(F.relu(self.fc6(self._flatten(x))))
        return self.dropout(F.relu(self.fc7(x)))


class ConvStageHead(nn.Module):
    """A backbone stage run on pooled RoI features, then global average pooling.

    Args:
        stage: the module to run (e.g. ResNet's ``layer4``; its first block has stride 2,
            so 14x14 pooled features become 7x7 as in R50-C4).
        out_channels: channels the stage produces.
        frozen: the stage is a frozen backbone stage: its parameters get no gradient and its
            norm layers stay in eval mode (their statistics never change), as in the backbone.
    """

    def __init__(self, stage: nn.Module, out_channels: int, frozen: bool = False):
        super().__init__()
        self.stage = stage
        self.out_channels = int(out_channels)
        self.frozen = bool(frozen)
        if self.frozen:
            for p in stage.parameters():
                p.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.stage.eval()
        return self

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, frozen={self.frozen}"

    def forward(self, x: Tensor) -> Tensor:
        return self.stage(x).mean(dim=(2, 3))

    def fuse_norm_(self) -> "ConvStageHead":
        """Fold the stage's frozen / eval-mode BatchNorms into its convolutions (inference)."""
        from backbones.fuse import fuse_conv_norm_

        fuse_conv_norm_(self.stage)
        return self


class ConvFCHead(nn.Sequential):
    """Convolutions (3x3, norm, ReLU) then fully connected layers (ReLU): torchvision's
    ``FastRCNNConvFCHead`` with the same parameter names (``0.0.weight`` ... ``5.weight``).
    The ``"4conv1fc"`` head of torchvision's Faster R-CNN v2 is ``conv_layers=[256] * 4``,
    ``fc_layers=[1024]`` with BatchNorm.

    Args:
        input_shape: pooled ``(C, P, P)``.
        conv_layers: output channels of each convolution.
        fc_layers: width of each fully connected layer.
        norm: ``None``, ``"bn"`` or ``"frozen_bn"`` after each convolution.
    """

    def __init__(self, input_shape: tuple[int, int, int], conv_layers: list[int], fc_layers: list[int], norm: str | None = "bn"):
        from torchvision.ops import Conv2dNormActivation

        from detect.modeling.fpn import norm_layer

        channels, height, width = input_shape
        blocks: list[nn.Module] = []
        for out in conv_layers:
            blocks.append(Conv2dNormActivation(channels, out, norm_layer=norm_layer(norm)))
            channels = out
        blocks.append(nn.Flatten())
        features = channels * height * width
        for out in fc_layers:
            blocks += [nn.Linear(features, out), nn.ReLU(inplace=True)]
            features = out
        super().__init__(*blocks)
        self.out_channels = features
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)


class FastRCNNPredictor(nn.Module):
    """Linear classification (K + 1 classes, background first) and per-class box regression.

    Initialised like detectron2 (normal, std 0.01 for logits and 0.001 for deltas, zero
    bias), so that an untrained head predicts near-uniform classes and near-zero deltas.

    Args:
        in_channels: D, the box head's output width.
        num_classes: K + 1, background included.
    """

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)

