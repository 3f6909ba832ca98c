"""The contract every backbone family implements.

A backbone maps ``Tensor[B, 3, H, W]`` (float, normalised as its weights expect) to an
``OrderedDict[str, Tensor]`` of feature maps named ``cN``, where ``N`` gives the stride
``2**N`` relative to the input, in increasing stride order. It exposes

- ``out_channels: dict[str, int]`` and ``strides: dict[str, int]`` for the returned names,
- ``size_divisibility: int``: pad inputs to a multiple of it (the largest returned stride) and
  every ``cN`` is exactly ``H / 2**N`` by ``W / 2**N``,
- ``output_shape() -> dict[str, ShapeSpec]`` as detectron2's ``Backbone.output_shape``,
- shared options, where a family has the layers for them:
  ``norm = "bn" | "frozen_bn" | "gn"``, ``frozen_stages`` (mmdetection semantics: -1 freezes
  nothing, 0 the stem, k the stem and the first k stages, where stage k is the group of layers
  that produces ``c(k+1)``; frozen parameters get ``requires_grad=False`` and frozen stages'
  norm layers stay in eval mode so that their statistics never change) and ``out_features``
  (the subset of ``cN`` to return; layers after the last one requested are not built).
- ``fuse_norm_()``: folds every frozen or eval-mode BatchNorm into the convolution before it,
  in place, for inference.
- ``split_last_stage_()`` (ResNet and GoogLeNet families): detaches the stage producing the
  deepest output, in place, and returns it with its weights, for a C4 detector whose box head
  is the c5 stage.

A non-4D input, or one without 3 channels, raises ``ValueError`` naming the expected shape.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.fx
from torch import Tensor, nn

from backbones import weights as weights_io


@dataclass(frozen=True)
class ShapeSpec:
    """Channels and stride of one output feature map (detectron2's ShapeSpec fields)."""

    channels: int
    stride: int
    height: int | None = None
    width: int | None = None


def check_backbone_input(x: Tensor, name: str) -> Tensor:
    """Raise ValueError unless ``x`` is a floating-point ``[B, 3, H, W]`` tensor; returns ``x``."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} expects a Tensor[B, 3, H, W], got {type(x).__name__}; stack "
                         f"a list of [3, H, W] images with torch.stack (same size) first")
    if torch.jit.is_tracing():
        # Export (detect.export) checks its input itself; a shape test here would only be
        # frozen into the trace as a constant.
        return x
    if x.dim() != 4 or x.shape[1] != 3:
        hint = " (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else ""
        raise ValueError(f"{name} expects a Tensor[B, 3, H, W], got shape {list(x.shape)}{hint}")
    if not x.is_floating_point():
        raise ValueError(f"{name} expects floating-point images, got {x.dtype}; convert with "
                         f"x.float() / 255 and normalise as the weights expect")
    return x


# Symbolic tracing (used by fuse_norm_) records the check as one opaque call instead of
# evaluating shape comparisons on proxies.
torch.fx.wrap("check_backbone_input")


class Backbone(nn.Module):
    """Base class of feature extractors returning ``OrderedDict[str, Tensor]`` named ``cN``.

    Subclasses build their layers, then call :meth:`_finish_init` with the channels of every
    feature they can produce and their stage grouping, and implement :meth:`forward_features`.

    Attributes:
        out_channels (dict[str, int]): channels of each returned feature, e.g. ``{"c2": 256}``.
        strides (dict[str, int]): stride of each returned feature, ``2**N`` for ``cN``.
        size_divisibility (int): the largest returned stride.
        out_features (list[str]): the returned names, in increasing stride order.
        frozen_stages (int): see the module docstring.
        torchvision_name (str | None): the torchvision model whose weights
            ``weights="torchvision"`` loads.
        name (str): what error messages call this backbone, e.g. "resnet50".
    """

    torchvision_name: str | None = None
    name: str = "backbone"

    def __init__(self):
        super().__init__()
        self.out_features: list[str] = []
        self.out_channels: dict[str, int] = {}
        self.strides: dict[str, int] = {}
        self.size_divisibility: int = 0
        self.frozen_stages: int = -1
        self._frozen_modules: list[nn.Module] = []
        self._stages: list[list[nn.Module]] = []

    # ----------------------------------------------------------------------------- set-up
    @staticmethod
    def resolve_out_features(out_features: Sequence[str] | None, available: Sequence[str],
                             default: Sequence[str], owner: str) -> list[str]:
        """``out_features`` validated against ``available`` and sorted by stride."""
        if out_features is None:
            return list(default)
        if isinstance(out_features, str):
            out_features = [out_features]
        unknown = [name for name in out_features if name not in available]
        if unknown or not out_features:
            raise ValueError(f"{owner}: out_features={list(out_features)!r} must be a non-empty "
                             f"subset of {list(available)}")
        return sorted(set(out_features), key=lambda n: int(n[1:]))

    def _finish_init(self, channels: dict[str, int], out_features: Sequence[str],
                     stages: Sequence[Sequence[nn.Module]], frozen_stages: int) -> None:
        """Record the returned features and freeze ``stages[0..frozen_stages]``.

        ``channels`` maps every name in ``out_features`` to its channel count; ``stages[0]``
        is the stem and ``stages[k]`` the modules producing the k-th output stride group.
        """
        self._set_out_features(out_features, channels)
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages < len(stages):
            raise ValueError(
                f"{type(self).__name__}: frozen_stages={frozen_stages!r} must be an int in "
                f"-1..{len(stages) - 1} (-1 nothing, 0 the stem, k the stem and the first k "
                f"of the {len(stages) - 1} stages built for out_features={self.out_features})")
        self.frozen_stages = frozen_stages
        self._stages = [list(stage) for stage in stages]
        self._frozen_modules = [m for stage in stages[: frozen_stages + 1] for m in stage]
        for module in self._frozen_modules:
            for p in module.parameters():
                p.requires_grad_(False)
        self.train(self.training)

    def _set_out_features(self, out_features: Sequence[str], channels: dict[str, int]) -> None:
        self.out_features = list(out_features)
        self.out_channels = {name: channels[name] for name in self.out_features}
        self.strides = {name: 2 ** int(name[1:]) for name in self.out_features}
        self.size_divisibility = max(self.strides.values())

    def split_last_stage_(self) -> tuple[nn.Module, bool]:
        """Detach the stage that produces the deepest output, in place, and return
        ``(stage, frozen)``: a module mapping the previous output to the deepest one, with its
        weights (ResNet's ``layer4``; GoogLeNet's ``Sequential(maxpool4, inception5a,
        inception5b)``), and whether ``frozen_stages`` covered it (its parameters then keep
        ``requires_grad=False``; the new owner must keep its norm layers in eval mode).

        The backbone no longer builds, runs or returns that output; ``frozen_stages`` is
        capped at the stages left. The output before it must be returned too: build with
        ``out_features=[..., "c4", "c5"]`` to split off the c5 stage.
        """
        if len(self.out_features) < 2 or int(self.out_features[-2][1:]) != int(self.out_features[-1][1:]) - 1:
            raise ValueError(
                f"{self.name}: split_last_stage_() needs the output before the last one among "
                f"out_features (e.g. ['c4', 'c5']), got {self.out_features}")
        stage = self._pop_last_stage()
        stage_modules = self._stages.pop()
        frozen = self.frozen_stages >= len(self._stages)
        self.frozen_stages = min(self.frozen_stages, len(self._stages) - 1)
        self._frozen_modules = [m for m in self._frozen_modules if not any(m is s for s in stage_modules)]
        self._set_out_features(self.out_features[:-1], self.out_channels)
        return stage, frozen

    def _pop_last_stage(self) -> nn.Module:
        """Remove the last stage's modules from this backbone and return them as one module
        (families supporting :meth:`split_last_stage_` implement it)."""
        raise NotImplementedError(f"{self.name} cannot split off its last stage")

    def train(self, mode: bool = True):
        super().train(mode)
        # Frozen stages keep using (and never update) their normalisation statistics.
        for module in getattr(self, "_frozen_modules", ()):
            module.eval()
        return self

    # ---------------------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        """``x``: ``Tensor[B, 3, H, W]``. Returns ``OrderedDict`` of ``self.out_features``."""
        x = check_backbone_input(x, self.name)
        return self.forward_features(x)

    def forward_features(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        raise NotImplementedError

    def output_shape(self) -> dict[str, ShapeSpec]:
        """``{name: ShapeSpec(channels, stride)}`` for every returned feature."""
        return {name: ShapeSpec(channels=self.out_channels[name], stride=self.strides[name])
                for name in self.out_features}

    # ---------------------------------------------------------------------------- weights
    def is_ignorable_weight(self, key: str) -> bool:
        """Whether a weights-file key belongs to layers this backbone leaves out (classifier
        heads, stages after the last output): such keys are ignored and logged."""
        return False

    def is_new_weight(self, key: str) -> bool:
        """Whether a key of this backbone may be absent from reference weights (layers the
        family adds, such as deformable offsets): such keys keep their initialisation."""
        return False

    def load_weights(self, weights: str | os.PathLike | dict) -> weights_io.LoadReport:
        """Load ``"torchvision"`` (the DEFAULT ImageNet weights), a file path, or a state dict."""
        if isinstance(weights, str) and weights == "torchvision":
            if self.torchvision_name is None:
                raise weights_io.WeightsError(
                    f"{type(self).__name__} with these options has no torchvision weights; "
                    f"pass weights=None or a path")
            state = weights_io.torchvision_state_dict(self.torchvision_name)
            source = f"torchvision weights of {self.torchvision_name}"
        elif isinstance(weights, (str, os.PathLike)):
            state = weights_io.read_state_dict(weights)
            source = f"weights file {os.fspath(weights)}"
        elif isinstance(weights, dict):
            state = weights_io.unwrap_state_dict(weights, "the given state dict")
            source = "the given state dict"
        else:
            raise TypeError(f"weights must be None, 'torchvision', a path or a state dict, "
                            f"got {type(weights).__name__}")
        return weights_io.load_weights(self, state, source, self.is_ignorable_weight,
                                       self.is_new_weight)

    # ---------------------------------------------------------------------------- fusion
    def fuse_norm_(self) -> "Backbone":
        """Fold every FrozenBatchNorm2d, and every BatchNorm2d in eval mode, into the
        convolution that feeds it, in place; the norm becomes ``nn.Identity``.

        The result computes the same features (to float rounding) with one op less per
        conv; it is meant for inference: the state dict loses the norm keys. GroupNorm
        depends on the input and stays. Raises RuntimeError if a BatchNorm is in training
        mode (call ``.eval()`` first). Returns ``self``.
        """
        from backbones.fuse import fuse_conv_norm_

        fuse_conv_norm_(self)
        return self

    def extra_repr(self) -> str:
        return (f"out_features={self.out_features}, frozen_stages={self.frozen_stages}")




class PooledClassifierMixin:
    """The ImageNet classifier a backbone was cut from: its deepest feature map, global
    average pooling and one linear layer; ``forward(x)`` returns logits ``[B, num_classes]``
    and ``forward_features`` still returns the features. Its ``fc`` keys are weights of
    this model (the plain backbone ignores them). Put it before the backbone class in the
    bases and call :meth:`_add_classifier` at the end of ``__init__``."""

    def _add_classifier(self, in_features: int, num_classes: int) -> None:
        self.num_classes = int(num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(int(in_features), self.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = check_backbone_input(x, self.name)
        deepest = next(reversed(self.forward_features(x).values()))
        return self.fc(torch.flatten(self.avgpool(deepest), 1))

    def is_ignorable_weight(self, key: str) -> bool:
        return False
