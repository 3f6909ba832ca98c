"""Xception (Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions", 2017) as a
backbone and as an image classifier.

Registered name: ``xception``.

Architecture, as in the paper (Figure 5):

- entry flow: conv 3x3/2 (32), conv 3x3 (64), then three residual blocks of two separable
  3x3 convolutions and a 3x3/2 max-pool (128, 256, 728 channels), each with a 1x1 stride-2
  convolution (+ BN) as its shortcut;
- middle flow: 8 identity-shortcut blocks of three ReLU - separable conv 728 - BN;
- exit flow: one residual block (separable 728, separable 1024, max-pool, 1x1 stride-2
  shortcut), then separable 1536 - BN - ReLU and separable 2048 - BN - ReLU.

A separable convolution is a depthwise 3x3 (``conv1``, groups = channels) followed directly by a
pointwise 1x1 (``pointwise``), with no norm or nonlinearity between them.

Parameter names are those of timm's ``legacy_xception`` (the Keras port: ``conv1``, ``bn1``,
``conv2``, ``bn2``, ``block1``..``block12`` with ``skip``, ``skipbn`` and ``rep.<i>``,
``conv3``, ``bn3``, ``conv4``, ``bn4``, classifier ``fc``), so its ImageNet state dict loads with
``weights=path`` (``fc.*`` is ignored by the backbone and loaded by
:class:`XceptionClassifier`). Those weights expect inputs normalised with mean = std = 0.5.

Outputs, with the features timm's ``features_only`` model taps (after the ReLU the next block
starts with; the shortcut itself takes the value before it):

======  ===========================================  ========  ======
name    taken after                                  channels  stride
======  ===========================================  ========  ======
``c2``  entry-flow block1 (ReLU)                     128       4
``c3``  entry-flow block2 (ReLU)                     256       8
``c4``  middle flow, block11 (ReLU)                  728       16
``c5``  exit flow, the final ReLU                    2048      32
======  ===========================================  ========  ======

There is no ``c1`` output (the stride-2 stem is only 64 channels, as ResNet's ``c1``, which no
backbone returns).

``stem_padding``: the paper (and Keras, and timm) pad neither stem convolution ("valid"), so a
224 input gives c2..c5 of 55, 28, 14, 7, and c2 is one row short of ``H / 4`` for every H
that is a multiple of 32. The backbone's default, "same", pads both stem convolutions by 1 so
that every ``cN`` is ``ceil(H / 2**N)`` as the backbone contract requires (a padded input gives
exactly ``H / 2**N``); the weights are the same shapes either way. ``stem_padding="valid"``
reproduces the paper's (and timm's) activations exactly; :class:`XceptionClassifier` defaults
to it.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.base import Backbone, PooledClassifierMixin
from backbones.norm import build_norm, check_norm

STAGE_NAMES = ("c2", "c3", "c4", "c5")
STEM_PADDINGS = ("same", "valid")
#: Blocks of the middle flow (block4..block11).
MIDDLE_BLOCKS = 8
#: The last block (1-based) of each output: c2 block1, c3 block2, c4 block11, c5 block12.
LAST_BLOCK = {"c2": 1, "c3": 2, "c4": 3 + MIDDLE_BLOCKS, "c5": 4 + MIDDLE_BLOCKS}


class SeparableConv2d(nn.Module):
    """Depthwise ``k x k`` convolution (``conv1``) then pointwise 1x1 (``pointwise``), no bias,
    nothing in between."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding,
                               groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.conv1(x))


class XceptionBlock(nn.Module):
    """``reps`` x (ReLU, separable 3x3, norm), a 3x3 max-pool when strided, plus a shortcut.

    The shortcut is the identity, or a 1x1 convolution (``skip``, carrying the stride) and a
    norm (``skipbn``) when the channels or the resolution change. ``grow_first`` widens in the
    first separable conv (entry flow) rather than the last (exit flow); ``start_with_relu=False``
    drops the first ReLU (block1 follows the stem's ReLU). ``rep`` indices are timm's.
    """

    def __init__(self, in_channels: int, out_channels: int, reps: int, stride: int, norm: str,
                 start_with_relu: bool = True, grow_first: bool = True):
        super().__init__()
        if out_channels != in_channels or stride != 1:
            self.skip = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
            self.skipbn = build_norm(norm, out_channels)
        else:
            self.skip = None
            self.skipbn = None
        layers: list[nn.Module] = []
        for i in range(reps):
            if grow_first:
                inc, outc = (in_channels if i == 0 else out_channels), out_channels
            else:
                inc, outc = in_channels, (in_channels if i < reps - 1 else out_channels)
            # The first ReLU must not overwrite the block input: the shortcut reads it.
            layers += [nn.ReLU(inplace=i > 0), SeparableConv2d(inc, outc), build_norm(norm, outc)]
        if not start_with_relu:
            layers = layers[1:]
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.rep(x)
        out += x if self.skip is None else self.skipbn(self.skip(x))
        return out


def _block_specs() -> list[dict]:
    """Arguments of block1..block12 (1-based index = list position + 1)."""
    specs = [dict(in_channels=64, out_channels=128, reps=2, stride=2, start_with_relu=False),
             dict(in_channels=128, out_channels=256, reps=2, stride=2),
             dict(in_channels=256, out_channels=728, reps=2, stride=2)]
    specs += [dict(in_channels=728, out_channels=728, reps=3, stride=1)] * MIDDLE_BLOCKS
    specs.append(dict(in_channels=728, out_channels=1024, reps=2, stride=2, grow_first=False))
    return specs


class Xception(Backbone):
    """Xception feature extractor returning ``c2``..``c5`` (strides 4, 8, 16, 32; channels 128,
    256, 728, 2048; see the module docstring for where each is taken).

    Args:
        norm (str): "bn", "frozen_bn" or "gn" (GroupNorm with 32 groups, 8 for 728 channels).
        frozen_stages (int): -1 nothing, 0 the stem (conv1, bn1, conv2, bn2), 1 also block1
            (c2), 2 also block2 (c3), 3 also block3..block11 (c4: the last entry-flow block and
            the middle flow), 4 everything (block12, conv3, bn3, conv4, bn4).
        out_features (Sequence[str] | None): subset of ``("c2", "c3", "c4", "c5")``; layers
            after the last one are not built and their keys in a weights file are ignored.
        stem_padding (str): "same" (default: ``cN`` is ``ceil(H / 2**N)``) or "valid" (the
            paper's and timm's unpadded stem, see the module docstring).
    """

    def __init__(self, norm: str = "bn", frozen_stages: int = -1,
                 out_features: Sequence[str] | None = None, stem_padding: str = "same"):
        super().__init__()
        if stem_padding not in STEM_PADDINGS:
            raise ValueError(f"stem_padding={stem_padding!r} is not one of {STEM_PADDINGS}")
        self.norm_type = check_norm(norm)
        self.stem_padding = stem_padding
        self.name = "xception"
        out_features = self.resolve_out_features(out_features, STAGE_NAMES, STAGE_NAMES, self.name)
        pad = 1 if stem_padding == "same" else 0

        self.conv1 = nn.Conv2d(3, 32, 3, 2, pad, bias=False)
        self.bn1 = build_norm(norm, 32)
        self.conv2 = nn.Conv2d(32, 64, 3, 1, pad, bias=False)
        self.bn2 = build_norm(norm, 64)
        self.relu = nn.ReLU(inplace=True)
        self.num_blocks = LAST_BLOCK[out_features[-1]]
        for index, spec in enumerate(_block_specs()[: self.num_blocks], start=1):
            self.add_module(f"block{index}", XceptionBlock(norm=norm, **spec))
        blocks = [getattr(self, f"block{i}") for i in range(1, self.num_blocks + 1)]
        stages = [[self.conv1, self.bn1, self.conv2, self.bn2], blocks[:1], blocks[1:2], blocks[2:11]]
        self.has_exit = out_features[-1] == "c5"
        if self.has_exit:
            self.conv3 = SeparableConv2d(1024, 1536)
            self.bn3 = build_norm(norm, 1536)
            self.conv4 = SeparableConv2d(1536, 2048)
            self.bn4 = build_norm(norm, 2048)
            stages.append([blocks[11], self.conv3, self.bn3, self.conv4, self.bn4])
        stages = stages[: STAGE_NAMES.index(out_features[-1]) + 2]
        self._output_after = {LAST_BLOCK[name]: name for name in STAGE_NAMES[:3]}
        self._init_weights()
        channels = {"c2": 128, "c3": 256, "c4": 728, "c5": 2048}
        self._finish_init(channels, out_features, stages, frozen_stages)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stem(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))

    def forward_features(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        x = self.stem(x)
        outputs = OrderedDict()
        for index in range(1, self.num_blocks + 1):
            x = getattr(self, f"block{index}")(x)
            name = self._output_after.get(index)
            if name is not None and name in self.out_channels:
                # The next block's shortcut needs the value before the ReLU.
                outputs[name] = F.relu(x)
        if self.has_exit:
            x = self.relu(self.bn3(self.conv3(x)))
            outputs["c5"] = self.relu(self.bn4(self.conv4(x)))
        return outputs

    def is_ignorable_weight(self, key: str) -> bool:
        head = key.split(".", 1)[0]
        if head == "fc":
            return True
        if head.startswith("block") and head[5:].isdigit():
            return int(head[5:]) > self.num_blocks
        return head in ("conv3", "bn3", "conv4", "bn4") and not self.has_exit


class XceptionClassifier(PooledClassifierMixin, Xception):
    """Xception image classifier: the backbone, global average pooling and a linear ``fc``.

    ``forward(x)`` returns logits ``[B, num_classes]``; the state dict is exactly timm's
    ``legacy_xception(num_classes=...)``. ``stem_padding`` defaults to "valid" (the paper's
    and timm's network); ``forward_features`` still returns ``c2``..``c5``.
    """

    def __init__(self, num_classes: int = 1000, norm: str = "bn", frozen_stages: int = -1,
                 stem_padding: str = "valid"):
        super().__init__(norm, frozen_stages, None, stem_padding)
        self.name = "xception classifier"
        self._add_classifier(2048, num_classes)


def xception(**options) -> Xception:
    """Xception: c2..c5. Options as :class:`Xception`."""
    return Xception(**options)
