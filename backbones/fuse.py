"""Folding BatchNorm into the preceding convolution, in place.

Contract: ``fuse_conv_norm_(module)`` finds, by symbolic tracing, every convolution whose
output feeds only a BatchNorm2d (in eval mode) or a FrozenBatchNorm2d, rescales the
convolution's weight and bias so that it computes ``norm(conv(x))``, and replaces the norm
by ``nn.Identity`` at the same attribute path. A convolution or norm module that is called
more than once is left alone, as is every GroupNorm. Returns the number of pairs folded.

For ``y = W * x + b`` followed by ``(y - mean) / sqrt(var + eps) * gamma + beta`` the folded
convolution is ``W' = W * s`` and ``b' = (b - mean) * s + beta`` with
``s = gamma / sqrt(var + eps)`` per output channel. :func:`fold_norm_into_conv_` does this
rewrite for one ``(conv, norm)`` pair; it is also what the detector's inference path uses
for the conv + norm blocks of an FPN or a conv box head.
"""
from __future__ import annotations

from collections import Counter

import torch
import torch.fx
from torch import nn

from backbones.norm import FrozenBatchNorm2d


class _LeafTracer(torch.fx.Tracer):
    """Keeps norms and convolutions as leaves, including backbone-defined ones: any module
    owning a 4D ``weight`` parameter itself (the deformable convolution, whose offset conv is
    a child)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (FrozenBatchNorm2d, nn.modules.batchnorm._NormBase)):
            return True
        own_weight = m._parameters.get("weight")
        if own_weight is not None and own_weight.dim() == 4:
            return True
        return super().is_leaf_module(m, qualname)


def _is_conv(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return isinstance(weight, nn.Parameter) and weight.dim() == 4 and not isinstance(
        module, nn.ConvTranspose2d) and hasattr(module, "bias")


def _norm_scale_shift(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(norm, FrozenBatchNorm2d):
        return norm.scale_and_shift()
    if norm.training:
        raise RuntimeError(
            "cannot fold a BatchNorm2d in training mode into its convolution: it normalises with "
            "batch statistics and would still update its running ones; call .eval() first")
    if norm.running_var is None:
        raise RuntimeError(
            "cannot fold a BatchNorm2d with track_running_stats=False: it normalises with the "
            "statistics of each batch, even in eval mode")
    weight = norm.weight if norm.affine else torch.ones_like(norm.running_var)
    bias = norm.bias if norm.affine else torch.zeros_like(norm.running_var)
    scale = weight * torch.rsqrt(norm.running_var + norm.eps)
    return scale, bias - norm.running_mean * scale


@torch.no_grad()
def fold_norm_into_conv_(conv: nn.Module, norm: nn.Module) -> None:
    """Rescale ``conv``'s weight and bias in place so that it computes ``norm(conv(x))``.

    ``norm`` is a :class:`FrozenBatchNorm2d` or an eval-mode ``nn.BatchNorm2d`` (a BatchNorm
    in training mode raises RuntimeError); the caller replaces it by ``nn.Identity``. The new
    parameters keep the convolution's dtype and ``requires_grad`` (a bias is added if the
    convolution had none).
    """
    scale, shift = _norm_scale_shift(norm)
    dtype = conv.weight.dtype
    weight = conv.weight * scale.reshape(-1, 1, 1, 1).to(dtype)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    requires_grad = conv.weight.requires_grad
    conv.weight = nn.Parameter(weight, requires_grad=requires_grad)
    conv.bias = nn.Parameter(bias.to(dtype), requires_grad=requires_grad)


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent_path) if parent_path else root, name, module)


@torch.no_grad()
def fuse_conv_norm_(root: nn.Module) -> int:
    """Fold eval-mode / frozen BatchNorms into their convolutions (see module docstring)."""
    try:
        graph = _LeafTracer().trace(root)
    except Exception as exc:
        raise RuntimeError(f"fuse_norm_(): cannot trace {type(root).__name__} to find "
                           f"conv -> norm pairs ({type(exc).__name__}: {exc})") from exc
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    folded = 0
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1:
            continue
        norm = root.get_submodule(node.target)
        if not isinstance(norm, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            continue
        producer = node.args[0]
        if not (isinstance(producer, torch.fx.Node) and producer.op == "call_module"):
            continue
        conv = root.get_submodule(producer.target)
        if (not _is_conv(conv) or len(producer.users) != 1 or calls[producer.target] != 1
                or calls[node.target] != 1 or conv.weight.shape[0] != norm.running_var.shape[0]):
            continue
        fold_norm_into_conv_(conv, norm)
        _set_submodule(root, node.target, nn.Identity())
        folded += 1
    return folded
