"""ResNet 18/34/50/101/152 (He et al., 2016) as a backbone and as an image classifier.

Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1``..``layer4``, each block's
``conv1/bn1/conv2/bn2[/conv3/bn3]`` and ``downsample.0/1``, the classifier's ``fc``), so
torchvision ImageNet state dicts load unchanged. Bottleneck blocks put the stride on the 3x3
convolution ("ResNet v1.5"), as torchvision, detectron2 and mmdetection (pytorch style) do.

Outputs ``c2`` (after layer1), ``c3``, ``c4``, ``c5`` (after layer4): for an input of size H,
``cN`` is ``ceil(H / 2**N)`` high (every stride-2 layer pads so that it rounds up).

Dilation (bottleneck depths 50/101/152), as torchvision's ``replace_stride_with_dilation``:
``replace_stride_with_dilation=(False, True, True)`` (one flag for each of layer2, layer3,
layer4) replaces a stage's stride 2 by stride 1 and doubles the running dilation, which that
stage's 3x3 convolutions use from its second block on (the first block keeps the previous
dilation), with padding = dilation. Parameter names and shapes are unchanged (torchvision weights
load). The output names stay ``c2..c5`` but :attr:`strides` gives their real strides, e.g.
``{"c2": 4, "c3": 8, "c4": 8, "c5": 8}`` for ``(False, True, True)`` (torchvision's FCN and
DeepLab trunk at output stride 8) and ``size_divisibility`` is the largest of them.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from torch import Tensor, nn

from backbones.base import Backbone, PooledClassifierMixin
from backbones.norm import FrozenBatchNorm2d, build_norm, check_norm


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int, norm: str,
                 conv2: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = build_norm(norm, channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv2 if conv2 is not None else nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = build_norm(norm, channels)
        self.downsample = _downsample(in_channels, channels, stride, norm)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # The shortcut is computed last so that its (wider) output is not held in memory
        # while the main branch runs.
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, with a residual connection."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int, norm: str,
                 conv2: nn.Module | None = None):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = build_norm(norm, channels)
        self.conv2 = conv2 if conv2 is not None else nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn2 = build_norm(norm, channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = build_norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, channels, stride, norm, self.expansion)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)  # shortcut last, as above
        return self.relu(out)


def _downsample(in_channels: int, channels: int, stride: int, norm: str,
                expansion: int = 1) -> nn.Sequential | None:
    out_channels = channels * expansion
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                         build_norm(norm, out_channels))


#: depth -> (block, blocks per stage)
ARCHITECTURES: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
STAGE_NAMES = ("c2", "c3", "c4", "c5")


class ResNet(Backbone):
    """ResNet feature extractor returning ``c2``..``c5`` (strides 4, 8, 16, 32).

    Args:
        depth (int): 18, 34, 50, 101 or 152.
        norm (str): "bn" (BatchNorm2d), "frozen_bn" (:class:`FrozenBatchNorm2d`, what
            torchvision's and detectron2's detectors use) or "gn" (GroupNorm, 32 groups).
        frozen_stages (int): -1 freezes nothing, 0 the stem (conv1, bn1), k the stem and
            layer1..layerk (mmdetection's convention; torchvision's
            ``trainable_layers=3`` is ``frozen_stages=1``).
        out_features (Sequence[str] | None): subset of ``("c2", "c3", "c4", "c5")`` to
            return; default all four. Layers after the last one are not built, and their
            keys in a weights file are ignored.
        zero_init_residual (bool): start the last norm of every block at zero, so that each
            block begins as the identity (Goyal et al., 2017); for training from scratch.
        replace_stride_with_dilation (Sequence[bool] | None): three flags for layer2..layer4,
            torchvision's semantics (see the module docstring); bottleneck depths only.

    Channels: ``c2..c5`` = 64, 128, 256, 512 for depths 18/34 and 256, 512, 1024, 2048 for
    50/101/152. ``weights="torchvision"`` loads torchvision's ``resnet{depth}`` ImageNet weights.
    """

    def __init__(self, depth: int = 50, norm: str = "bn", frozen_stages: int = -1,
                 out_features: Sequence[str] | None = None, zero_init_residual: bool = False,
                 conv2_factory: Callable[[int, int, int, int], nn.Module | None] | None = None,
                 replace_stride_with_dilation: Sequence[bool] | None = None):
        super().__init__()
        if depth not in self.architectures:
            raise ValueError(f"{self.family} depth={depth!r} is not one of {sorted(self.architectures)}")
        dilate = self._check_dilation(replace_stride_with_dilation, depth)
        self.depth = depth
        self.norm_type = check_norm(norm)
        self.torchvision_name = f"resnet{depth}" if self.has_torchvision_weights else None
        self.name = f"{self.family.lower().replace('-', '')}{depth}"
        block, blocks_per_stage = self.architectures[depth]
        out_features = self.resolve_out_features(out_features, STAGE_NAMES, STAGE_NAMES, self.name)
        self.num_stages = STAGE_NAMES.index(out_features[-1]) + 1

        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = build_norm(norm, 64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels, in_channels, stages = {}, 64, [[self.conv1, self.bn1]]
        dilation, output_stride, self._feature_strides = 1, 4, {}
        for index in range(self.num_stages):
            width = 64 * 2 ** index
            stride = 1 if index == 0 else 2
            previous_dilation = dilation
            if index > 0 and dilate[index - 1]:
                dilation, stride = dilation * stride, 1
            output_stride *= stride
            blocks = []
            for b in range(blocks_per_stage[index]):
                block_stride = stride if b == 0 else 1
                block_dilation = previous_dilation if b == 0 else dilation
                # The 3x3 conv2 carries the stride in a Bottleneck, conv1 in a BasicBlock.
                conv2_stride = block_stride if issubclass(block, Bottleneck) else 1
                conv2 = None
                if conv2_factory is not None:
                    conv2 = conv2_factory(index, width, conv2_stride, block_dilation)
                elif block_dilation != 1:
                    conv2 = nn.Conv2d(width, width, 3, conv2_stride, block_dilation,
                                      dilation=block_dilation, bias=False)
                blocks.append(self._make_block(block, in_channels, width, block_stride, norm, conv2))
                in_channels = width * block.expansion
            layer = nn.Sequential(*blocks)
            self.add_module(f"layer{index + 1}", layer)
            channels[STAGE_NAMES[index]] = in_channels
            self._feature_strides[STAGE_NAMES[index]] = output_stride
            stages.append([layer])
        self.replace_stride_with_dilation = tuple(dilate)
        self._layer_to_output = {f"layer{i + 1}": STAGE_NAMES[i] for i in range(self.num_stages)}
        self._init_weights(zero_init_residual)
        self._finish_init(channels, out_features, stages, frozen_stages)

    # What a variant (SE-ResNet) changes: its name, its depth -> (block, blocks per stage)
    # table and how a block is made; the stem, stages, freezing and forward stay ResNet's.
    family = "ResNet"
    has_torchvision_weights = True

    @property
    def architectures(self) -> dict:
        return ARCHITECTURES

    def _make_block(self, block, in_channels: int, width: int, stride: int, norm: str, conv2) -> nn.Module:
        return block(in_channels, width, stride, norm, conv2)

    def _check_dilation(self, flags: Sequence[bool] | None, depth: int) -> tuple[bool, bool, bool]:
        if flags is None:
            return (False, False, False)
        flags = tuple(flags)
        if len(flags) != 3 or not all(isinstance(f, bool) for f in flags):
            raise ValueError(f"{self.family}: replace_stride_with_dilation={list(flags)!r} must be three "
                             f"booleans, one for each of layer2, layer3, layer4 (e.g. (False, True, True))")
        if any(flags) and not issubclass(self.architectures[depth][0], Bottleneck):
            raise ValueError(f"{self.family}-{depth}: dilation needs bottleneck blocks (depth 50, 101 or "
                             f"152), as in torchvision; got replace_stride_with_dilation={list(flags)}")
        return flags

    def _set_out_features(self, out_features: Sequence[str], channels: dict[str, int]) -> None:
        super()._set_out_features(out_features, channels)
        # Dilated stages keep their name but not the stride 2**N.
        self.strides = {name: self._feature_strides[name] for name in self.out_features}
        self.size_divisibility = max(self.strides.values())

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                last = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else (
                    getattr(m, "bn2", None) if isinstance(m, BasicBlock) else None)
                if isinstance(last, (nn.BatchNorm2d, nn.GroupNorm)):
                    nn.init.zeros_(last.weight)
                elif isinstance(last, FrozenBatchNorm2d):
                    last.weight.zero_()

    def stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_features(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        x = self.stem(x)
        outputs = OrderedDict()
        for layer_name, output_name in self._layer_to_output.items():
            x = getattr(self, layer_name)(x)
            if output_name in self.out_channels:
                outputs[output_name] = x
        return outputs

    def is_ignorable_weight(self, key: str) -> bool:
        if key.startswith("fc."):
            return True
        head = key.split(".", 1)[0]
        return head.startswith("layer") and head not in self._layer_to_output

    def _pop_last_stage(self) -> nn.Module:
        name = f"layer{self.num_stages}"
        stage = getattr(self, name)
        delattr(self, name)
        del self._layer_to_output[name]
        self.num_stages -= 1
        return stage


class ResNetClassifier(PooledClassifierMixin, ResNet):
    """ResNet image classifier: the backbone, global average pooling and a linear layer.

    ``forward(x)`` returns logits ``[B, num_classes]``. Its state dict is exactly
    torchvision's ``resnet{depth}(num_classes=...)``. ``forward_features`` still returns
    ``c2``..``c5``. Other arguments as :class:`ResNet`.
    """

    def __init__(self, depth: int = 50, num_classes: int = 1000, norm: str = "bn",
                 frozen_stages: int = -1, zero_init_residual: bool = False):
        super().__init__(depth, norm, frozen_stages, None, zero_init_residual)
        self.name = f"resnet{depth} classifier"
        self._add_classifier(self.out_channels["c5"], num_classes)


def _builder(depth: int):
    def build(**options) -> ResNet:
        return ResNet(depth, **options)

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"ResNet-{depth}: c2..c5. Options as :class:`backbones.resnet.ResNet`."
    return build


resnet18, resnet34, resnet50, resnet101, resnet152 = (_builder(d) for d in (18, 34, 50, 101, 152))
