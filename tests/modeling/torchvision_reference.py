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


# ---------------------------------------------------------------- tolerances from float32 rounding
#: How many times torchvision's own float32 rounding error one of our float32 results may be
#: off the float64 value: our result and torchvision's are two float32 evaluations of the same
#: real computation whose sums run in other orders (a fused BatchNorm, a channels-last or
#: another ISA's convolution blocking), so each carries a rounding error of the size measured
#: for torchvision; 4 leaves a factor 2 for the spread of that error between two evaluations.
#: Observed on an AVX2 EPYC and with ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41:
#: ratios 0.8-1.9 (channels-last the largest).
FLOAT32_ERROR_FACTOR = 4.0
#: A real bug (a wrong offset, a swapped coordinate, a missing +1) moves boxes by >= 0.5 px;
#: the derived bound must stay far below that or the comparison would prove nothing.
LARGEST_MEANINGFUL_BOX_BOUND = 0.05


def float64_copy(model):
    """``model`` in float64: the stand-in for the exact value of its float32 computation
    (29 more mantissa bits than float32's 24)."""
    import copy

    return copy.deepcopy(model).double().eval()


def as_float32(outputs):
    return [{k: (v.float() if v.is_floating_point() else v) for k, v in o.items()} for o in outputs]


def detection_errors(detections_a, detections_b) -> tuple[float, float]:
    """The largest box difference (px) and score difference between paired detections of the
    same images (paired as :func:`match_detections_unordered` does, per label)."""
    box = score = 0.0
    for a, b in zip(detections_a, detections_b):
        assert len(a["boxes"]) == len(b["boxes"]), (len(a["boxes"]), len(b["boxes"]))
        box = max(box, match_detections_unordered(a, b, 1.0, float("inf"))[0])
        score = max(score, match_detections_unordered(a, b, float("inf"), 1.0)[0])
    return box, score


def float32_detection_bounds(tv32, tv64) -> tuple[float, float]:
    """``(box_tol, score_tol)`` for comparing one of our float32 results with ``tv64``:
    :data:`FLOAT32_ERROR_FACTOR` times torchvision's float32 error on the same inputs, floored
    at 8 float32 ulps of the largest coordinate / of a score of 1 (an exactly rounded run)."""
    box_error, score_error = detection_errors(as_float32(tv64), tv32)
    largest = max(float(d["boxes"].abs().max()) for d in tv32 if len(d["boxes"]))
    eps = torch.finfo(torch.float32).eps
    box_tol = max(FLOAT32_ERROR_FACTOR * box_error, 8 * eps * largest)
    score_tol = max(FLOAT32_ERROR_FACTOR * score_error, 8 * eps)
    assert box_tol < LARGEST_MEANINGFUL_BOX_BOUND, f"float32 noise {box_error} px: the reference is ill-conditioned"
    return box_tol, score_tol


def assert_within_float32_noise(ours, tv32, tv64, min_count: int = 0) -> None:
    """Ours (float32) against torchvision's float64 run, within the bounds that torchvision's
    own float32 run sets (:func:`float32_detection_bounds`); same counts per label."""
    box_tol, score_tol = float32_detection_bounds(tv32, tv64)
    assert_same_detections_unordered(ours, as_float32(tv64), box_tol, score_tol, min_count=min_count)


def assert_tensor_within_float32_noise(ours, tv32, tv64, what: str) -> None:
    """A tensor of ours within :data:`FLOAT32_ERROR_FACTOR` x torchvision's float32 error of
    the float64 value (floored at 8 ulps of the tensor's largest magnitude)."""
    exact = tv64.double()
    bound = max(FLOAT32_ERROR_FACTOR * float((tv32.double() - exact).abs().max()),
                8 * torch.finfo(torch.float32).eps * float(exact.abs().max()))
    error = float((ours.double() - exact).abs().max())
    assert error <= bound, f"{what}: {error:.3g} from the float64 value; float32 bound {bound:.3g}"
