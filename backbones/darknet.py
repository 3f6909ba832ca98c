"""The YOLOv1 trunks (Redmon et al., "You Only Look Once", CVPR 2016) as backbones.

Two registered names:

- ``"yolov1_darknet"``: the first 20 convolutional layers of the paper's Figure 3, the part
  the paper pre-trains on ImageNet (with an average-pool and a fully connected layer on top,
  :class:`DarknetClassifier`, at 224 x 224; 88% top-5 on the ImageNet 2012 val set in the
  paper). Layers (k x k x filters, stride; every convolution "same"-padded, leaky ReLU 0.1):

  ======  ==================================================  =========  ========
  output  layers                                              channels   stride
  ======  ==================================================  =========  ========
  c1      7x7x64 s2                                           64         2
  c2      maxpool 2x2 s2, 3x3x192                             192        4
  c3      maxpool, 1x1x128, 3x3x256, 1x1x256, 3x3x512          512        8
  c4      maxpool, {1x1x256, 3x3x512} x 4, 1x1x512, 3x3x1024   1024       16
  c5      maxpool, {1x1x512, 3x3x1024} x 2                     1024       32
  ======  ==================================================  =========  ========

  The detection network (``build_detector("yolov1")``) adds four 3x3x1024 convolutions (the
  second with stride 2) and two FC layers on ``c5``: 24 convolutions in all.
- ``"fast_yolo_darknet"``: Fast YOLO's nine convolutions (the paper's section 2, "Fast YOLO
  uses a neural network with fewer convolutional layers (9 instead of 24) and fewer filters
  in those layers"; darknet's original ``yolo-tiny.cfg``): 3x3 convolutions of 16, 32, 64,
  128, 256, 512 filters, each followed by a 2x2 stride-2 max-pool, then three 3x3x1024.
  Outputs ``c1`` (after the 32-filter conv, stride 2) .. ``c6`` (the three 1024 convs,
  stride 64: 7 x 7 at 448); the 16-filter conv at stride 1 is part of the stem.

Options: ``norm=None`` (the paper: convolutions with a bias, no normalisation) or
``"bn" | "frozen_bn" | "gn"`` (convolution without bias, then the norm; darknet's later
``yolov1.cfg`` uses BatchNorm), ``frozen_stages``, ``out_features``. Max-pools round up
(darknet's ``maxpool`` pads by ``size - 1``), so ``cN`` is ``ceil(H / 2**N)`` high for any
``H``. Parameter names: ``features.<i>.conv`` / ``.bn`` (one ``nn.Sequential`` in layer order,
max-pools included) and, for the classifier, ``fc``; a classifier state dict loads into the
backbone (its ``fc`` keys are ignored). There are no torchvision weights for these networks.
Weights are initialised He-normal for leaky ReLU 0.1 (fan-in), biases zero.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from backbones.base import Backbone, PooledClassifierMixin
from backbones.norm import build_norm, check_norm

LEAKY_SLOPE = 0.1

# (kernel, filters, stride) per convolution, "M" a 2x2 stride-2 max-pool; grouped by output.
YOLOV1_LAYERS: "OrderedDict[str, list]" = OrderedDict([
    ("c1", [(7, 64, 2)]),
    ("c2", ["M", (3, 192, 1)]),
    ("c3", ["M", (1, 128, 1), (3, 256, 1), (1, 256, 1), (3, 512, 1)]),
    ("c4", ["M", *[(1, 256, 1), (3, 512, 1)] * 4, (1, 512, 1), (3, 1024, 1)]),
    ("c5", ["M", *[(1, 512, 1), (3, 1024, 1)] * 2]),
])
FAST_YOLO_LAYERS: "OrderedDict[str, list]" = OrderedDict([
    ("c1", [(3, 16, 1), "M", (3, 32, 1)]),
    ("c2", ["M", (3, 64, 1)]),
    ("c3", ["M", (3, 128, 1)]),
    ("c4", ["M", (3, 256, 1)]),
    ("c5", ["M", (3, 512, 1)]),
    ("c6", ["M", (3, 1024, 1), (3, 1024, 1), (3, 1024, 1)]),
])
ARCHITECTURES = {"yolov1": YOLOV1_LAYERS, "fast_yolo": FAST_YOLO_LAYERS}


def init_leaky_(module: nn.Module) -> None:
    """He-normal (fan-in, leaky ReLU 0.1) weights and zero biases for every conv and linear."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=LEAKY_SLOPE, mode="fan_in", nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ConvLeaky(nn.Module):
    """``k x k`` convolution ("same" padding), optional norm, leaky ReLU 0.1.

    Submodules ``conv`` (with a bias when ``norm is None``), ``bn`` (with a norm), ``act``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 norm: str | None = None, activation: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                              bias=norm is None)
        if norm is not None:
            self.bn = build_norm(norm, out_channels)
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True) if activation else nn.Identity()
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if hasattr(self, "bn"):
            x = self.bn(x)
        return self.act(x)


class Darknet(Backbone):
    """A YOLOv1 trunk (see the module docstring).

    Args:
        arch: ``"yolov1"`` (the paper's first 20 convolutions) or ``"fast_yolo"`` (nine).
        norm: ``None`` (the paper) or ``"bn" | "frozen_bn" | "gn"``.
        frozen_stages: -1 nothing, 0 the stem (``c1``), k the stem and the next k groups.
        out_features: the ``cN`` to return; default every output from ``c2`` (yolov1: c2..c5,
            fast_yolo: c2..c6). Layers after the last requested one are not built.
    """

    def __init__(self, arch: str = "yolov1", norm: str | None = None, frozen_stages: int = -1,
                 out_features: Sequence[str] | None = None):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"Darknet arch={arch!r} is not one of {tuple(ARCHITECTURES)}")
        if norm is not None:
            norm = check_norm(norm)
        layout = ARCHITECTURES[arch]
        self.arch = arch
        self.norm_type = norm
        self.name = f"{arch}_darknet"
        available = list(layout)
        out_features = self.resolve_out_features(out_features, available, available[1:], self.name)
        last = out_features[-1]
        layers: list[nn.Module] = []
        stages: list[list[nn.Module]] = []
        channels: dict[str, int] = {}
        self._ends: dict[str, int] = {}  # output name -> index of its last layer in features
        in_channels = 3
        for output, spec in layout.items():
            stage = []
            for item in spec:
                if item == "M":
                    layer = nn.MaxPool2d(2, 2, ceil_mode=True)
                else:
                    kernel, filters, stride = item
                    layer = ConvLeaky(in_channels, filters, kernel, stride, norm)
                    in_channels = filters
                    stage.append(layer)
                layers.append(layer)
            channels[output] = in_channels
            stages.append(stage)
            self._ends[output] = len(layers) - 1
            if output == last:
                break
        self.features = nn.Sequential(*layers)
        init_leaky_(self)
        self._finish_init(channels, out_features, stages, frozen_stages)

    def forward_features(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        outputs = OrderedDict()
        ends = {index: name for name, index in self._ends.items() if name in self.out_channels}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in ends:
                outputs[ends[index]] = x
        return outputs

    def is_ignorable_weight(self, key: str) -> bool:
        head, _, rest = key.partition(".")
        if head == "fc":
            return True
        return head == "features" and int(rest.split(".", 1)[0]) >= len(self.features)


class DarknetClassifier(PooledClassifierMixin, Darknet):
    """The paper's ImageNet pre-training network: the trunk, global average pooling and one
    fully connected layer to ``num_classes`` logits (``forward(x) -> [B, num_classes]``).
    Its state dict loads into :class:`Darknet` of the same ``arch`` and ``norm``."""

    def __init__(self, num_classes: int = 1000, arch: str = "yolov1", norm: str | None = None,
                 frozen_stages: int = -1):
        super().__init__(arch, norm, frozen_stages, out_features=[list(ARCHITECTURES[arch])[-1]])
        self.name = f"{arch}_darknet classifier"
        self._add_classifier(self.out_channels[self.out_features[-1]], num_classes)
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc.bias)


def yolov1_darknet(**options) -> Darknet:
    """The paper's first 20 convolutions (c1..c5, stride 32). Options as :class:`Darknet`."""
    return Darknet("yolov1", **options)


def fast_yolo_darknet(**options) -> Darknet:
    """Fast YOLO's nine convolutions (c1..c6, stride 64). Options as :class:`Darknet`."""
    return Darknet("fast_yolo", **options)
