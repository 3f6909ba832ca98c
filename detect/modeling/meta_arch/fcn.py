"""FCN (Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation",
CVPR 2015; PAMI 2017) on every backbone of the table, and torchvision's FCN layout.

``build_fcn`` is registered as ``"fcn"`` in :mod:`detect.modeling.registry`::

    model = build_detector("fcn", num_classes=20)                              # FCN-8s, VGG-16
    model = build_detector("fcn", num_classes=20, variant="32s")               # FCN-32s
    model = build_detector("fcn", num_classes=20, at_once=True)                # FCN-8s at once
    model = build_detector("fcn", num_classes=3, backbone="resnet18")          # skips from c3/c4/c5
    model = build_detector("fcn", num_classes=20, backbone="resnet50",
                           layout="torchvision")                               # fcn_resnet50

The paper's facts
-----------------
- A classification net is *convolutionalised*: VGG-16's fc6 becomes a 7x7 convolution (4096
  filters over pool5's 512 channels) and fc7 a 1x1 convolution, their ImageNet weights
  reshaped (``W_fc6 [4096, 512*7*7] -> [4096, 512, 7, 7]``), so on a 224 x 224 image the
  network computes the classifier's activations at the centre and a coarse map elsewhere.
  fc8 is discarded; a 1x1 convolution to 21 channels (``score_fr``) scores the classes. The
  classifier's dropout (0.5 after fc6 and fc7) is kept.
- The class scoring layers start at zero ("random initialization yielded neither better
  performance nor faster convergence").
- Upsampling is in-network: transposed convolutions (Caffe's "deconvolution") initialised to
  bilinear interpolation; the final one is fixed to bilinear, the intermediate 2x ones are
  learned (PAMI).
- Skips: FCN-32s upsamples ``score_fr`` 32x. FCN-16s adds a 1x1 score layer on pool4
  (``score_pool4``, zero-initialised) to the 2x-upsampled ``score_fr`` and upsamples the sum
  16x; FCN-8s adds ``score_pool3`` the same way and upsamples 8x. The paper trains them in
  stages (32s, then 16s from 32s, then 8s from 16s); the PAMI "at-once" FCN-8s trains all
  skips from the start, scaling pool4 by 0.01 and pool3 by 0.0001 before their score layers
  (fixed factors) to condition the optimisation.
- Mean IU on the paper's VOC 2011 validation subset (CVPR 2015, Tables 1 and 2): FCN-AlexNet
  39.8, FCN-GoogLeNet 42.5 (32s), FCN-VGG16 FCN-32s 59.4, FCN-16s 62.4, FCN-8s 62.7.
- Loss: per-pixel multinomial logistic loss over the whole image (pixels labelled 255, the
  VOC object borders, ignored), *unnormalised* (summed) in the reference Caffe solvers, which
  is why their learning rates are as small as 1e-10 (``loss_reduction="sum"``). The default
  here is the mean over valid pixels (torchvision's, lr-scale independent of image size).
- Training (not a model option; ``configs/fcn/fcn8s_vgg16_voc.py`` states what it uses):
  SGD, minibatch 20 images, momentum 0.9, lr 1e-4 for FCN-VGG16 (mean loss) in the CVPR
  paper; the PAMI "heavy" schedule is one image per batch, momentum 0.99, summed loss.
- Padding: the reference Caffe nets pad conv1_1 by 100 pixels (so that the 7x7 fc6 has input
  at any size) and cut every skip and the output with ``Crop`` layers at hand-computed offsets
  (19 for FCN-32s; 5, 9, 31 for FCN-8s). **Here the crops are computed instead, and are all
  zero:** the transform zero-pads every batch at the bottom/right to a multiple of 32 (the
  deepest stride), fc6 pads by 3 ("same" 7x7), and every upsampling by ``f`` is a transposed
  convolution with kernel ``2f``, stride ``f`` and padding ``f / 2``, whose output is exactly
  ``f`` times its input and whose pixel centres line up with the input's at half-pixel
  offsets (``align_corners=False``). Every score map is therefore exactly ``H / stride`` and
  aligned with the skip it is added to; the logits of the padded batch are cut to each image
  and (when the transform resized it) resized bilinearly to the image as given, so any input
  size, odd ones included, gives logits of exactly that size. Border pixels differ from the
  pad-100 net (the transposed convolution sees zero padding instead of 100 more pixels).

torchvision's FCN layout (``layout="torchvision"``)
---------------------------------------------------
``torchvision.models.segmentation.fcn_resnet50/101``: a ResNet with
``replace_stride_with_dilation=(False, True, True)`` (output stride 8), an ``FCNHead`` on c5
(3x3 conv 2048 -> 512 without bias, BatchNorm, ReLU, dropout 0.1, 1x1 conv to K + 1) and an
auxiliary ``FCNHead`` on c4 (1024 -> 256 -> K + 1) whose loss is added with weight 0.5; both
outputs are upsampled bilinearly (``align_corners=False``) to the input size. The input is
not padded beyond the batch's largest image (``size_divisibility=1``), so a single image runs
exactly as in torchvision.

``weights=`` accepts torchvision's ``fcn_resnet50`` / ``fcn_resnet101`` state dicts (keys
``backbone.*`` as ours, ``classifier.*`` -> ``head.*``, ``aux_classifier.*`` -> ``aux_head.*``;
:func:`detect.modeling.weights.convert_torchvision_fcn`). The COCO-with-VOC-labels weights (20
VOC classes on COCO train2017: 60.5 / 63.7 mIoU, 91.4 / 91.9 pixel accuracy on COCO val2017
for ResNet-50 / -101, at 520 px) load as::

    from torchvision.models.segmentation import FCN_ResNet50_Weights
    state = FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.get_state_dict(progress=True)  # downloads
    # or offline: state = torch.load("fcn_resnet50_coco-1167a1af.pth", weights_only=True)
    model = build_detector("fcn", num_classes=20, backbone="resnet50", layout="torchvision",
                           weights=state)          # a path to the .pth file works too
    # class_names = detect.data.voc.VOC_CLASSES; feed images resized to a 520 shorter side
    # (or build with min_size=520), as torchvision evaluates them

(``fcn_resnet101_coco-7ecb50ca.pth`` with ``backbone="resnet101"``.) ``weights="torchvision"``
fetches the same file through torchvision's weights API when the network allows.

Variants
--------
==========================  ============================================================
``backbone="vgg16"``        the paper's network: ``tv:vgg16`` pools (pool3/4/5 =
                            ``cn_unit="first"``), fc6/fc7 as convolutions with the
                            classifier's weights (``backbone_weights="torchvision"``:
                            ImageNet), dropout 0.5, ``variant="32s" | "16s" | "8s"``,
                            ``at_once``.
any backbone                ``layout="skip"`` (default): the same fusion from ``c5``, ``c4``,
                            ``c3`` (ResNet, deformable ResNet, GoogLeNet, ``tv:...``), scores
                            straight on the backbone's maps (``dropout`` before the deepest
                            score layer, default 0).
``layout="torchvision"``    FCNHead on the deepest map and an auxiliary FCNHead on the one
                            before (``aux_loss``); bottleneck ResNets (50/101/152,
                            deformable) are dilated to stride 8, others keep their strides.
==========================  ============================================================

Inputs are RGB 0..1 images, normalised with ImageNet statistics; by default they are not
resized (``min_size=None``: the data pipeline's augmentation decides the scale, as in the
paper and torchvision); ``min_size``/``max_size`` resize the shorter side inside the model.
Outputs: ``{"sem_seg": float32 [K + 1, H, W]}`` logits per image at its size as given
(channel 0 background). Every option is plain data, so ``config["model"]`` rebuilds the model.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detect.modeling.base import SemanticSegmenter
from detect.modeling.seg_heads import FCNHead, SkipFusionHead, sem_seg_loss
from detect.modeling.transform import IMAGENET_MEAN, IMAGENET_STD, ImageTransform
from detect.modeling.weights import load_detector_weights, read_detector_weights

LAYOUTS = ("skip", "torchvision")
#: variant -> the taps fused, deepest first
VARIANTS = {"32s": ("c5",), "16s": ("c5", "c4"), "8s": ("c5", "c4", "c3")}
#: The at-once FCN-8s's fixed skip scales (PAMI; Caffe ``voc-fcn8s-atonce``).
AT_ONCE_SKIP_SCALES = {"c4": 0.01, "c3": 0.0001}
#: Backbone names that mean the paper's convolutionalised classifier.
PAPER_NETWORKS = {"vgg16": "tv:vgg16"}
#: Backbones the torchvision layout dilates to stride 8 unless told otherwise (bottleneck ResNets).
DILATED_BY_DEFAULT = ("resnet50", "resnet101", "resnet152", "dcn_resnet50", "dcn_resnet101")
#: torchvision segmentation models whose weights ``weights="torchvision"`` fetches.
TORCHVISION_FCN = {"resnet50": "fcn_resnet50", "resnet101": "fcn_resnet101"}


# ----------------------------------------------------------------------------- parts
def convolutionalise(linear: nn.Linear, input_shape: Sequence[int], padding: int | None = None) -> nn.Conv2d:
    """The convolution computing ``linear`` at every position of a map: ``input_shape`` is the
    ``(C, h, w)`` the linear layer's input was flattened from (row-major, as ``torch.flatten``),
    so the weight ``[out, C*h*w]`` becomes ``[out, C, h, w]``. ``padding`` defaults to ``h // 2``
    ("same" size for odd kernels)."""
    channels, height, width = (int(v) for v in input_shape)
    if linear.in_features != channels * height * width:
        raise ValueError(f"a Linear with {linear.in_features} inputs cannot read a {tuple(input_shape)} map")
    conv = nn.Conv2d(channels, linear.out_features, (height, width),
                     padding=height // 2 if padding is None else padding, bias=linear.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.reshape(linear.out_features, channels, height, width))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def paper_fc_block(backbone, dropout: float) -> tuple[nn.Sequential, int]:
    """fc6 (7x7) and fc7 (1x1) convolutions from ``backbone``'s classifier layers (taken out of
    the backbone), each followed by ReLU and dropout; returns ``(block, 4096)``."""
    layers = backbone.pop_classifier_fc()
    shape = backbone.classifier_input or (512, 7, 7)
    fc6 = convolutionalise(layers["fc6"], shape)
    fc7 = convolutionalise(layers["fc7"], (layers["fc7"].in_features, 1, 1))
    block = nn.Sequential(OrderedDict(
        fc6=fc6, relu6=nn.ReLU(inplace=True), drop6=nn.Dropout(dropout),
        fc7=fc7, relu7=nn.ReLU(inplace=True), drop7=nn.Dropout(dropout)))
    return block, fc7.out_channels


class SegmentationTransform(ImageTransform):
    """:class:`ImageTransform` in shorter-side mode that may also leave sizes alone:
    ``min_size=None`` normalises and pads only (``max_size`` unused)."""

    def __init__(self, min_size: int | Sequence[int] | None = None, max_size: int | None = None,
                 image_mean: Sequence[float] = IMAGENET_MEAN, image_std: Sequence[float] = IMAGENET_STD,
                 size_divisibility: int = 32):
        self.keeps_size = min_size is None
        if min_size is None:
            min_size, max_size = 1, 1  # not used
        elif max_size is None:
            max_size = 10 ** 9  # no cap on the longer side
        super().__init__(min_size, max_size, image_mean, image_std, size_divisibility)

    def resize(self, image: Tensor, min_size: int) -> Tensor:
        if self.keeps_size:
            return image
        return super().resize(image, min_size)

    def extra_repr(self) -> str:
        if self.keeps_size:
            return f"no resize, mean={self.image_mean}, std={self.image_std}, size_divisibility={self.size_divisibility}"
        return super().extra_repr()


# ----------------------------------------------------------------------------- model
class FCN(SemanticSegmenter):
    """Transform, backbone, a skip-fusion or torchvision head, and the per-pixel loss.

    ``head_outputs(tensor) -> {"out": [N, K+1, Hp, Wp], "aux": ...}`` is the raw network on a
    normalised padded batch (``"aux"`` only with an auxiliary head and ``with_aux=True``);
    ``loss``/``predict`` follow :class:`~detect.modeling.base.SemanticSegmenter`;
    :meth:`optimize_for_inference` makes a fast inference-only model.

    Args:
        transform: a :class:`SegmentationTransform` (or an :class:`ImageTransform` in
            shorter-side mode).
        backbone: returns ``OrderedDict[cN]``.
        head: a :class:`~detect.modeling.seg_heads.SkipFusionHead` (reads its ``features``)
            or, for the torchvision layout, a module on ``feature`` upsampled bilinearly.
        num_classes: K.
        feature: the map a non-skip head reads; ``aux_head`` / ``aux_feature``: the auxiliary
            head and its map (or ``None``), its loss weighted by ``aux_weight``.
        loss_reduction: ``"mean"`` (over valid pixels) or ``"sum"`` (per image; the paper's).
        ignore_index: the mask value left out of the loss (255).
        class_specific_prefixes: the state-dict prefixes whose shapes depend on K.
    """

    def __init__(self, transform: ImageTransform, backbone: nn.Module, head: nn.Module, num_classes: int,
                 feature: str | None = None, aux_head: nn.Module | None = None, aux_feature: str | None = None,
                 aux_weight: float = 0.5, loss_reduction: str = "mean", ignore_index: int = 255,
                 class_specific_prefixes: Sequence[str] = ()):
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head
        self.num_classes = int(num_classes)
        self.feature = feature
        self.aux_feature = aux_feature
        self.aux_weight = float(aux_weight)
        self.loss_reduction = loss_reduction
        self.ignore_index = int(ignore_index)
        self.class_specific_prefixes = tuple(class_specific_prefixes)
        self._inference_options: dict | None = None
        sem_seg_loss(torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1, dtype=torch.int64),
                     reduction=loss_reduction)  # rejects an unknown reduction now

    @property
    def is_skip_layout(self) -> bool:
        return isinstance(self.head, SkipFusionHead)

    def head_outputs(self, tensor: Tensor, with_aux: bool = False) -> dict[str, Tensor]:
        if self._inference_options is not None and self._inference_options["channels_last"]:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        size = tensor.shape[-2:]
        features = self.backbone(tensor)
        if self.is_skip_layout:
            outputs = {"out": self.head(features, size)}
        else:
            outputs = {"out": F.interpolate(self.head(features[self.feature]), size=size, mode="bilinear",
                                            align_corners=False)}
        if with_aux and self.aux_head is not None:
            outputs["aux"] = F.interpolate(self.aux_head(features[self.aux_feature]), size=size,
                                           mode="bilinear", align_corners=False)
        return outputs

    def _compute_losses(self, images: list[Tensor], targets: list[dict]) -> dict[str, Tensor]:
        if self._inference_options is not None:
            raise RuntimeError(
                "this model was optimized for inference (norm layers folded into convolutions) and cannot "
                "compute losses; build or load a fresh model to train")
        batch, targets = self.transform(images, targets, training=self.training)
        masks = self.transform.pad_masks([t["masks"] for t in targets], batch, self.ignore_index)
        outputs = self.head_outputs(batch.tensor, with_aux=True)
        losses = {"loss_sem_seg": sem_seg_loss(outputs["out"], masks, self.ignore_index, self.loss_reduction)}
        if "aux" in outputs:
            losses["loss_aux"] = self.aux_weight * sem_seg_loss(outputs["aux"], masks, self.ignore_index,
                                                                self.loss_reduction)
        return losses

    def _compute_predictions(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        batch, _ = self.transform(images)
        options = self._inference_options
        if options is None:
            logits = self.head_outputs(batch.tensor)["out"]
        else:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=options["bf16"]):
                logits = self.head_outputs(batch.tensor)["out"]
            logits = logits.float().contiguous().clone()  # an ordinary float32 tensor
        return [{"sem_seg": image_logits} for image_logits in self.transform.postprocess_sem_seg(logits, batch)]

    def optimize_for_inference(self, channels_last: bool = True, bf16: bool = False) -> "FCN":
        """Make this model a fast, inference-only model, in place; returns ``self``.

        Eval mode; every eval-mode BatchNorm of the backbone and the heads folded into its
        convolution; ``channels_last``: NHWC weights and input (oneDNN's fastest CPU layout);
        predictions under ``torch.inference_mode``; ``bf16``: the network under bfloat16
        autocast on the CPU. Without ``bf16`` the outputs equal the plain model's to float
        rounding. ``loss()`` and ``train()`` raise afterwards, and the state dict loses the
        folded norms' keys. The auxiliary head, unused at inference, is dropped.
        """
        from backbones.fuse import fuse_conv_norm_

        self.eval()
        if hasattr(self.backbone, "fuse_norm_"):
            self.backbone.fuse_norm_()
        if not self.is_skip_layout:
            fuse_conv_norm_(self.head)
        self.aux_head = None
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self._inference_options = {"channels_last": bool(channels_last), "bf16": bool(bf16)}
        return self


# ----------------------------------------------------------------------------- builder
def _torchvision_fcn_state(backbone: str) -> dict:
    """torchvision's COCO-with-VOC-labels weights of ``fcn_<backbone>`` (downloads)."""
    from torchvision.models import get_model_weights

    if backbone not in TORCHVISION_FCN:
        raise ValueError(f"weights='torchvision' exists for backbone {sorted(TORCHVISION_FCN)} with "
                         f"layout='torchvision', not {backbone!r}")
    weights = get_model_weights(TORCHVISION_FCN[backbone]).COCO_WITH_VOC_LABELS_V1
    try:
        return weights.get_state_dict(progress=False)
    except Exception as exc:  # no network
        raise RuntimeError(f"cannot fetch {weights.url} ({type(exc).__name__}: {exc}); download it and pass "
                           f"weights='path/to/{weights.url.rsplit('/', 1)[-1]}'") from exc


def build_fcn(
    num_classes: int | None = None,
    backbone="vgg16",
    layout: str = "skip",
    variant: str = "8s",
    at_once: bool = False,
    weights=None,
    backbone_weights=None,
    backbone_norm: str | None = None,
    backbone_frozen_stages: int | None = None,
    backbone_options: dict | None = None,
    dropout: float | None = None,
    learn_final_upsample: bool = False,
    aux_loss: bool | None = None,
    aux_weight: float = 0.5,
    head_channels: int | None = None,
    head_dropout: float = 0.1,
    loss_reduction: str = "mean",
    ignore_index: int = 255,
    min_size: int | Sequence[int] | None = None,
    max_size: int | None = None,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
) -> FCN:
    """Build an FCN (see the module docstring for the variants).

    Args:
        num_classes: K foreground classes (the model outputs K + 1 channels).
        backbone: ``"vgg16"`` (the paper's network), any name of ``backbones.build_backbone``
            (``"resnet50"``, ``"dcn_resnet50"``, ``"googlenet"``, ``"tv:..."``), or a built backbone.
        layout: ``"skip"`` (FCN-32s/16s/8s fusion) or ``"torchvision"`` (FCNHead + auxiliary head).
        variant: ``"32s"``, ``"16s"`` or ``"8s"`` (skip layout): which of c5, c4, c3 are fused.
        at_once: scale the c4 / c3 skips by 0.01 / 0.0001 (the PAMI at-once FCN-8s).
        weights: ``None``, a whole model's state dict or our checkpoint (path or dict), a torchvision
            ``fcn_resnet50/101`` state dict, or ``"torchvision"`` (its COCO-with-VOC-labels weights,
            downloaded); another class count re-initialises the class-specific layers (and logs it).
        backbone_weights: ``None``, ``"torchvision"`` (ImageNet; for ``"vgg16"`` including fc6/fc7)
            or a path / state dict, for the backbone alone.
        backbone_norm, backbone_frozen_stages, backbone_options: options of a named backbone. For
            the torchvision layout a bottleneck ResNet (:data:`DILATED_BY_DEFAULT`) defaults to
            ``replace_stride_with_dilation=(False, True, True)``.
        dropout: before the deepest score layer: 0.5 after fc6 and fc7 for ``"vgg16"`` (the paper),
            default 0 (none) on other backbones in the skip layout.
        learn_final_upsample: let the last transposed convolution learn (fixed by default).
        aux_loss: the auxiliary head (torchvision layout; default True); ``aux_weight`` its weight.
        head_channels, head_dropout: FCNHead's width (default in_channels / 4) and dropout (0.1).
        loss_reduction: ``"mean"`` over valid pixels or ``"sum"`` (per image; the paper's).
        ignore_index: mask value without loss (255).
        min_size, max_size: resize the shorter side inside the model; ``None``: no resize.
        image_mean, image_std: normalisation of 0..1 RGB input (ImageNet's).
    """
    from backbones import build_backbone

    if num_classes is None or int(num_classes) < 1:
        raise ValueError(f"num_classes must be the number of foreground classes (>= 1), got {num_classes!r}")
    num_classes = int(num_classes)
    outputs = num_classes + 1
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    if at_once and (layout != "skip" or variant != "8s"):
        raise ValueError("at_once=True is the at-once FCN-8s: it needs layout='skip' and variant='8s'")
    if layout == "skip" and aux_loss:
        raise ValueError("aux_loss is an option of layout='torchvision'; the skip layout has no auxiliary head")
    if weights == "torchvision" and layout != "torchvision":
        raise ValueError("weights='torchvision' (torchvision's fcn_resnet50/101) needs layout='torchvision'; "
                         "use backbone_weights='torchvision' for ImageNet backbone weights")

    paper = isinstance(backbone, str) and backbone in PAPER_NETWORKS
    options = dict(backbone_options or {})
    if backbone_norm is not None:
        options["norm"] = backbone_norm
    if backbone_frozen_stages is not None:
        options["frozen_stages"] = backbone_frozen_stages
    taps = VARIANTS[variant] if layout == "skip" else ("c4", "c5")
    if isinstance(backbone, str):
        name = PAPER_NETWORKS.get(backbone, backbone)
        if paper:
            options.setdefault("cn_unit", "first")
            options.setdefault("classifier_fc", True)
        if layout == "torchvision" and name in DILATED_BY_DEFAULT:
            options.setdefault("replace_stride_with_dilation", (False, True, True))
        options.setdefault("out_features", sorted(taps, key=lambda n: int(n[1:])))
        body = build_backbone(name, weights=backbone_weights, **options)
    else:
        body = backbone
        if backbone_weights is not None:
            body.load_weights(backbone_weights)
    missing = [t for t in taps if t not in body.out_channels]
    if missing:
        raise ValueError(f"the {layout} layout{' ' + variant if layout == 'skip' else ''} reads {list(taps)}; "
                         f"the backbone returns {list(body.out_channels)}")

    if layout == "skip":
        fc, fc_channels = None, None
        if paper:
            fc, fc_channels = paper_fc_block(body, 0.5 if dropout is None else float(dropout))
        elif dropout:
            fc = nn.Dropout(float(dropout))
        head = SkipFusionHead(
            {t: body.out_channels[t] for t in taps}, {t: body.strides[t] for t in taps}, outputs,
            fc=fc, fc_channels=fc_channels, skip_scales=AT_ONCE_SKIP_SCALES if at_once else None,
            learn_final_upsample=learn_final_upsample)
        model = FCN(SegmentationTransform(min_size, max_size, image_mean, image_std, body.size_divisibility),
                    body, head, num_classes, loss_reduction=loss_reduction, ignore_index=ignore_index,
                    class_specific_prefixes=("head.scores.", "head.upsample.", "head.final_upsample."))
    else:
        aux_loss = True if aux_loss is None else bool(aux_loss)
        head = FCNHead(body.out_channels["c5"], outputs, head_channels, head_dropout)
        aux_head = None
        if aux_loss:
            aux_channels = None if head_channels is None else int(head_channels) // 2
            aux_head = FCNHead(body.out_channels["c4"], outputs, aux_channels, head_dropout)
        model = FCN(SegmentationTransform(min_size, max_size, image_mean, image_std, 1), body, head, num_classes,
                    feature="c5", aux_head=aux_head, aux_feature="c4" if aux_loss else None,
                    aux_weight=aux_weight, loss_reduction=loss_reduction, ignore_index=ignore_index,
                    class_specific_prefixes=("head.4.", "aux_head.4."))
    if weights is not None:
        if isinstance(weights, str) and weights == "torchvision":
            state, where = _torchvision_fcn_state(backbone if isinstance(backbone, str) else ""), "torchvision"
        else:
            state, where = read_detector_weights(weights)
        load_detector_weights(model, state, where=where)
    return model
