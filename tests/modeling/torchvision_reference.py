"""torchvision's ``fasterrcnn_resnet50_fpn`` with seeded random weights, as the reference of
the parity and weight-conversion tests (not a test module)."""
from __future__ import annotations

import torch
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d


def random_torchvision_faster_rcnn(seed: int = 0, num_classes: int = 4, spread_heads: bool = False,
                                   **options) -> FasterRCNN:
    """An eval-mode torchvision Faster R-CNN R50-FPN (``num_classes`` includes background)
    with frozen BatchNorm at eps 0, as torchvision runs its published COCO model, and random
    BatchNorm statistics. ``spread_heads`` redraws the RPN head and box predictor weights
    large enough that objectness and class scores spread out (no near-ties in rankings)."""
    torch.manual_seed(seed)
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d,
                                   trainable_layers=3)
    model = FasterRCNN(backbone, num_classes=num_classes, **options)
    tv_utils.overwrite_eps(model, 0.0)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, FrozenBatchNorm2d):
                n = module.weight.numel()
                module.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                module.bias.copy_(torch.randn(n, generator=g) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        if spread_heads:
            for param in list(model.rpn.head.parameters()) + list(model.roi_heads.box_predictor.parameters()):
                param.copy_(torch.randn(param.shape, generator=g) * 0.05)
    return model.eval()


def match_detections_unordered(a: dict, b: dict, box_tol: float, score_tol: float):
    """Pair the detections of ``a`` and ``b`` (one image each: ``boxes [N, 4]``, ``scores [N]``,
    ``labels [N]``) without relying on their order, which near-equal scores may swap.

    Per label, every detection of ``a`` is assigned to one of ``b`` (Hungarian assignment,
    ``scipy.optimize.linear_sum_assignment``) minimising the cost
    ``max(max |box a - box b| / box_tol, |score a - score b| / score_tol)``; returns the
    worst cost over all pairs (<= 1: every pair agrees within both tolerances) and a text
    naming the worst pair. Raises ``AssertionError`` when the label counts differ.
    """
    from scipy.optimize import linear_sum_assignment

    labels_a, labels_b = a["labels"].cpu(), b["labels"].cpu()
    count_a = torch.bincount(labels_a, minlength=1)
    count_b = torch.bincount(labels_b, minlength=1)
    size = max(len(count_a), len(count_b))
    count_a, count_b = (torch.nn.functional.pad(c, (0, size - len(c))) for c in (count_a, count_b))
    assert torch.equal(count_a, count_b), f"detections per label differ: {count_a.tolist()} vs {count_b.tolist()}"
    worst, where = 0.0, "no detections"
    for label in labels_a.unique().tolist():
        ia = (labels_a == label).nonzero()[:, 0]
        ib = (labels_b == label).nonzero()[:, 0]
        boxes_a, boxes_b = a["boxes"].cpu()[ia].double(), b["boxes"].cpu()[ib].double()
        box_cost = torch.cdist(boxes_a, boxes_b, p=float("inf")) / box_tol
        score_cost = (a["scores"].cpu()[ia].double()[:, None] - b["scores"].cpu()[ib].double()[None, :]).abs() / score_tol
        cost = torch.maximum(box_cost, score_cost).numpy()
        rows, cols = linear_sum_assignment(cost)
        k = int(cost[rows, cols].argmax())
        if cost[rows[k], cols[k]] > worst:
            worst = float(cost[rows[k], cols[k]])
            where = (f"label {label}: a[{int(ia[rows[k]])}] box {a['boxes'][ia[rows[k]]].tolist()} score "
                     f"{float(a['scores'][ia[rows[k]]]):.6f} vs b[{int(ib[cols[k]])}] box "
                     f"{b['boxes'][ib[cols[k]]].tolist()} score {float(b['scores'][ib[cols[k]]]):.6f}")
    return worst, where


def assert_same_detections_unordered(detections_a, detections_b, box_tol: float, score_tol: float,
                                     min_count: int = 0) -> None:
    """Per image: as many detections of each label (at least ``min_count`` in all), and
    :func:`match_detections_unordered` pairs them with boxes within ``box_tol`` px and scores
    within ``score_tol``. Order-free, so two detections whose near-equal scores swap places
    still compare equal; a box that genuinely moved does not."""
    assert len(detections_a) == len(detections_b), f"{len(detections_a)} vs {len(detections_b)} images"
    for i, (a, b) in enumerate(zip(detections_a, detections_b)):
        assert len(a["boxes"]) == len(b["boxes"]) >= min_count, (i, len(a["boxes"]), len(b["boxes"]))
        worst, where = match_detections_unordered(a, b, box_tol, score_tol)
        assert worst <= 1.0, f"image {i}: detections differ beyond box_tol={box_tol}, score_tol={score_tol}: {where}"
