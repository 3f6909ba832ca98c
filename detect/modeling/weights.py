"""Loading whole-detector weights: our checkpoints, state dicts, and torchvision's models.

Contract
--------
``load_detector_weights(model, source)``: ``source`` is a path or an in-memory dict holding

- our checkpoint (a dict with a ``"model"`` state dict, see docs/ABSTRACTIONS.md) or a bare
  state dict of the same model, or
- a torchvision ``fasterrcnn_resnet50_fpn`` or ``fasterrcnn_resnet50_fpn_v2`` state dict
  (recognised by its ``backbone.body.`` / ``backbone.fpn.`` keys), converted by
  :func:`convert_torchvision_faster_rcnn`. ``build_faster_rcnn`` picks the matching
  architecture (:data:`TORCHVISION_ARCHITECTURES`) when its options are left at ``None``.
- a torchvision ``fcn_resnet50`` / ``fcn_resnet101`` state dict (recognised by its
  ``classifier.0/1/4`` FCNHead and ``backbone.layer4.`` keys), converted by
  :func:`convert_torchvision_fcn` for the FCN family's ``layout="torchvision"``.

When the checkpoint's class count differs from the model's, the layers the family names in
``model.class_specific_prefixes`` (Faster R-CNN: ``roi_heads.box_predictor``) keep their
fresh initialisation and a warning names them; any
other missing or unexpected key raises ``detect.errors.UserInputError`` (a ``ValueError``) naming the file and the first keys.
Files are read with ``torch.load(weights_only=True)``.

torchvision's v1 COCO weights (``fasterrcnn_resnet50_fpn_coco-258fb6c6.pth``) were trained
and are evaluated with FrozenBatchNorm eps = 0 (torchvision sets it after loading them; v2
uses BatchNorm eps 1e-5). Where the target backbone norm is a :class:`FrozenBatchNorm2d`
whose eps differs from the source's, the conversion folds the source eps into the stored
statistics -- scale ``w / sqrt(var + eps_tv)`` and shift ``b - mean * scale`` become
``weight`` and ``bias`` with ``mean = 0`` and ``var = 1 - eps_ours`` -- so that our frozen
BatchNorm computes exactly torchvision's numbers and the converted state dict needs no
special flag. Everywhere else the statistics are copied unchanged: a trainable
``nn.BatchNorm2d`` (``backbone_norm="bn"``, e.g. to fine-tune) must start from the real
``weight``, ``bias``, ``running_mean`` and ``running_var``, since in training mode it
normalises with batch statistics and updates the running ones (in eval mode it adds its own
eps, 1e-5, to the variance where torchvision's v1 adds 0).
"""
from __future__ import annotations

import logging
import os
import re

import torch
from torch import Tensor, nn

from detect.errors import UserInputError

logger = logging.getLogger(__name__)


def is_torchvision_faster_rcnn(state: dict) -> bool:
    return any(k.startswith("backbone.body.") for k in state) and any(k.startswith("backbone.fpn.") for k in state)


def torchvision_faster_rcnn_version(state: dict) -> int | None:
    """1 for ``fasterrcnn_resnet50_fpn``, 2 for ``fasterrcnn_resnet50_fpn_v2`` (two RPN convs, a
    conv box head, BatchNorm in the FPN), ``None`` for a state dict that is not torchvision's."""
    if not is_torchvision_faster_rcnn(state):
        return None
    return 2 if "roi_heads.box_head.0.0.weight" in state or "rpn.head.conv.1.0.weight" in state else 1


#: The architecture options of each torchvision version (build_faster_rcnn keywords).
TORCHVISION_ARCHITECTURES = {
    1: dict(rpn_conv_depth=1, fpn_norm=None, box_head="2fc"),
    2: dict(rpn_conv_depth=2, fpn_norm="bn", box_head="4conv1fc"),
}
#: BatchNorm eps torchvision runs each version's published weights with.
TORCHVISION_BN_EPS_BY_VERSION = {1: 0.0, 2: 1e-5}


def _frozen_norm_eps(model: nn.Module | None, module_path: str) -> float | None:
    """The eps of ``model``'s norm at ``module_path`` if it is a FrozenBatchNorm2d, else None;
    without a model, that of the frozen BatchNorm ``build_faster_rcnn`` uses for trained
    weights (1e-5)."""
    from backbones.norm import FrozenBatchNorm2d

    if model is None:
        return 1e-5
    try:
        norm = model.get_submodule(module_path)
    except AttributeError:
        return None
    return float(norm.eps) if isinstance(norm, FrozenBatchNorm2d) else None


def convert_torchvision_faster_rcnn(state: dict, model: nn.Module | None = None, bn_eps: float | None = None) -> dict:
    """Our state-dict keys and values for a torchvision ``fasterrcnn_resnet50_fpn`` (v1 or v2) state dict.

    ``backbone.body.*`` -> ``backbone.*``, ``backbone.fpn.*`` -> ``neck.*`` (pre-0.8 keys
    ``inner_blocks.i.weight`` become ``inner_blocks.i.0.weight``), ``rpn.head.conv.*`` ->
    ``rpn.head.conv.0.0.*``; ``rpn`` and ``roi_heads`` keep their names. The statistics of
    a backbone norm that is frozen in ``model`` with an eps other than the source's are
    re-expressed for its eps; all others are copied unchanged (see the module docstring).
    Without ``model`` every backbone norm is taken to be a FrozenBatchNorm2d with eps 1e-5.
    ``bn_eps`` is the source's eps (default: 0 for v1, 1e-5 for v2, as torchvision runs its
    published weights).
    """
    if bn_eps is None:
        bn_eps = TORCHVISION_BN_EPS_BY_VERSION[torchvision_faster_rcnn_version(state) or 1]
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith("backbone.body."):
            key = "backbone." + key[len("backbone.body."):]
        elif key.startswith("backbone.fpn."):
            key = "neck." + key[len("backbone.fpn."):]
            key = re.sub(r"^neck\.(inner_blocks|layer_blocks)\.(\d+)\.(weight|bias)$", r"neck.\1.\2.0.\3", key)
        elif key in ("rpn.head.conv.weight", "rpn.head.conv.bias"):
            key = "rpn.head.conv.0.0." + key.rsplit(".", 1)[1]
        out[key] = value

    norm_prefixes = [k[: -len("running_var")] for k in out if k.startswith("backbone.") and k.endswith("running_var")]
    for prefix in norm_prefixes:
        our_eps = _frozen_norm_eps(model, prefix[:-1])
        if our_eps is None or our_eps == bn_eps:
            continue
        weight, bias = out[prefix + "weight"], out[prefix + "bias"]
        mean, var = out[prefix + "running_mean"], out[prefix + "running_var"]
        scale = weight * torch.rsqrt(var + bn_eps)
        out[prefix + "weight"] = scale
        out[prefix + "bias"] = bias - mean * scale
        out[prefix + "running_mean"] = torch.zeros_like(mean)
        out[prefix + "running_var"] = torch.full_like(var, 1.0) - our_eps
    return out


def is_torchvision_fcn(state: dict) -> bool:
    """Whether ``state`` is a torchvision ``fcn_resnet50`` / ``fcn_resnet101`` state dict
    (``backbone.layer4.*`` and an ``FCNHead`` under ``classifier.0/1/4``)."""
    return ("classifier.4.weight" in state and "classifier.1.running_var" in state
            and "classifier.0.weight" in state and any(k.startswith("backbone.layer4.") for k in state))


def convert_torchvision_fcn(state: dict) -> dict:
    """Our keys for a torchvision FCN state dict: ``backbone.*`` unchanged (torchvision's ResNet
    names), ``classifier.*`` -> ``head.*``, ``aux_classifier.*`` -> ``aux_head.*``; values unchanged
    (the model uses trainable BatchNorm with torchvision's eps, so no statistics are re-expressed)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith("classifier."):
            key = "head." + key[len("classifier."):]
        elif key.startswith("aux_classifier."):
            key = "aux_head." + key[len("aux_classifier."):]
        out[key] = value
    return out


def read_detector_weights(source) -> tuple[dict, str]:
    """``(state dict, description)`` of a path or dict; our checkpoints are unwrapped."""
    state, where = _read(source)
    if isinstance(state.get("model"), dict):
        state = state["model"]
    return state, where


def _read(source) -> tuple[dict, str]:
    if isinstance(source, dict):
        return source, "the given state dict"
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"detector weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated or not a torch file
        raise UserInputError(f"cannot read detector weights {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise UserInputError(f"detector weights {path} hold a {type(state).__name__}, expected a state dict or checkpoint")
    return state, path


def load_detector_weights(model: nn.Module, source, where: str | None = None) -> dict:
    """Load ``source`` (path or dict) into ``model`` (see the module docstring); returns a
    small report ``{"source", "format", "reinitialized"}``. ``where`` names an in-memory
    source in messages."""
    state, described = read_detector_weights(source)
    where = where or described
    fmt = "detect"
    if is_torchvision_faster_rcnn(state):
        state = convert_torchvision_faster_rcnn(state, model)
        fmt = "torchvision"
    elif is_torchvision_fcn(state):
        state = convert_torchvision_fcn(state)
        fmt = "torchvision"
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}

    own = model.state_dict()
    # The family states which layers depend on the class count (``class_specific_prefixes``);
    # those keep their fresh initialisation when the shapes differ, everything else must fit.
    reinitialized = []
    for prefix in getattr(model, "class_specific_prefixes", ()):
        keys = [k for k in state if k.startswith(prefix)]
        mismatched = [k for k in keys if k in own and own[k].shape != state[k].shape]
        if not mismatched:
            continue
        first = mismatched[0]
        logger.warning(
            "%s: re-initialised %s for %d classes (%s is %s in the checkpoint, %s in the model); "
            "every other layer was loaded",
            where, prefix.rstrip("."), model.num_classes, first, tuple(state[first].shape), tuple(own[first].shape),
        )
        for k in keys:
            del state[k]
        reinitialized.append(prefix.rstrip("."))

    own_keys = {k for k in own if not k.endswith("num_batches_tracked")}
    fresh = tuple(prefix + "." for prefix in reinitialized)
    missing = sorted(own_keys - set(state) - {k for k in own_keys if fresh and k.startswith(fresh)})
    unexpected = sorted(set(state) - own_keys)
    if missing or unexpected:
        raise UserInputError(
            f"detector weights {where} do not fit this model ({fmt} format): "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}; build the model with "
            "the options it was trained with (config['model'] of the checkpoint)"
        )
    wrong_shape = [k for k in state if state[k].shape != own[k].shape]
    if wrong_shape:
        k = wrong_shape[0]
        raise UserInputError(
            f"detector weights {where}: {k} has shape {tuple(state[k].shape)}, the model expects "
            f"{tuple(own[k].shape)}; build the model with the options it was trained with"
        )
    model.load_state_dict(state, strict=False)
    return {"source": where, "format": fmt, "reinitialized": reinitialized}
