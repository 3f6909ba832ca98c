"""YOLOv1 (Redmon, Divvala, Girshick, Farhadi, "You Only Look Once: Unified, Real-Time Object
Detection", CVPR 2016) on every backbone of the table.

``build_yolov1`` is registered as ``"yolov1"`` in :mod:`detect.modeling.registry`::

    model = build_detector("yolov1", num_classes=20)                          # the paper's network
    model = build_detector("yolov1", num_classes=20, backbone="fast_yolo")    # Fast YOLO
    model = build_detector("yolov1", num_classes=3, backbone="resnet18", head="conv",
                           input_size=(224, 224))                             # 7 x 7 grid from c5

The paper's facts
-----------------
- The image is warped to 448 x 448 (aspect not kept) and divided into an S x S grid, S = 7.
  Each cell predicts B = 2 boxes ``(x, y, w, h, confidence)`` and C conditional class
  probabilities ``Pr(class_i | object)``; on VOC (C = 20) the output is 7 x 7 x 30.
- Network (Figure 3): 24 convolutional layers, 1x1 reduction layers followed by 3x3 layers
  (as GoogLeNet's inception modules, without the branches), then two fully connected layers:
  FC 4096 and FC to S * S * (B * 5 + C). The first 20 convolutions are pre-trained on
  ImageNet at 224 x 224 with an average-pool and an FC layer (``backbones.darknet``,
  ``yolov1_darknet``); detection adds four convolutions (3x3x1024; the second with stride
  2, taking 14 x 14 to 7 x 7) and the two FC layers with random weights, at 448 x 448.
  Leaky ReLU ``max(0.1 x, x)`` everywhere except the last layer, which is linear. Dropout
  0.5 after the first FC layer. The paper's network has no BatchNorm (``norm=None``:
  convolutions with a bias); ``norm="bn"`` puts BatchNorm after every convolution (as
  darknet's later ``yolov1.cfg`` and YOLOv2 do). Parameters at 448, C = 20: 271,703,550
  (trunk 22,403,136; detection convolutions 37,752,832; FC 4096 205,524,992 on the
  7 * 7 * 1024 input; last FC 6,022,590).
- Fast YOLO (``backbone="fast_yolo"``): 9 convolutional layers instead of 24 and fewer
  filters, as darknet's original ``yolo-tiny.cfg``: 3x3 convolutions of 16, 32, 64, 128,
  256, 512 filters each followed by a 2x2 max-pool, three 3x3x1024 (7 x 7 at 448), then
  FC 256 (linear), FC 4096 (leaky), dropout 0.5, FC to S * S * (B * 5 + C). (Darknet's later
  ``yolov1-tiny.cfg`` differs: BatchNorm, a 256-filter last convolution and no FC 4096.)
  52.7 mAP on VOC 2007 at 155 fps vs 63.4 mAP at 45 fps for YOLO (VOC 2007 + 2012 training).
- Coordinates: ``x, y`` are the box centre's offsets inside its grid cell (0..1); ``w, h``
  are relative to the image; the network predicts the **square roots** of ``w`` and ``h``
  (so the loss weighs errors in small boxes more), decoded as ``sqrt_w ** 2``.
- Loss: sum-squared error with ``lambda_coord = 5``, ``lambda_noobj = 0.5``; one predictor
  per object (the highest current IoU) is "responsible" for it
  (:mod:`detect.modeling.yolo_loss` has every rule).
- Inference: class-specific confidence ``Pr(class_i | object) * Pr(object) * IoU =
  p_i * confidence`` for each of the S * S * B boxes and C classes; 98 boxes per image;
  non-maximal suppression (adds 2-3 mAP). The paper's demo threshold is 0.2; evaluation
  keeps low-scoring detections (``score_thresh=0.001``, as mAP needs the whole curve).
- Training (not a model option; ``configs/yolov1/yolov1_voc.py``): 135 epochs, batch 64,
  momentum 0.9, decay 5e-4, learning rate 1e-3 raised to 1e-2, then 1e-3 and 1e-4; random
  scaling and translation up to 20%, exposure and saturation up to 1.5 in HSV.

Output layout (ours)
--------------------
The head returns ``[N, S, S, B * 5 + C]``: index ``[n, i, j]`` is the cell in grid row ``i``
(y) and column ``j`` (x); its last dimension holds B predictors ``(x, y, sqrt_w, sqrt_h,
conf)`` one after the other, then the C class probabilities. The FC head's last layer
writes its S * S * (B * 5 + C) outputs in this order (cell-major). Darknet's detection layer
uses a flat ``[S*S*C class probs | S*S*B confidences | S*S*B*4 boxes]`` order (cells
row-major in each block): :func:`to_darknet_layout` and :func:`from_darknet_layout` convert
between the two exactly (a permutation).

Class probabilities are the raw outputs of the linear last layer, trained by squared error
towards one-hot vectors, with no softmax (as the paper and darknet v1, ``softmax=0``). For
scores, confidences and probabilities are clamped at 0 before the product and the product at
1, so that scores lie in 0..1 whatever the raw outputs.

Variants
--------
=====================  =================================================================
``backbone="yolov1"``  the paper's network: ``yolov1_darknet`` (20 convolutions) + 4
                       convolutions + FC 4096 + FC; default normalisation 0..1 input only
                       (darknet's), ``image_mean=(0, 0, 0)``, ``image_std=(1, 1, 1)``.
``"fast_yolo"``        Fast YOLO: ``fast_yolo_darknet`` (9 convolutions) + FC 256, FC 4096, FC.
any backbone name      ``head="fc"``: the paper's detection head on the backbone's last
                       feature map (``resnet18``, ``resnet50``, ``googlenet``, ``tv:vgg16``,
                       ...): four 3x3 convolutions (``head_channels``, the second with
                       stride 2), FC ``fc_channels``, dropout, FC; ImageNet normalisation.
``head="conv"``        fully convolutional: ``head_convs`` (default 0) 3x3 convolutions with
                       stride 1, then a 1x1 convolution to B * 5 + C channels per cell; the
                       grid is the feature map (S = input size / backbone stride).
=====================  =================================================================

The grid must fit the input: ``input_size`` = S x the total stride (backbone stride, x 2
for the FC head's stride-2 convolution), else a ``ValueError`` names the sizes that work
(stride 64, S = 7: 448 x 448). Every option is plain data so that ``config["model"]``
rebuilds the model. ``weights`` loads a whole detector (our checkpoint or state dict;
another class count re-initialises ``head.pred``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms, box_convert

from backbones.darknet import LEAKY_SLOPE, ConvLeaky, init_leaky_
from detect.modeling.base import Detector
from detect.modeling.transform import IMAGENET_MEAN, IMAGENET_STD, ImageTransform
from detect.modeling.yolo_loss import YOLOv1Loss
from detect.modeling.weights import load_detector_weights, read_detector_weights

HEADS = ("fc", "conv")
#: backbone name -> (darknet trunk, trunk output, FC hidden layers (width, leaky?), default head convs)
PAPER_NETWORKS = {
    "yolov1": ("yolov1_darknet", "c5", None, 4),
    "fast_yolo": ("fast_yolo_darknet", "c6", ((256, False), (4096, True)), 0),
}


# ----------------------------------------------------------------------------- layouts
def to_darknet_layout(output: Tensor, boxes_per_cell: int = 2) -> Tensor:
    """``[N, S, S, B*5 + C]`` (ours) to darknet's flat ``[N, S*S*C | S*S*B | S*S*B*4]``:
    class probabilities, then confidences, then boxes ``(x, y, sqrt_w, sqrt_h)``, each block
    over cells in row-major order (and predictors within a cell)."""
    N, S, S2, D = output.shape
    B = int(boxes_per_cell)
    C = D - 5 * B
    if S != S2 or C < 1:
        raise ValueError(f"expected [N, S, S, B*5 + C] with B={B}, got {list(output.shape)}")
    boxes = output[..., : 5 * B].reshape(N, S * S, B, 5)
    probs = output[..., 5 * B:].reshape(N, S * S * C)
    conf = boxes[..., 4].reshape(N, S * S * B)
    coords = boxes[..., :4].reshape(N, S * S * B * 4)
    return torch.cat([probs, conf, coords], dim=1)


def from_darknet_layout(flat: Tensor, grid_size: int = 7, boxes_per_cell: int = 2,
                        num_classes: int = 20) -> Tensor:
    """The inverse of :func:`to_darknet_layout`: ``[N, S*S*(B*5 + C)]`` -> ``[N, S, S, B*5 + C]``."""
    S, B, C = int(grid_size), int(boxes_per_cell), int(num_classes)
    if flat.dim() != 2 or flat.shape[1] != S * S * (B * 5 + C):
        raise ValueError(f"expected [N, {S * S * (B * 5 + C)}] for S={S}, B={B}, C={C}, got {list(flat.shape)}")
    N = flat.shape[0]
    probs, conf, coords = flat.split([S * S * C, S * S * B, S * S * B * 4], dim=1)
    boxes = torch.cat([coords.reshape(N, S * S, B, 4), conf.reshape(N, S * S, B, 1)], dim=-1)
    return torch.cat([boxes.reshape(N, S * S, B * 5), probs.reshape(N, S * S, C)], dim=-1).reshape(N, S, S, B * 5 + C)


# ----------------------------------------------------------------------------- head
class YOLOv1Head(nn.Module):
    """Convolutions, then (``kind="fc"``) fully connected layers or (``"conv"``) a 1x1
    convolution, to ``[N, S, S, B*5 + C]`` (the layout of the module docstring).

    Args:
        in_channels: channels of the feature map read.
        grid_size, boxes_per_cell, num_classes: S, B, C.
        kind: ``"fc"`` or ``"conv"``.
        num_convs: 3x3 convolutions first (leaky ReLU); in the FC head the second has stride 2.
        conv_channels: their width.
        fc_hidden: the FC head's hidden layers as ``(width, leaky)`` pairs; dropout follows the
            last one.
        feature_size: the spatial size of the FC head's input (after the convolutions).
        dropout: rate of the dropout after the last hidden FC layer.
        norm: ``None`` or a norm after each convolution.

    Submodules: ``convs`` (``nn.Sequential`` of conv blocks), ``fc`` (hidden FC layers, FC head
    only) and ``pred`` (the class-specific last layer, linear).
    """

    def __init__(self, in_channels: int, grid_size: int, boxes_per_cell: int, num_classes: int,
                 kind: str = "fc", num_convs: int = 4, conv_channels: int = 1024,
                 fc_hidden: Sequence[tuple[int, bool]] = ((4096, True),), feature_size: int | None = None,
                 dropout: float = 0.5, norm: str | None = None):
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {kind!r}")
        self.kind = kind
        self.grid_size, self.boxes_per_cell, self.num_classes = int(grid_size), int(boxes_per_cell), int(num_classes)
        self.cell_outputs = self.boxes_per_cell * 5 + self.num_classes
        convs, channels = [], in_channels
        for index in range(num_convs):
            stride = 2 if kind == "fc" and index == 1 else 1
            convs.append(ConvLeaky(channels, conv_channels, 3, stride, norm))
            channels = conv_channels
        self.convs = nn.Sequential(*convs)
        if kind == "fc":
            if feature_size is None:
                raise ValueError("the FC head needs the feature_size of its input")
            layers, width = [nn.Flatten(1)], channels * feature_size * feature_size
            for out, leaky in fc_hidden:
                layers.append(nn.Linear(width, out))
                if leaky:
                    layers.append(nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
                width = out
            layers.append(nn.Dropout(dropout))
            self.fc = nn.Sequential(*layers)
            self.pred = nn.Linear(width, self.grid_size * self.grid_size * self.cell_outputs)
        else:
            self.fc = None
            self.pred = nn.Conv2d(channels, self.cell_outputs, 1)
        init_leaky_(self)
        nn.init.normal_(self.pred.weight, 0.0, 0.01)
        nn.init.zeros_(self.pred.bias)

    def forward(self, feature: Tensor) -> Tensor:
        x = self.convs(feature)
        S = self.grid_size
        if self.fc is not None:
            return self.pred(self.fc(x)).reshape(-1, S, S, self.cell_outputs)
        x = self.pred(x)
        if x.shape[-2:] != (S, S):
            raise ValueError(f"the conv head expects a {S} x {S} feature map, got {tuple(x.shape[-2:])}")
        return x.permute(0, 2, 3, 1)


# ----------------------------------------------------------------------------- inference
def decode_boxes(output: Tensor, boxes_per_cell: int, image_size: Sequence[int]) -> Tensor:
    """The S * S * B boxes of ``output [N, S, S, B*5 + C]`` as xyxy pixels of a network
    input of ``image_size (h, w)``: ``[N, S, S, B, 4]``, not clipped."""
    N, S, _, _ = output.shape
    B = int(boxes_per_cell)
    pred = output[..., : 5 * B].reshape(N, S, S, B, 5)
    grid = torch.arange(S, device=output.device, dtype=output.dtype)
    cx = (grid[None, None, :, None] + pred[..., 0]) / S * image_size[1]
    cy = (grid[None, :, None, None] + pred[..., 1]) / S * image_size[0]
    w = pred[..., 2] ** 2 * image_size[1]
    h = pred[..., 3] ** 2 * image_size[0]
    return box_convert(torch.stack((cx, cy, w, h), dim=-1), "cxcywh", "xyxy")


def class_scores(output: Tensor, boxes_per_cell: int) -> Tensor:
    """Class-specific confidences ``[N, S, S, B, C]``: ``clamp(p_c, 0) * clamp(conf, 0)``,
    at most 1."""
    B = int(boxes_per_cell)
    N, S, _, D = output.shape
    conf = output[..., 4: 5 * B: 5].clamp(min=0)           # [N, S, S, B]
    probs = output[..., 5 * B:].clamp(min=0)               # [N, S, S, C]
    return (conf[..., :, None] * probs[..., None, :]).clamp(max=1.0)


def postprocess_detections(output: Tensor, boxes_per_cell: int, image_sizes: Sequence[Sequence[int]],
                           score_thresh: float, nms_thresh: float, detections_per_img: int) -> list[dict]:
    """Detections per image in network-input pixels: scores above ``score_thresh``, boxes
    clipped to the input, per-class NMS at ``nms_thresh``, the best ``detections_per_img``;
    labels 1..C."""
    N, S, _, _ = output.shape
    B = int(boxes_per_cell)
    C = output.shape[-1] - 5 * B
    scores = class_scores(output, B).reshape(N, S * S * B, C)
    results = []
    for n in range(N):
        height, width = image_sizes[n]
        boxes = decode_boxes(output[n: n + 1], B, (height, width)).reshape(S * S * B, 4)
        boxes = torch.stack((boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                             boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)), dim=1)
        box_index, label = (scores[n] > score_thresh).nonzero(as_tuple=True)
        box, score = boxes[box_index], scores[n, box_index, label]
        valid = (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])  # a box clipped to nothing
        box, score, label = box[valid], score[valid], label[valid]
        keep = batched_nms(box, score, label, nms_thresh)[:detections_per_img]
        results.append({"boxes": box[keep], "scores": score[keep], "labels": label[keep] + 1})
    return results


# ----------------------------------------------------------------------------- detector
class YOLOv1(Detector):
    """Transform (fixed warp), backbone, YOLO head, loss and post-processing.

    ``head_outputs(tensor) -> [N, S, S, B*5 + C]`` is the raw network on a normalised batch
    (the layout of the module docstring); ``loss``/``predict`` follow
    :class:`~detect.modeling.base.Detector`; :meth:`optimize_for_inference` makes a fast
    inference-only model (the Predictor calls it on the CPU).

    Args:
        transform: an :class:`ImageTransform` with ``fixed_size``.
        backbone: returns ``OrderedDict[cN]``; ``feature`` names the map the head reads.
        head: :class:`YOLOv1Head`.
        loss: :class:`~detect.modeling.yolo_loss.YOLOv1Loss`.
        num_classes, grid_size, boxes_per_cell: C, S, B.
        score_thresh, nms_thresh, detections_per_img: post-processing.
    """

    class_specific_prefixes = ("head.pred.",)
    #: the paper's demo threshold, used by the Predictor and tools/infer.py by default
    default_predict_score_thresh = 0.2

    def __init__(self, transform: ImageTransform, backbone: nn.Module, head: YOLOv1Head, loss: YOLOv1Loss,
                 num_classes: int, grid_size: int, boxes_per_cell: int, feature: str,
                 score_thresh: float = 0.001, nms_thresh: float = 0.5, detections_per_img: int = 100):
        super().__init__()
        if transform.fixed_size is None:
            raise ValueError("YOLOv1 needs an ImageTransform with fixed_size=(h, w)")
        self.transform = transform
        self.backbone = backbone
        self.head = head
        self.criterion = loss
        self.num_classes = int(num_classes)
        self.grid_size = int(grid_size)
        self.boxes_per_cell = int(boxes_per_cell)
        self.feature = feature
        self.score_thresh = score_thresh
        self.nms_thresh = float(nms_thresh)
        self.detections_per_img = int(detections_per_img)
        self._inference_options: dict | None = None

    def head_outputs(self, tensor: Tensor) -> Tensor:
        if self._inference_options is not None and self._inference_options["channels_last"]:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return self.head(self.backbone(tensor)[self.feature])

    def _compute_losses(self, images: list[Tensor], targets: list[dict]) -> dict[str, Tensor]:
        if self._inference_options is not None:
            raise RuntimeError(
                "this model was optimized for inference (norm layers folded into convolutions) and cannot "
                "compute losses; build or load a fresh model to train"
            )
        batch, targets = self.transform(images, targets, training=self.training)
        output = self.head_outputs(batch.tensor)
        return self.criterion(output, targets, self.transform.fixed_size)

    def _compute_predictions(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        batch, _ = self.transform(images)
        options = self._inference_options
        if options is None:
            output = self.head_outputs(batch.tensor)
        else:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=options["bf16"]):
                output = self.head_outputs(batch.tensor)
            output = output.float().clone()  # an ordinary float32 tensor for the post-processing
        detections = postprocess_detections(output, self.boxes_per_cell, batch.image_sizes, self.score_thresh,
                                            self.nms_thresh, self.detections_per_img)
        return self.transform.postprocess(detections, batch)

    def optimize_for_inference(self, channels_last: bool = True, bf16: bool = False) -> "YOLOv1":
        """Make this model a fast, inference-only model, in place; returns ``self``.

        Eval mode; every eval-mode BatchNorm of the backbone and of the head's convolutions
        folded into its convolution (``fuse_norm_``); ``channels_last``: NHWC weights and input
        (oneDNN's fastest CPU layout); predictions under ``torch.inference_mode``; ``bf16``:
        the network under bfloat16 autocast on the CPU (post-processing in float32). Without
        ``bf16`` the outputs equal the plain model's to float rounding. ``loss()`` and
        ``train()`` raise afterwards, and the state dict loses the folded norms' keys.
        """
        from backbones.fuse import fuse_conv_norm_

        self.eval()
        if hasattr(self.backbone, "fuse_norm_"):
            self.backbone.fuse_norm_()
        if len(self.head.convs):
            fuse_conv_norm_(self.head.convs)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self._inference_options = {"channels_last": bool(channels_last), "bf16": bool(bf16)}
        return self


# ----------------------------------------------------------------------------- builder
def _grid_error(input_size, stride, grid_size, detail) -> ValueError:
    h, w = input_size
    return ValueError(
        f"input_size {tuple(input_size)} does not fit a {grid_size} x {grid_size} grid: the total stride is "
        f"{stride} ({detail}), which gives {h / stride:g} x {w / stride:g} cells; use "
        f"input_size=({grid_size * stride}, {grid_size * stride}) for grid_size={grid_size}, or a grid_size "
        f"with input_size = grid_size * {stride}"
    )


def build_yolov1(
    num_classes: int | None = None,
    backbone="yolov1",
    weights=None,
    backbone_weights=None,
    backbone_norm: str | None = None,
    backbone_frozen_stages: int | None = None,
    backbone_options: dict | None = None,
    grid_size: int = 7,
    boxes_per_cell: int = 2,
    norm: str | None = None,
    head: str = "fc",
    head_convs: int | None = None,
    head_channels: int = 1024,
    fc_channels: int = 4096,
    dropout: float = 0.5,
    input_size: Sequence[int] = (448, 448),
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    score_thresh: float = 0.001,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    lambda_coord: float = 5.0,
    lambda_noobj: float = 0.5,
    rescore: bool = True,
) -> YOLOv1:
    """Build a YOLOv1 detector (see the module docstring for the variants).

    Args:
        num_classes: C foreground classes.
        backbone: ``"yolov1"`` (the paper's network), ``"fast_yolo"``, any name of
            ``backbones.build_backbone`` (the head reads its last output), or a built backbone.
        weights: ``None`` or a whole detector's state dict / our checkpoint (path or dict);
            another class count re-initialises ``head.pred`` (and logs it).
        backbone_weights: ``None``, ``"torchvision"`` or a path, for the backbone alone (for
            ``"yolov1"``: a ``yolov1_darknet`` or :class:`~backbones.darknet.DarknetClassifier`
            state dict, e.g. the ImageNet pre-training).
        backbone_norm, backbone_frozen_stages, backbone_options: options of a named backbone
            (its own defaults otherwise: trainable BatchNorm, nothing frozen). For ``"yolov1"``
            and ``"fast_yolo"`` the trunk's norm is ``norm``.
        grid_size, boxes_per_cell: S and B (7 and 2 in the paper).
        norm: ``None`` (the paper: biases, no normalisation) or ``"bn"``: after every
            convolution of the head (and of the darknet trunks).
        head: ``"fc"`` (the paper) or ``"conv"`` (1x1 convolution per cell, no FC).
        head_convs: 3x3 convolutions of the head; default 4 for ``head="fc"`` (the paper's
            convolutions 21-24; 0 for Fast YOLO) and 0 for ``head="conv"``.
        head_channels: their width (1024).
        fc_channels: width of the hidden FC layer (4096).
        dropout: rate after the hidden FC layer (0.5).
        input_size: ``(h, w)`` every image is warped to (448 x 448).
        image_mean, image_std: input normalisation; default 0..1 input unchanged for the
            darknet networks, ImageNet statistics for the other backbones.
        score_thresh: detections scoring at most this are dropped (0.001 for evaluation; the
            Predictor uses ``default_predict_score_thresh = 0.2``).
        nms_thresh: per-class NMS IoU threshold (0.5).
        detections_per_img: at most this many detections per image (100).
        lambda_coord, lambda_noobj, rescore: the loss (see :mod:`detect.modeling.yolo_loss`).
    """
    from backbones import build_backbone

    if num_classes is None or int(num_classes) < 1:
        raise ValueError(f"num_classes must be the number of foreground classes (>= 1), got {num_classes!r}")
    num_classes, S, B = int(num_classes), int(grid_size), int(boxes_per_cell)
    if S < 1 or B < 1:
        raise ValueError(f"grid_size and boxes_per_cell must be positive, got {grid_size!r}, {boxes_per_cell!r}")
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if len(input_size) != 2:
        raise ValueError(f"input_size must be (height, width), got {input_size!r}")
    input_size = (int(input_size[0]), int(input_size[1]))

    paper = PAPER_NETWORKS.get(backbone) if isinstance(backbone, str) else None
    fc_hidden: Sequence[tuple[int, bool]] = ((int(fc_channels), True),)
    if paper is not None:
        trunk_name, feature, paper_hidden, paper_convs = paper
        options = dict(backbone_options or {})
        if backbone_frozen_stages is not None:
            options["frozen_stages"] = backbone_frozen_stages
        body = build_backbone(trunk_name, weights=backbone_weights, norm=norm, out_features=[feature], **options)
        if paper_hidden is not None:
            fc_hidden = tuple((int(fc_channels) if w == 4096 else w, leaky) for w, leaky in paper_hidden)
        default_convs = paper_convs if head == "fc" else 0
        name, darknet = backbone, True
    else:
        if isinstance(backbone, str):
            options = dict(backbone_options or {})
            if backbone_norm is not None:
                options["norm"] = backbone_norm
            if backbone_frozen_stages is not None:
                options["frozen_stages"] = backbone_frozen_stages
            body = build_backbone(backbone, weights=backbone_weights, **options)
            name = backbone
        else:
            body = backbone
            if backbone_weights is not None:
                body.load_weights(backbone_weights)
            name = type(body).__name__
        feature = list(body.out_channels)[-1]
        default_convs = 4 if head == "fc" else 0
        darknet = False
    num_convs = default_convs if head_convs is None else int(head_convs)

    backbone_stride = int(body.strides[feature])
    head_stride = 2 if head == "fc" and num_convs >= 2 else 1
    stride = backbone_stride * head_stride
    h, w = input_size
    if h % stride or w % stride or h // stride != S or w // stride != S:
        raise _grid_error(input_size, stride, S, f"{name} {feature} stride {backbone_stride} x head {head_stride}")

    yolo_head = YOLOv1Head(
        int(body.out_channels[feature]), S, B, num_classes, kind=head, num_convs=num_convs,
        conv_channels=int(head_channels), fc_hidden=fc_hidden, feature_size=S, dropout=float(dropout), norm=norm,
    )
    transform = ImageTransform(
        image_mean=image_mean if image_mean is not None else ((0.0, 0.0, 0.0) if darknet else IMAGENET_MEAN),
        image_std=image_std if image_std is not None else ((1.0, 1.0, 1.0) if darknet else IMAGENET_STD),
        size_divisibility=stride,
        fixed_size=input_size,
    )
    criterion = YOLOv1Loss(num_classes, S, B, lambda_coord, lambda_noobj, rescore)
    model = YOLOv1(transform, body, yolo_head, criterion, num_classes, S, B, feature,
                   score_thresh, nms_thresh, detections_per_img)
    if weights is not None:
        state, where = read_detector_weights(weights)
        load_detector_weights(model, state, where=where)
    return model
