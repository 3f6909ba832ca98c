"""Any torchvision classification model as a backbone: ``build_backbone("tv:<name>")``.

The model is built by ``torchvision.models.get_model(name, weights=None, **kwargs)``; its
feature trunk (the layers before global pooling, e.g. ``features`` for VGG/MobileNet/
EfficientNet/ConvNeXt, ``conv1``..``layer4`` for ResNets) is kept under torchvision's own
attribute names, so torchvision state dicts load unchanged, and its classifier is dropped
(its keys in a weights file are ignored and logged).

Stages map to ``cN`` by stride: the trunk runs as a sequence of units (the children of
``features`` and the like), the stride of each unit's output is measured once at build time
(on the meta device, without computing), and ``cN`` is the output of the **last unit at
stride 2**N**. So ``tv:vgg16``'s ``c4`` is conv5_3 + ReLU (``features.29``, the feature the
Faster R-CNN paper uses) and its ``c5`` the last max-pool; ``tv:resnet50``'s ``c2..c5`` are
``layer1..layer4``; ``tv:mobilenet_v3_large``'s ``c4`` is ``features.12``. Every available
``cN`` is listed by :attr:`TorchvisionBackbone.available_channels`; ``c2`` and above are
returned by default. Swin's channels-last trunk outputs are returned as ``[B, C, H, W]``
views. ViT has no multi-stride feature maps and is rejected.

``cn_unit="first"`` takes ``cN`` from the **first** unit at stride 2**N instead: the layer that
enters that stride, i.e. VGG's and AlexNet's max-pools, so ``tv:vgg16`` then returns pool3
(``features.16``) as ``c3``, pool4 (``features.23``) as ``c4`` and pool5 (``features.30``) as
``c5``, the taps of FCN-8s/16s/32s. The default ``cn_unit="last"`` is unchanged.

Classifier fully connected layers (VGG and AlexNet, whose classifier is an MLP):
``classifier_fc=True`` keeps fc6 and fc7, registered under torchvision's own ``classifier``
container (VGG ``classifier.0`` / ``classifier.3``, AlexNet ``classifier.1`` / ``classifier.4``),
so a torchvision state dict loads their ImageNet weights without renaming; fc8 (the 1000-way
layer), the ReLUs and dropouts are dropped. ``backbone.classifier_fc`` is then
``nn.ModuleDict({"fc6": nn.Linear, "fc7": nn.Linear})`` (the same modules, not copies; not
registered a second time, so no key appears twice in the state dict) and
``backbone.classifier_input`` the ``(C, h, w)`` its flattened input has (VGG ``(512, 7, 7)``,
AlexNet ``(256, 6, 6)``: torchvision's adaptive average pool output, which the user applies,
e.g. as RoI pooling to 7x7 or as fc6-as-a-7x7-convolution). ``forward`` never runs them: it
returns the same features as without them. Both attributes are ``None`` otherwise (the
default, and families without an MLP classifier, for which ``classifier_fc=True`` raises).
``pop_classifier_fc()`` removes them from the backbone and returns them (FCN turns them into
convolutions).

``frozen_stages=k`` freezes every unit whose output stride is at most ``2**(k+1)`` (so 0 is
the stride-2 stem, which a model entering directly at stride 4, such as Swin or ConvNeXt,
does not have). ``norm="frozen_bn"`` swaps every BatchNorm2d for a FrozenBatchNorm2d;
``norm="gn"`` is not offered, since it would not match the torchvision weights.
"""
from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from backbones.base import Backbone
from backbones.googlenet import InputTransform
from backbones.norm import check_norm, convert_frozen_batchnorm

logger = logging.getLogger("backbones")


@dataclass(frozen=True)
class TrunkSpec:
    """How to run one torchvision family as a sequence of units.

    ``modules``: top-level attributes in execution order; a Sequential or ModuleList among
    them contributes each child as a unit. ``final_relu``: the model applies a functional ReLU
    after the trunk (DenseNet). ``transform_input``: the model re-normalises its input first
    (GoogLeNet, Inception v3). ``channels_last``: units produce ``[B, H, W, C]`` (Swin).
    ``probe_size``: input size for measuring strides (MaxViT only runs at 224)."""

    modules: tuple[str, ...]
    final_relu: bool = False
    transform_input: bool = False
    channels_last: bool = False
    probe_size: int = 448


_RESNET = TrunkSpec(("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"))
_FEATURES = TrunkSpec(("features",))
#: family prefix -> trunk; the first matching prefix wins.
TRUNKS: dict[str, TrunkSpec] = {
    "alexnet": _FEATURES,
    "vgg": _FEATURES,
    "squeezenet": _FEATURES,
    "densenet": TrunkSpec(("features",), final_relu=True),
    "efficientnet": _FEATURES,
    "mobilenet": _FEATURES,
    "convnext": _FEATURES,
    "mnasnet": TrunkSpec(("layers",)),
    "regnet": TrunkSpec(("stem", "trunk_output")),
    "resnet": _RESNET,
    "resnext": _RESNET,
    "wide_resnet": _RESNET,
    "shufflenet": TrunkSpec(("conv1", "maxpool", "stage2", "stage3", "stage4", "conv5")),
    "googlenet": TrunkSpec(("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a",
                            "inception3b", "maxpool3", "inception4a", "inception4b", "inception4c",
                            "inception4d", "inception4e", "maxpool4", "inception5a", "inception5b"),
                           transform_input=True),
    "inception": TrunkSpec(("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1",
                            "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c",
                            "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                            "Mixed_7a", "Mixed_7b", "Mixed_7c"), transform_input=True),
    "swin": TrunkSpec(("features", "norm"), channels_last=True),
    "maxvit": TrunkSpec(("stem", "blocks"), probe_size=224),
}
#: family prefix -> (indices of fc6, fc7 in ``model.classifier``, (C, h, w) of its flattened input)
CLASSIFIER_FC: dict[str, tuple[tuple[int, int], tuple[int, int, int]]] = {
    "vgg": ((0, 3), (512, 7, 7)),
    "alexnet": ((1, 4), (256, 6, 6)),
}
CN_UNITS = ("last", "first")
#: Families without a multi-stride convolutional trunk.
UNSUPPORTED = {"vit": "ViT has a single stride-16 token map and no multi-stride features"}


def torchvision_classifiers() -> list[str]:
    """Names of torchvision's classification models (``tv:<name>`` accepts the supported ones)."""
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)


def trunk_spec(model_name: str) -> TrunkSpec:
    for prefix, reason in UNSUPPORTED.items():
        if model_name.startswith(prefix):
            raise ValueError(f"tv:{model_name} cannot be a backbone: {reason}")
    for prefix, spec in TRUNKS.items():
        if model_name.startswith(prefix):
            return spec
    raise ValueError(f"tv:{model_name}: no trunk known for this torchvision family; supported "
                     f"families: {', '.join(TRUNKS)}")


def _units(model: nn.Module, spec: TrunkSpec) -> list[tuple[str, nn.Module]]:
    units = []
    for name in spec.modules:
        module = getattr(model, name)
        if isinstance(module, (nn.Sequential, nn.ModuleList)):
            units.extend((f"{name}.{child}", m) for child, m in module.named_children())
        else:
            units.append((name, module))
    return units


def _measure(units: Sequence[tuple[str, nn.Module]], spec: TrunkSpec, size: int,
             device: str | torch.device) -> list[tuple[int, int]]:
    """``(stride, channels)`` of every unit's output for a ``size`` x ``size`` input.

    On the meta device the units run with meta copies of their tensors (shapes only, no
    arithmetic and no data copied)."""
    x = torch.zeros(1, 3, size, size, device=device)
    shapes = []
    for _, unit in units:
        if torch.device(device).type == "meta":
            tensors = {name: t.to("meta") for name, t in
                       [*unit.named_parameters(), *unit.named_buffers()]}
            x = torch.func.functional_call(unit, tensors, (x,))
        else:
            x = unit(x)
        height, channels = (x.shape[1], x.shape[3]) if spec.channels_last else (x.shape[2], x.shape[1])
        shapes.append((2 ** round(math.log2(size / height)), int(channels)))
    return shapes


def _probe(model_name: str, spec: TrunkSpec, model: nn.Module) -> list[tuple[int, int]]:
    """Unit strides and channels, measured on the meta device (free), else on the CPU."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            try:
                return _measure(_units(model, spec), spec, spec.probe_size, "meta")
            except Exception as exc:  # an op without a meta kernel: measure for real
                logger.debug("meta probe of %s failed (%s); probing on the CPU", model_name, exc)
                device = next(model.parameters()).device
                return _measure(_units(model, spec), spec, 224, device)
    finally:
        model.train(was_training)


class TorchvisionBackbone(Backbone):
    """A torchvision classifier's trunk returning ``cN`` features (see the module docstring).

    Args:
        model_name (str): a torchvision classification model, e.g. "vgg16", "densenet121".
        norm (str): "bn" (as built) or "frozen_bn".
        frozen_stages (int): -1 nothing; k freezes every unit up to stride ``2**(k+1)``.
        out_features (Sequence[str] | None): subset of the available ``cN``; default every one
            with stride >= 4.
        cn_unit (str): "last" (default): ``cN`` is the last unit at stride 2**N (VGG c4 =
            conv5_3); "first": the first one (VGG/AlexNet: the max-pools, c3..c5 = pool3..pool5).
        classifier_fc (bool): keep the classifier's fc6 and fc7 (VGG, AlexNet) as
            :attr:`classifier_fc`; see the module docstring.
        model (nn.Module | None): an existing instance of torchvision's ``model_name`` class
            (a fine-tuned classifier, say) to wrap instead of building one; its trunk modules
            are taken over, not copied.
        **model_kwargs: passed to ``torchvision.models.get_model`` (e.g. ``width_mult``,
            ``stochastic_depth_prob``). GoogLeNet and Inception v3 default to
            ``aux_logits=False`` and ``transform_input=True`` (what their torchvision
            weights expect).
    """

    def __init__(self, model_name: str, norm: str = "bn", frozen_stages: int = -1,
                 out_features: Sequence[str] | None = None, model: nn.Module | None = None,
                 cn_unit: str = "last", classifier_fc: bool = False, **model_kwargs):
        super().__init__()
        from torchvision.models import get_model

        available_models = torchvision_classifiers()
        if model_name not in available_models:
            raise ValueError(f"tv:{model_name} is not a torchvision classification model; "
                             f"available: {', '.join(available_models)}")
        spec = trunk_spec(model_name)
        if cn_unit not in CN_UNITS:
            raise ValueError(f"tv:{model_name}: cn_unit={cn_unit!r} must be one of {CN_UNITS} "
                             f"('first' takes cN from the layer entering stride 2**N, e.g. VGG's pools)")
        fc_spec = next((fc for prefix, fc in CLASSIFIER_FC.items() if model_name.startswith(prefix)), None)
        if classifier_fc and fc_spec is None:
            raise ValueError(f"tv:{model_name}: classifier_fc=True needs an MLP classifier (fc6, fc7); "
                             f"families with one: {', '.join(CLASSIFIER_FC)}")
        norm = check_norm(norm)
        if norm == "gn":
            raise ValueError(f"tv:{model_name} supports norm='bn' or 'frozen_bn'; GroupNorm would "
                             f"not match the torchvision weights")
        self.model_name = model_name
        self.torchvision_name = model_name
        self.name = f"tv:{model_name}"
        self.norm_type = norm
        if model is None:
            if spec.transform_input:
                model_kwargs = {"aux_logits": False, "init_weights": True, "transform_input": True,
                                **model_kwargs}
            model = get_model(model_name, weights=None, **model_kwargs)
            self.transform_input = bool(model_kwargs.get("transform_input", False))
        else:
            if model_kwargs:
                raise ValueError(f"tv:{model_name}: pass either model= or model arguments "
                                 f"{sorted(model_kwargs)}, not both")
            self.transform_input = bool(getattr(model, "transform_input", False))
        units = _units(model, spec)
        shapes = _probe(model_name, spec, model)

        # cN is the last (or, with cn_unit="first", the first) unit at stride 2**N.
        unit_at = {stride: index for index, (stride, _) in enumerate(shapes)}
        if cn_unit == "first":
            unit_at = {stride: index for index, (stride, _) in reversed(list(enumerate(shapes)))}
            unit_at = dict(sorted(unit_at.items()))
        self.available_channels = {f"c{int(math.log2(stride))}": shapes[index][1]
                                   for stride, index in sorted(unit_at.items())}
        default = [name for name in self.available_channels if int(name[1:]) >= 2]
        out_features = self.resolve_out_features(out_features, list(self.available_channels),
                                                 default, f"tv:{model_name}")
        last_index = unit_at[2 ** int(out_features[-1][1:])]
        kept = units[: last_index + 1]
        self._emit = {unit_at[2 ** int(name[1:])]: name for name in out_features}
        if spec.final_relu and last_index == len(units) - 1:
            self._final_relu_on = last_index
        else:
            self._final_relu_on = -1

        # Keep torchvision's top-level attribute names (so its state-dict keys), minus the
        # units after the last output; everything else (the classifier) is dropped.
        for name in spec.modules:
            module = getattr(model, name)
            if isinstance(module, (nn.Sequential, nn.ModuleList)):
                kept_children = [path.split(".", 1)[1] for path, _ in kept if path.split(".", 1)[0] == name]
                if not kept_children:
                    continue
                for child in [c for c, _ in module.named_children() if c not in kept_children]:
                    delattr(module, child)
            elif not any(path == name for path, _ in kept):
                continue
            self.add_module(name, module)
        self._unit_paths = [path for path, _ in kept]
        self.cn_unit = cn_unit
        self.classifier_input = None
        self.__dict__["_classifier_fc"] = None
        if classifier_fc:
            (fc6, fc7), self.classifier_input = fc_spec
            classifier = model.classifier
            layers = {"fc6": classifier[fc6], "fc7": classifier[fc7]}
            for child in [c for c, _ in classifier.named_children() if int(c) not in (fc6, fc7)]:
                delattr(classifier, child)
            self.add_module("classifier", classifier)
            self._unit_paths_fc = [f"classifier.{fc6}", f"classifier.{fc7}"]
            # Held outside _modules: the layers are registered once, under "classifier".
            self.__dict__["_classifier_fc"] = nn.ModuleDict(layers)
        else:
            self._unit_paths_fc = []
        self._unit_strides = [stride for stride, _ in shapes[: last_index + 1]]
        self._channels_last_units = spec.channels_last
        self.input_transform = InputTransform() if self.transform_input else None

        if norm == "frozen_bn":
            convert_frozen_batchnorm(self)
        kept_units = [self.get_submodule(path) for path in self._unit_paths]
        stride_groups = sorted({max(stride, 2) for stride in self._unit_strides})
        stages = [[unit for unit, stride in zip(kept_units, self._unit_strides)
                   if max(stride, 2) == group] for group in stride_groups]
        if stride_groups[0] != 2:  # no stride-2 stem (Swin, ConvNeXt): stage 0 is empty
            stages.insert(0, [])
        self._finish_init(self.available_channels, out_features, stages, frozen_stages)

    @property
    def classifier_fc(self) -> nn.ModuleDict | None:
        """``{"fc6": nn.Linear, "fc7": nn.Linear}`` with the classifier's weights, or ``None``
        (built without ``classifier_fc=True``); see the module docstring."""
        return self.__dict__["_classifier_fc"]

    def pop_classifier_fc(self) -> nn.ModuleDict:
        """Remove fc6 and fc7 from this backbone, in place, and return them (with their
        weights) as ``{"fc6", "fc7"}``: for a model that re-expresses them (FCN's
        convolutionalised fc6/fc7) and should not hold them twice. Afterwards
        :attr:`classifier_fc` is ``None`` and their keys in a weights file are ignored."""
        layers = self.classifier_fc
        if layers is None:
            raise ValueError(f"{self.name} was built without classifier_fc=True; nothing to pop")
        delattr(self, "classifier")
        self.__dict__["_classifier_fc"] = None
        self._unit_paths_fc = []
        self.__dict__.pop("_own_prefixes", None)
        return layers

    @property
    def torchvision_nodes(self) -> dict[str, str]:
        """``{cN: node}``: the node of torchvision's model (a module path, or ``"relu"`` for
        DenseNet's functional final ReLU) whose output ``cN`` is, as accepted by
        ``torchvision.models.feature_extraction.create_feature_extractor``. Swin's nodes are
        channels-last."""
        nodes = {}
        for index, name in self._emit.items():
            nodes[name] = "relu" if index == self._final_relu_on else self._unit_paths[index]
        return dict(sorted(nodes.items(), key=lambda item: int(item[0][1:])))

    def forward_features(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        if self.input_transform is not None:
            x = self.input_transform(x)
        outputs = OrderedDict()
        # Units are looked up by path on every call: fuse_norm_() may replace one (a bare
        # BatchNorm unit such as ResNet's bn1 becomes an Identity).
        for index, path in enumerate(self._unit_paths):
            x = self.get_submodule(path)(x)
            if index == self._final_relu_on:
                x = torch.relu(x)
            name = self._emit.get(index)
            if name is not None:
                outputs[name] = x.permute(0, 3, 1, 2) if self._channels_last_units else x
        return outputs

    def is_ignorable_weight(self, key: str) -> bool:
        own = self.__dict__.setdefault(
            "_own_prefixes", tuple(p + "." for p in [*self._unit_paths, *self._unit_paths_fc]))
        return not key.startswith(own)
