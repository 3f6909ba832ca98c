"""GoogLeNet / Inception v1 (Szegedy et al., "Going deeper with convolutions", 2015).

Two layouts, chosen explicitly with ``layout=``:

- ``"paper"``: the network of the paper's Table 1 and the Caffe reference model: convolutions
  with bias and ReLU and no normalisation, local response normalisation after the first
  max-pool and after conv3, and a true 5x5 convolution in each inception module's third branch.
- ``"torchvision"``: torchvision's ImageNet port: a 3x3 convolution where the paper has 5x5
  (pytorch/vision#906), BatchNorm (eps 1e-3) after every convolution, no LRN, and
  ``transform_input`` (re-normalising ImageNet-normalised input the way Google's weights
  expect). **The "torchvision" weights need ``layout="torchvision"``**, whose parameter names
  are torchvision's so its state dicts load unchanged.

Both use ceil-mode max-pooling (as Caffe and torchvision do). Features: ``c2`` (after conv3,
192 channels, not returned by default), ``c3`` (after inception 3b, 480), ``c4`` (after 4e,
832), ``c5`` (after 5b, 1024). The auxiliary classifiers after 4a and 4d exist only in
:class:`GoogLeNetClassifier`; detection drops them, and their keys in a weights file are
ignored by :class:`GoogLeNet`.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.base import Backbone, check_backbone_input
from backbones.norm import build_norm, check_norm

LAYOUTS = ("paper", "torchvision")

#: The paper's Table 1: in_channels, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION_TABLE: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "3a": (192, 64, 96, 128, 16, 32, 32),
    "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64),
    "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64),
    "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128),
    "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}
#: Inception modules producing each output, in order.
STAGE_MODULES = {"c3": ("3a", "3b"), "c4": ("4a", "4b", "4c", "4d", "4e"), "c5": ("5a", "5b")}
OUTPUT_NAMES = ("c2", "c3", "c4", "c5")
DEFAULT_OUTPUTS = ("c3", "c4", "c5")

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class InputTransform(nn.Module):
    """torchvision's ``transform_input`` of GoogLeNet / Inception v3: ImageNet-normalised input
    to the ``(x - 0.5) / 0.5`` scale of Google's weights, ``x * std / 0.5 + (mean - 0.5) / 0.5``
    per channel. Its constants are non-persistent buffers: they follow ``.to()`` but are no
    part of any state dict."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor([s / 0.5 for s in _IMAGENET_STD]).reshape(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("shift", torch.tensor([(m - 0.5) / 0.5 for m in _IMAGENET_MEAN]).reshape(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift


def _init_linear_or_conv(m: nn.Module, layout: str) -> None:
    if layout == "torchvision":
        # torchvision draws N(0, 0.01) truncated at +-2, i.e. at 200 standard deviations: the
        # plain normal is the same distribution and an order of magnitude faster to sample.
        nn.init.normal_(m.weight, 0.0, 0.01)
    else:  # the Caffe reference model: Xavier weights, bias 0.2
        nn.init.xavier_uniform_(m.weight)
    if m.bias is not None:
        nn.init.constant_(m.bias, 0.2 if layout == "paper" else 0.0)


class BasicConv2d(nn.Module):
    """Convolution, then the layout's norm (torchvision) or a bias (paper), then ReLU.

    Submodules are ``conv`` and, with a norm, ``bn`` (torchvision's names)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, norm: str | None = "bn"):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                              bias=norm is None)
        if norm is not None:
            self.bn = build_norm(norm, out_channels, eps=1e-3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if hasattr(self, "bn"):
            x = self.bn(x)
        return self.relu(x)


class Inception(nn.Module):
    """Four branches concatenated on channels: 1x1; 1x1 -> 3x3; 1x1 -> 5x5 (3x3 in the
    torchvision layout); 3x3 max-pool (stride 1) -> 1x1."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                 ch5x5: int, pool_proj: int, layout: str, norm: str | None):
        super().__init__()
        big = 5 if layout == "paper" else 3
        self.branch1 = BasicConv2d(in_channels, ch1x1, 1, norm=norm)
        self.branch2 = nn.Sequential(BasicConv2d(in_channels, ch3x3red, 1, norm=norm),
                                     BasicConv2d(ch3x3red, ch3x3, 3, padding=1, norm=norm))
        self.branch3 = nn.Sequential(BasicConv2d(in_channels, ch5x5red, 1, norm=norm),
                                     BasicConv2d(ch5x5red, ch5x5, big, padding=big // 2, norm=norm))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(in_channels, pool_proj, 1, norm=norm))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 average pool, 1x1 conv to 128, FC 1024, dropout, FC."""

    def __init__(self, in_channels: int, num_classes: int, norm: str | None, dropout: float = 0.7):
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, 1, norm=norm)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        # The paper's 5x5/3 average pool gives 4x4 on the 14x14 map of a 224 input; adaptive
        # pooling keeps 4x4 for any input size.
        x = self.conv(F.adaptive_avg_pool2d(x, (4, 4)))
        x = F.relu(self.fc1(torch.flatten(x, 1)), inplace=True)
        return self.fc2(self.dropout(x))


class GoogLeNet(Backbone):
    """GoogLeNet feature extractor returning ``c3``, ``c4``, ``c5`` (480, 832, 1024 channels).

    Args:
        layout (str): "paper" or "torchvision" (see the module docstring). The
            ``weights="torchvision"`` ImageNet weights need ``layout="torchvision"``.
        norm (str | None): for layout="torchvision": "bn" (the default, None), "frozen_bn"
            or "gn". The paper layout has no normalisation layers and accepts only None.
        transform_input (bool | None): re-normalise ImageNet-normalised input to the
            ``(x - 0.5) / 0.5`` scale of Google's weights before conv1. Default: True for
            layout="torchvision" (what torchvision does when it loads its weights), False for
            the paper layout.
        frozen_stages (int): -1 nothing, 0 the stem (conv1), 1 also conv2 and conv3 (all at
            stride 4), 2 also inception 3a-3b, 3 also 4a-4e, 4 everything.
        out_features (Sequence[str] | None): subset of ``("c2", "c3", "c4", "c5")``; default
            ``("c3", "c4", "c5")``. ``c2`` is conv3's output (192 channels, after LRN in the
            paper layout).

    For an input of size H, the sizes are: conv1 ``ceil(H/2)``; then each stride-2 ceil-mode
    max-pool maps h to ``ceil((h - k) / 2) + 1`` (k = 3, and k = 2 before 5a).
    """

    def __init__(self, layout: str = "torchvision", norm: str | None = None,
                 transform_input: bool | None = None, frozen_stages: int = -1,
                 out_features: Sequence[str] | None = None):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"GoogLeNet layout={layout!r} is not one of {LAYOUTS}")
        if layout == "paper" and norm is not None:
            raise ValueError(f"GoogLeNet layout='paper' has no normalisation layers (it uses "
                             f"LRN), so norm={norm!r} does not apply; use layout='torchvision'")
        if layout == "torchvision":
            norm = check_norm("bn" if norm is None else norm)
        self.layout = layout
        self.norm_type = norm
        self.transform_input = (layout == "torchvision") if transform_input is None else bool(transform_input)
        self.torchvision_name = "googlenet" if layout == "torchvision" else None
        self.name = f"googlenet (layout={layout!r})"
        out_features = self.resolve_out_features(out_features, OUTPUT_NAMES, DEFAULT_OUTPUTS,
                                                 "googlenet")
        last = out_features[-1]
        self.input_transform = InputTransform() if self.transform_input else None

        self.conv1 = BasicConv2d(3, 64, 7, stride=2, padding=3, norm=norm)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        # The paper's LRN (Caffe: local_size 5, alpha 1e-4, beta 0.75).
        self.lrn1 = nn.LocalResponseNorm(5, 1e-4, 0.75) if layout == "paper" else nn.Identity()
        self.conv2 = BasicConv2d(64, 64, 1, norm=norm)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1, norm=norm)
        self.lrn2 = nn.LocalResponseNorm(5, 1e-4, 0.75) if layout == "paper" else nn.Identity()
        stages = [[self.conv1], [self.conv2, self.conv3]]
        channels = {"c2": 192}
        # The max-pool that opens each group of inception modules (torchvision names them
        # maxpool2..maxpool4).
        pools = {"c3": nn.MaxPool2d(3, stride=2, ceil_mode=True),
                 "c4": nn.MaxPool2d(3, stride=2, ceil_mode=True),
                 "c5": nn.MaxPool2d(2, stride=2, ceil_mode=True)}
        self._groups: list[tuple[str, str, tuple[str, ...]]] = []
        for index, (output, modules) in enumerate(STAGE_MODULES.items()):
            if OUTPUT_NAMES.index(output) > OUTPUT_NAMES.index(last):
                break
            pool_name = f"maxpool{index + 2}"
            self.add_module(pool_name, pools[output])
            stage = []
            for key in modules:
                block = Inception(*INCEPTION_TABLE[key], layout=layout, norm=norm)
                self.add_module(f"inception{key}", block)
                stage.append(block)
                channels[output] = block.out_channels
            stages.append(stage)
            self._groups.append((pool_name, output, tuple(f"inception{k}" for k in modules)))
        self._init_weights()
        self._finish_init(channels, out_features, stages, frozen_stages)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                _init_linear_or_conv(m, self.layout)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stem(self, x: Tensor) -> Tensor:
        """Input transform (if enabled), conv1, max-pool, (LRN), conv2, conv3, (LRN): the
        stride-4 ``c2`` map."""
        if self.input_transform is not None:
            x = self.input_transform(x)
        x = self.lrn1(self.maxpool1(self.conv1(x)))
        return self.lrn2(self.conv3(self.conv2(x)))

    def forward_features(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        x = self.stem(x)
        outputs = OrderedDict()
        if "c2" in self.out_channels:
            outputs["c2"] = x
        for pool_name, output, modules in self._groups:
            x = getattr(self, pool_name)(x)
            for name in modules:
                x = getattr(self, name)(x)
            if output in self.out_channels:
                outputs[output] = x
        return outputs

    def is_ignorable_weight(self, key: str) -> bool:
        head = key.split(".", 1)[0]
        if head in ("fc", "aux1", "aux2"):
            return True
        return head.startswith("inception") and not hasattr(self, head)

    def _pop_last_stage(self) -> nn.Module:
        pool_name, _, modules = self._groups.pop()
        stage = nn.Sequential(*(getattr(self, name) for name in (pool_name, *modules)))
        for name in (pool_name, *modules):
            delattr(self, name)
        return stage


class GoogLeNetOutputs(NamedTuple):
    """Training-mode output of :class:`GoogLeNetClassifier`: main logits and the auxiliary
    classifiers' logits after inception 4a (``aux1``) and 4d (``aux2``)."""

    logits: Tensor
    aux1: Tensor
    aux2: Tensor


class GoogLeNetClassifier(GoogLeNet):
    """GoogLeNet image classifier with the paper's two auxiliary classifiers.

    ``forward(x)`` returns logits ``[B, num_classes]`` in eval mode, and
    :class:`GoogLeNetOutputs` ``(logits, aux1, aux2)`` in training mode when ``aux_logits``;
    train on :func:`googlenet_loss`, which weights the auxiliary losses by 0.3 as the paper.
    With layout="torchvision" the state dict is exactly torchvision's
    ``googlenet(aux_logits=True)``.

    Args:
        num_classes (int): number of classes.
        aux_logits (bool): build the auxiliary classifiers (after 4a and 4d).
        dropout (float | None): before the final layer; default 0.4 (paper) or 0.2
            (torchvision).
        layout, norm, transform_input, frozen_stages: as :class:`GoogLeNet`.
    """

    def __init__(self, num_classes: int = 1000, layout: str = "torchvision", aux_logits: bool = True,
                 dropout: float | None = None, norm: str | None = None,
                 transform_input: bool | None = None, frozen_stages: int = -1):
        super().__init__(layout, norm, transform_input, frozen_stages, OUTPUT_NAMES[1:])
        self.num_classes = num_classes
        self.name = f"googlenet classifier (layout={layout!r})"
        self.aux_logits = aux_logits
        norm = self.norm_type
        if aux_logits:
            self.aux1 = InceptionAux(INCEPTION_TABLE["4b"][0], num_classes, norm)
            self.aux2 = InceptionAux(INCEPTION_TABLE["4e"][0], num_classes, norm)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout((0.4 if layout == "paper" else 0.2) if dropout is None else dropout)
        self.fc = nn.Linear(1024, num_classes)
        for m in [self.fc, *(self.aux1.modules() if aux_logits else ()),
                  *(self.aux2.modules() if aux_logits else ())]:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                _init_linear_or_conv(m, layout)

    def forward(self, x: Tensor) -> Tensor | GoogLeNetOutputs:
        x = check_backbone_input(x, self.name)
        x = self.stem(x)
        with_aux = self.training and self.aux_logits
        aux = {}
        for pool_name, _, modules in self._groups:
            x = getattr(self, pool_name)(x)
            for name in modules:
                x = getattr(self, name)(x)
                if with_aux and name == "inception4a":
                    aux["aux1"] = self.aux1(x)
                elif with_aux and name == "inception4d":
                    aux["aux2"] = self.aux2(x)
        logits = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        return GoogLeNetOutputs(logits, aux["aux1"], aux["aux2"]) if with_aux else logits

    def is_ignorable_weight(self, key: str) -> bool:
        return False


def googlenet_loss(outputs: Tensor | GoogLeNetOutputs, targets: Tensor,
                   aux_weight: float = 0.3) -> Tensor:
    """Cross-entropy of the main logits plus ``aux_weight`` times each auxiliary classifier's
    cross-entropy (the paper's 0.3); plain cross-entropy for eval-mode logits."""
    if isinstance(outputs, GoogLeNetOutputs):
        return (F.cross_entropy(outputs.logits, targets)
                + aux_weight * (F.cross_entropy(outputs.aux1, targets)
                                + F.cross_entropy(outputs.aux2, targets)))
    return F.cross_entropy(outputs, targets)


def googlenet(**options) -> GoogLeNet:
    """GoogLeNet: c3, c4, c5. Options as :class:`backbones.googlenet.GoogLeNet`
    (``layout="torchvision"`` by default, which the torchvision weights need)."""
    return GoogLeNet(**options)
