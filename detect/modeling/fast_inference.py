"""Inference-only rewrites that :meth:`TwoStageDetector.optimize_for_inference` applies on CPU.

Contract
--------
``fuse_conv_activations_(module) -> int`` rewrites, in place, convolutions followed by a
ReLU (and, in ResNet blocks, by the residual addition and ReLU) into single oneDNN
primitives with post-ops (``torch.ops.mkldnn._convolution_pointwise``), so that each
activation is applied while the convolution's output is still in cache instead of in a
second pass over memory. It must run after BatchNorm folding (the norm layers are
``nn.Identity`` by then). It returns the number of convolutions fused.

- In any ``nn.Sequential``: ``Conv2d, [Identity...], ReLU`` -> fused conv, the ReLU becomes
  ``Identity`` (the container keeps its length, so code that indexes it still works).
- ResNet ``BasicBlock`` / ``Bottleneck`` of :mod:`backbones.resnet` with folded norms:
  ``conv + ReLU`` and ``conv + residual + ReLU`` fused; deformable convs stay as they are.
- The ResNet stem's ``conv1`` and ReLU.
- FPN lateral 1x1 convs (alone, or followed by the ``Identity`` left by a folded norm): the
  top-down addition becomes their post-op.

The fused convolutions keep their parameters under the same names, so the numbers are
those of the unfused model (oneDNN's post-ops compute ``max(conv(x) + residual, 0)`` in
the same float32 arithmetic; the tests compare). Outside CPU float32 (autocast, CUDA) a
fused module runs the plain ``F.conv2d`` sequence.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def mkldnn_fusion_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class FusedConv2d(nn.Module):
    """``relu(conv(x) [+ residual])`` (or without ReLU) as one oneDNN primitive on CPU float32.

    Takes over ``conv``'s ``weight`` and ``bias`` parameters (same names in the state dict).
    """

    accepts_residual = True

    def __init__(self, conv: nn.Conv2d, relu: bool):
        super().__init__()
        if not isinstance(conv.padding, tuple) or conv.padding_mode != "zeros":
            raise ValueError("only explicit zero padding can be fused")
        self.weight = conv.weight
        self.bias = conv.bias
        self.stride, self.padding, self.dilation, self.groups = list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups
        self.relu = relu

    def extra_repr(self) -> str:
        return (
            f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, kernel_size={tuple(self.weight.shape[2:])}, "
            f"stride={tuple(self.stride)}, padding={tuple(self.padding)}, relu={self.relu}"
        )

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        fusable = x.is_cpu and x.dtype == torch.float32 and self.weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
        if fusable:
            if residual is None:
                return torch.ops.mkldnn._convolution_pointwise(
                    x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
                    "relu" if self.relu else "none", [], "",
                )
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, residual.to(x.dtype), self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
                "add", 1.0, "relu" if self.relu else None, [], "",
            )
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if residual is not None:
            y = y + residual
        return F.relu(y) if self.relu else y


def _is_folded(module: nn.Module | None) -> bool:
    return module is None or isinstance(module, nn.Identity)


def _plain_conv(module: nn.Module) -> bool:
    return type(module) is nn.Conv2d and module.padding_mode == "zeros" and isinstance(module.padding, tuple)


class FusedBottleneck(nn.Module):
    """A ResNet bottleneck with folded norms: conv1+ReLU, conv2+ReLU, conv3+residual+ReLU."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv1 = FusedConv2d(block.conv1, relu=True)
        self.conv2 = FusedConv2d(block.conv2, relu=True) if _plain_conv(block.conv2) else block.conv2
        self.conv2_relu = not isinstance(self.conv2, FusedConv2d)
        self.conv3 = FusedConv2d(block.conv3, relu=True)
        self.downsample = block.downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        if self.conv2_relu:
            out = F.relu(out)
        return self.conv3(out, identity)


class FusedBasicBlock(nn.Module):
    """A ResNet basic block with folded norms: conv1+ReLU, conv2+residual+ReLU."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv1 = FusedConv2d(block.conv1, relu=True)
        self.conv2 = FusedConv2d(block.conv2, relu=True)
        self.downsample = block.downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.conv2(self.conv1(x), identity)


def _fuse_sequential(seq: nn.Sequential) -> int:
    children = list(seq.children())
    fused = 0
    for i, child in enumerate(children):
        if not _plain_conv(child):
            continue
        j = i + 1
        while j < len(children) and isinstance(children[j], nn.Identity):
            j += 1
        if j < len(children) and type(children[j]) is nn.ReLU:
            seq[i] = FusedConv2d(child, relu=True)
            seq[j] = nn.Identity()
            fused += 1
    return fused


def _fuse_resnet_blocks(root: nn.Module) -> int:
    try:
        from backbones.resnet import BasicBlock, Bottleneck
    except ImportError:  # pragma: no cover - backbones ships with the library
        return 0
    fused = 0
    for module in list(root.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        for i, block in enumerate(list(module.children())):
            if isinstance(block, Bottleneck) and all(_is_folded(getattr(block, n)) for n in ("bn1", "bn2", "bn3")):
                if _plain_conv(block.conv1) and _plain_conv(block.conv3):
                    module[i] = FusedBottleneck(block)
                    fused += 2 + isinstance(module[i].conv2, FusedConv2d)
            elif isinstance(block, BasicBlock) and all(_is_folded(getattr(block, n)) for n in ("bn1", "bn2")):
                if _plain_conv(block.conv1) and _plain_conv(block.conv2):
                    module[i] = FusedBasicBlock(block)
                    fused += 2
    # The stem: conv1 -> bn1 (folded) -> relu, called by the backbone's own forward.
    for module in list(root.modules()):
        conv, norm, relu = (getattr(module, n, None) for n in ("conv1", "bn1", "relu"))
        if _plain_conv(conv) if conv is not None else False:
            if _is_folded(norm) and type(relu) is nn.ReLU and hasattr(module, "layer1"):
                module.conv1 = FusedConv2d(conv, relu=True)
                module.relu = nn.Identity()
                fused += 1
    return fused


def _fuse_fpn_laterals(root: nn.Module) -> int:
    from detect.modeling.fpn import FPN, lateral_conv

    fused = 0
    for module in root.modules():
        if isinstance(module, FPN):
            for block in module.inner_blocks:
                conv = lateral_conv(block)
                if conv is not None and _plain_conv(conv):
                    block[0] = FusedConv2d(conv, relu=False)
                    fused += 1
    return fused


@torch.no_grad()
def fold_sequential_norms_(module: nn.Module) -> int:
    """Fold ``Conv2d -> BatchNorm2d / FrozenBatchNorm2d`` pairs that sit next to each other in
    an ``nn.Sequential`` (torchvision's ``Conv2dNormActivation``: FPN v2, conv box heads) into
    the convolution with :func:`backbones.fuse.fold_norm_into_conv_`; the norm becomes
    ``Identity``. A BatchNorm2d in training mode raises RuntimeError (call ``.eval()``
    first). Returns the number folded."""
    from backbones.fuse import fold_norm_into_conv_
    from backbones.norm import FrozenBatchNorm2d

    folded = 0
    for seq in list(module.modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.children())
        for i in range(len(children) - 1):
            conv, norm = children[i], children[i + 1]
            if _plain_conv(conv) and isinstance(norm, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                fold_norm_into_conv_(conv, norm)
                seq[i + 1] = nn.Identity()
                folded += 1
    return folded


@torch.no_grad()
def fuse_conv_activations_(module: nn.Module) -> int:
    """Fuse conv + ReLU (+ residual) into oneDNN primitives in place (module docstring)."""
    if not mkldnn_fusion_available():
        return 0
    fused = _fuse_resnet_blocks(module) + _fuse_fpn_laterals(module)
    for child in list(module.modules()):
        if isinstance(child, nn.Sequential):
            fused += _fuse_sequential(child)
    return fused
