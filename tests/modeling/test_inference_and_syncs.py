"""Norm folding shared by the backbone and the detector's inference path, FPN lateral fusion
with folded BatchNorm, and the host reads (device syncs) of sampling and target validation."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from backbones.norm import FrozenBatchNorm2d
from detect import build_detector
from detect.modeling.base import validate_targets
from detect.modeling.fast_inference import FusedConv2d, fold_sequential_norms_, mkldnn_fusion_available
from detect.modeling.sampler import BalancedPositiveNegativeSampler
from torchvision_reference import assert_same_detections_unordered

SMALL = dict(num_classes=3, min_size=96, max_size=160, rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100)


def randomize_norms_(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                n = m.running_mean.numel()
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


# ---------------------------------------------------------------------------- folding
def test_fold_sequential_norms_refuses_training_batchnorm_and_keeps_dtypes():
    block = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6))
    randomize_norms_(block)
    with pytest.raises(RuntimeError, match=r"training mode.*\.eval\(\)"):
        fold_sequential_norms_(block.train())
    assert isinstance(block[1], nn.BatchNorm2d)

    x = torch.randn(2, 4, 9, 9)
    block.eval()
    with torch.no_grad():
        expected = block(x)
    assert fold_sequential_norms_(block) == 1 and isinstance(block[1], nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)

    # A bfloat16 convolution stays bfloat16 (the float32 statistics are cast, not promoted).
    half = nn.Sequential(nn.Conv2d(4, 6, 1).to(torch.bfloat16), FrozenBatchNorm2d(6))
    randomize_norms_(half)
    fold_sequential_norms_(half)
    assert half[0].weight.dtype == half[0].bias.dtype == torch.bfloat16


@pytest.mark.skipif(not mkldnn_fusion_available(), reason="needs oneDNN fused convolutions")
def test_fpn_with_batchnorm_fuses_its_laterals_and_keeps_the_outputs(shapes_data):
    images, _ = shapes_data
    torch.manual_seed(0)
    model = build_detector("faster_rcnn", backbone="resnet18", fpn_norm="bn", box_score_thresh=0.0, **SMALL)
    randomize_norms_(model)
    model.eval()
    with torch.no_grad():
        batch, _ = model.transform(images)
        reference_features = model.extract_features(batch)
    reference = model.predict(images)

    model.optimize_for_inference(channels_last=False)
    laterals = list(model.neck.inner_blocks)
    assert all(isinstance(block[0], FusedConv2d) and isinstance(block[1], nn.Identity) for block in laterals)
    with torch.no_grad():
        features = model.extract_features(batch)
    for name, value in reference_features.items():
        scale = value.abs().max().item()
        assert (features[name] - value).abs().max().item() <= 1e-5 * scale, name
    fast = model.predict(images)
    # order-free: near-equal scores may swap two detections between the two paths
    assert_same_detections_unordered(reference, fast, box_tol=1e-3, score_tol=1e-4, min_count=11)


# ------------------------------------------------------------------------- host reads
HOST_READS = {"__bool__", "__int__", "__float__", "__index__", "item", "tolist"}
INDEX_QUERIES = {"where", "nonzero", "argwhere"}


class CountHostReads(TorchFunctionMode):
    """Counts tensor -> Python conversions (a device sync each on GPU) and data-dependent index
    queries (``torch.where(mask)``, ``nonzero``: a sync each on GPU)."""

    def __init__(self):
        super().__init__()
        self.reads, self.queries = [], []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.reads.append(name)
        elif name in INDEX_QUERIES and len(args) + len(kwargs or {}) == 1:
            self.queries.append(name)
        return func(*args, **(kwargs or {}))


def test_sampler_reads_only_the_candidate_indices():
    labels = [torch.tensor([1, 0, 0, -1, 2, 0, 0, 0]), torch.tensor([0, 0, 0, 1]), torch.tensor([-1, 0])]
    sampler = BalancedPositiveNegativeSampler(4, 0.5, generator=torch.Generator().manual_seed(0))
    with CountHostReads() as counter:
        positive, negative = sampler(labels)
    assert counter.reads == [] and counter.queries == ["where", "where"] * len(labels)
    assert [int(p.sum()) for p in positive] == [2, 1, 0] and [int(n.sum()) for n in negative] == [2, 3, 1]


def test_target_validation_reads_the_device_once_per_batch():
    g = torch.Generator().manual_seed(0)
    targets = []
    for n in (3, 0, 5, 2):
        xy = torch.rand(n, 2, generator=g) * 50
        targets.append({"boxes": torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=g) * 20], dim=1),
                        "labels": torch.randint(1, 4, (n,), generator=g)})
    with CountHostReads() as counter:
        validate_targets(targets, 4, 3)
    assert counter.reads == ["__bool__"] and counter.queries == []

    # Errors still name the first bad image and box, in image order.
    bad = [dict(t) for t in targets]
    bad[3]["labels"] = torch.tensor([1, 0])
    bad[2]["boxes"] = bad[2]["boxes"].clone()
    bad[2]["boxes"][4, 0] = float("nan")
    with pytest.raises(ValueError, match=r"target 2, box 4: non-finite box"):
        validate_targets(bad, 4, 3)
    bad[2] = targets[2]
    with pytest.raises(ValueError, match=r"target 3, box 1: label 0 is outside 1..3"):
        validate_targets(bad, 4, 3)


def test_order_free_detection_comparison_pairs_swapped_ties_and_still_catches_a_moved_box():
    boxes = torch.tensor([[10.0, 10.0, 40.0, 40.0], [50.0, 12.0, 90.0, 60.0], [5.0, 5.0, 20.0, 25.0]])
    a = {"boxes": boxes, "scores": torch.tensor([0.700001, 0.7, 0.3]), "labels": torch.tensor([1, 1, 2])}
    swapped = {k: v[[1, 0, 2]] for k, v in a.items()}  # the two near-tied scores change places
    assert_same_detections_unordered([a], [swapped], box_tol=1e-3, score_tol=1e-4)
    moved = {**a, "boxes": boxes + torch.tensor([[0.0, 0.0, 0.0, 0.0], [14.7, 0.0, 14.7, 0.0], [0.0] * 4])}
    with pytest.raises(AssertionError, match=r"image 0: detections differ .*label 1"):
        assert_same_detections_unordered([a], [moved], box_tol=1e-3, score_tol=1e-4)
    rescored = {**a, "scores": torch.tensor([0.700001, 0.7, 0.31])}
    with pytest.raises(AssertionError, match="label 2"):
        assert_same_detections_unordered([a], [rescored], box_tol=1e-3, score_tol=1e-4)
    relabelled = {**a, "labels": torch.tensor([1, 2, 2])}
    with pytest.raises(AssertionError, match="detections per label differ"):
        assert_same_detections_unordered([a], [relabelled], box_tol=1e-3, score_tol=1e-4)
