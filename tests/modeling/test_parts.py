"""Faster R-CNN parts: golden values and equality with their torchvision counterparts."""
from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torchvision
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads as TVRoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork as TVRegionProposalNetwork
from torchvision.models.detection.rpn import RPNHead as TVRPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from detect.modeling import roi_ops
from detect.modeling.anchors import AnchorGenerator
from detect.modeling.box_coder import BoxCoder
from detect.modeling.box_heads import FastRCNNPredictor, TwoMLPHead
from detect.modeling.fpn import FPN
from detect.modeling.matcher import Matcher
from detect.modeling.poolers import RoIPooler
from detect.modeling.roi_heads import RoIHeads
from detect.modeling.rpn import RegionProposalNetwork, RPNHead
from detect.modeling.sampler import BalancedPositiveNegativeSampler
from detect.modeling.transform import ImageBatch, ImageTransform

pytestmark = pytest.mark.parity


def random_boxes(n, size=100.0, min_side=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2 + min_side
    return torch.cat([xy, xy + wh], dim=1)


# ----------------------------------------------------------------------------- anchors
def test_anchor_golden_values_and_torchvision_equality():
    sizes, ratios = ((32,), (64,)), ((0.5, 1.0, 2.0),) * 2
    ours = AnchorGenerator(sizes, (0.5, 1.0, 2.0))
    anchors = ours([(2, 4), (1, 2)], [(8, 8), (16, 16)])
    assert [a.shape for a in anchors] == [torch.Size([24, 4]), torch.Size([6, 4])]
    # Cell anchor of ratio 0.5 (h/w), size 32: w = 32*sqrt(2) = 45.25, h = 22.63 -> halves rounded.
    assert anchors[0][0].tolist() == [-23.0, -11.0, 23.0, 11.0]
    # Last: level 1, position (row 0, col 1) shifted by 16 px, ratio 2: w = 45.25, h = 90.51.
    assert anchors[1][-1].tolist() == [-7.0, -45.0, 39.0, 45.0]
    # Position-major order: anchors 3..5 of level 0 sit one stride (8 px) to the right.
    assert torch.equal(anchors[0][3:6] - anchors[0][0:3], torch.tensor([[8.0, 0, 8, 0]] * 3))

    theirs = TVAnchorGenerator(sizes, ratios)
    image_list = ImageList(torch.zeros(1, 3, 16, 32), [(16, 32)])
    features = [torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 1, 2)]
    assert torch.equal(torch.cat(anchors), theirs(image_list, features)[0])


def test_anchor_generator_paper_setup_and_errors():
    generator = AnchorGenerator(((128, 256, 512),), ((0.5, 1.0, 2.0),))
    assert generator.num_anchors_per_location() == [9]
    (anchors,) = generator([(3, 5)], [(16, 16)])
    assert anchors.shape == (3 * 5 * 9, 4)
    widths = (anchors[:9, 2] - anchors[:9, 0]).tolist()
    assert widths == [182.0, 362.0, 724.0, 128.0, 256.0, 512.0, 90.0, 182.0, 362.0]
    with pytest.raises(ValueError, match="1 levels .* but got 2 feature maps"):
        generator([(3, 5), (2, 3)], [(16, 16), (32, 32)])


# ----------------------------------------------------------------------------- box coder
def test_box_coder_round_trip_and_torchvision_equality():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    reference = random_boxes(50, seed=1)
    boxes = random_boxes(50, seed=2)
    deltas = coder.encode(boxes, reference)
    assert torch.allclose(coder.decode(deltas, reference)[:, 0], boxes, atol=1e-4)

    tv_coder = tv_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))
    assert torch.equal(deltas, tv_coder.encode_single(boxes, reference))
    codes = torch.randn(50, 12)
    assert torch.equal(coder.decode(codes, reference), tv_coder.decode_single(codes, reference).view(50, 3, 4))


def test_box_coder_clamps_log_size_deltas():
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    reference = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    (box,) = coder.decode(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), reference)[:, 0]
    assert torch.isfinite(box).all()
    assert box[2] - box[0] == pytest.approx(10.0 * 1000.0 / 16, rel=1e-5)
    assert box[3] - box[1] == pytest.approx(20.0 * 1000.0 / 16, rel=1e-5)


# ----------------------------------------------------------------------------- matcher
def test_matcher_low_quality_matches_with_ties():
    quality = torch.tensor([[0.9, 0.4, 0.1, 0.2], [0.1, 0.65, 0.65, 0.0]])
    assert Matcher(0.7, 0.3, False)(quality.clone()).tolist() == [0, -2, -2, -1]
    # gt 1's best predictions (0.65, tied) are matched to it despite being below 0.7.
    assert Matcher(0.7, 0.3, True)(quality.clone()).tolist() == [0, 1, 1, -1]
    assert Matcher(0.7, 0.3, True)(torch.zeros(0, 5)).tolist() == [-1] * 5


def test_matcher_equals_torchvision_on_random_quality():
    g = torch.Generator().manual_seed(0)
    quality = torch.rand(6, 300, generator=g) * 0.9
    for low_quality in (False, True):
        ours = Matcher(0.7, 0.3, low_quality)(quality.clone())
        theirs = tv_utils.Matcher(0.7, 0.3, low_quality)(quality.clone())
        assert torch.equal(ours, theirs)


# ----------------------------------------------------------------------------- sampler
def test_sampler_counts_and_torchvision_equality():
    labels = [torch.cat([torch.ones(300, dtype=torch.int64), torch.zeros(900, dtype=torch.int64), -torch.ones(50, dtype=torch.int64)]),
              torch.cat([torch.full((10,), 2, dtype=torch.int64), torch.zeros(40, dtype=torch.int64)])]
    sampler = BalancedPositiveNegativeSampler(512, 0.25, generator=torch.Generator().manual_seed(7))
    positive, negative = sampler(labels)
    assert [int(p.sum()) for p in positive] == [128, 10]
    assert [int(n.sum()) for n in negative] == [384, 40]
    assert not (positive[0] & negative[0]).any() and not positive[0][1200:].any() and not negative[0][1200:].any()

    sampler.generator = torch.Generator().manual_seed(7)
    ours = sampler(labels)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        theirs = tv_utils.BalancedPositiveNegativeSampler(512, 0.25)(labels)
    for a, b in zip(ours[0] + ours[1], theirs[0] + theirs[1]):
        assert torch.equal(a, b.bool())


# ----------------------------------------------------------------------------- transform
def test_image_transform_equals_torchvision():
    torch.manual_seed(0)
    images = [torch.rand(3, 120, 170), torch.rand(3, 200, 90)]
    targets = [{"boxes": random_boxes(3, 80, seed=3), "labels": torch.tensor([1, 2, 3])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    ours = ImageTransform(160, 260, size_divisibility=32)
    theirs = GeneralizedRCNNTransform(160, 260, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).eval()
    batch, new_targets = ours(images, targets)
    image_list, tv_targets = theirs(images, [dict(t) for t in targets])
    # 120x170: scale 160/120 -> 160x226; 200x90: 160/90 would make 356 > 260, so 260/200 -> 260x117.
    assert batch.image_sizes == [(160, 226), (260, 117)] == list(image_list.image_sizes)
    assert batch.tensor.shape == (2, 3, 288, 256)
    assert torch.equal(batch.tensor, image_list.tensors)
    assert torch.equal(new_targets[0]["boxes"], tv_targets[0]["boxes"])
    assert targets[0]["boxes"] is not new_targets[0]["boxes"]  # inputs untouched
    detections = [{"boxes": random_boxes(5, 150, seed=4), "scores": torch.rand(5), "labels": torch.ones(5, dtype=torch.int64)}] * 2
    back = ours.postprocess(detections, batch)
    tv_back = theirs.postprocess([dict(d) for d in detections], image_list.image_sizes, [(120, 170), (200, 90)])
    for a, b in zip(back, tv_back):
        assert torch.equal(a["boxes"], b["boxes"])


def test_image_transform_sizes():
    transform = ImageTransform(min_size=100, max_size=150, size_divisibility=32)
    batch, _ = transform([torch.rand(3, 50, 200), torch.rand(3, 100, 100)])
    # 50x200: min side -> 100 would make the long side 400 > 150, so scale = 150 / 200.
    assert batch.image_sizes == [(37, 150), (100, 100)]
    assert batch.original_sizes == [(50, 200), (100, 100)]
    assert batch.tensor.shape == (2, 3, 128, 160)
    assert batch.tensor[0, :, 37:].abs().sum() == 0 and batch.tensor[1, :, :, 100:].abs().sum() == 0


# ----------------------------------------------------------------------------- RoI pooling
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2])
def test_roi_align_equals_torchvision_forward_and_backward(aligned, sampling_ratio):
    torch.manual_seed(0)
    features = torch.randn(2, 16, 21, 27, requires_grad=True)
    boxes = random_boxes(60, 200, min_side=0.2, seed=5) - 20  # some outside the map, some tiny
    rois = torch.cat([torch.randint(0, 2, (60, 1)).float(), boxes], dim=1)
    ours = roi_ops.roi_align(features, rois, (7, 7), 0.125, sampling_ratio, aligned)
    theirs = torchvision.ops.roi_align(features, rois, (7, 7), 0.125, sampling_ratio, aligned)
    assert ours.shape == (60, 16, 7, 7)
    assert torch.allclose(ours, theirs, atol=1e-5)
    weights = torch.randn_like(theirs)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), features)
    (grad_theirs,) = torch.autograd.grad((theirs * weights).sum(), features)
    assert torch.allclose(grad_ours, grad_theirs, atol=1e-5)


def test_roi_align_channels_last_and_empty():
    features = torch.randn(1, 8, 10, 12).contiguous(memory_format=torch.channels_last)
    rois = torch.tensor([[0.0, 1.0, 2.0, 30.0, 40.0]])
    assert torch.allclose(roi_ops.roi_align(features, rois, 3, 0.25, 2),
                          torchvision.ops.roi_align(features.contiguous(), rois, 3, 0.25, 2), atol=1e-6)
    assert roi_ops.roi_align(features, rois[:0], 3, 0.25, 2).shape == (0, 8, 3, 3)


def test_multilevel_pooler_equals_multiscale_roi_align():
    torch.manual_seed(0)
    sizes = [(64, 96), (32, 48), (16, 24), (8, 12)]
    features = OrderedDict((f"p{i + 2}", torch.randn(2, 8, h, w, requires_grad=True)) for i, (h, w) in enumerate(sizes))
    g = torch.Generator().manual_seed(6)
    sides = torch.exp(torch.empty(65, 2).uniform_(math.log(4.0), math.log(350.0), generator=g))
    corners = torch.rand(65, 2, generator=g) * 100
    all_boxes = torch.cat([corners, corners + sides], dim=1)  # sides 4..350 px: every FPN level
    big = torch.tensor([[0.0, 0.0, 500.0, 460.0], [20.0, 10.0, 520.0, 470.0]])  # level 5: sqrt(area) >= 448
    boxes = [torch.cat([all_boxes[:40], big]), all_boxes[40:]]
    image_sizes = [(256, 384), (250, 380)]
    theirs = MultiScaleRoIAlign(list(features), 7, 2)(features, boxes, image_sizes)
    ours = RoIPooler(7, [4, 8, 16, 32], "roi_align", 2)(list(features.values()), boxes)
    assert torch.allclose(ours, theirs, atol=1e-5)
    weights = torch.randn_like(theirs)
    grads = torch.autograd.grad((ours * weights).sum(), list(features.values()))
    tv_grads = torch.autograd.grad((theirs * weights).sum(), list(features.values()))
    for a, b in zip(grads, tv_grads):
        assert torch.allclose(a, b, atol=1e-5)
    levels = RoIPooler(7, [4, 8, 16, 32]).mapper(torch.cat(boxes))
    assert set(levels.tolist()) == {0, 1, 2, 3}  # the test covers every level

    with torch.no_grad():
        pooled = RoIPooler(5, [16], "roi_pool")([features["p4"]], boxes)
        reference = torchvision.ops.roi_pool(features["p4"], torch.cat(
            [torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)]), 5, 1 / 16)
    assert torch.equal(pooled, reference)
    with pytest.raises(ValueError, match="box_roi_pool"):
        RoIPooler(7, [16], "roi_max")


# ----------------------------------------------------------------------------- FPN
def test_fpn_equals_torchvision():
    torch.manual_seed(0)
    channels = {"c2": 8, "c3": 16, "c4": 32, "c5": 64}
    ours = FPN(channels, {"c2": 4, "c3": 8, "c4": 16, "c5": 32}, out_channels=12)
    theirs = FeaturePyramidNetwork(list(channels.values()), 12, LastLevelMaxPool())
    theirs.load_state_dict(ours.state_dict())
    inputs = OrderedDict((n, torch.randn(1, c, 40 // 2 ** i, 36 // 2 ** i)) for i, (n, c) in enumerate(channels.items()))
    out = ours(inputs)
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    assert ours.strides == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    for a, b in zip(out.values(), theirs(inputs).values()):
        assert torch.equal(a, b)
    assert out["p6"].shape[-2:] == (3, 2)  # c5 is 5x4; P6 subsamples it by 2


# ----------------------------------------------------------------------------- RPN
def _rpn_pair(pre=50, post=30):
    torch.manual_seed(0)
    sizes, ratios = ((16,), (32,)), ((0.5, 1.0, 2.0),) * 2
    head = RPNHead(8, 3)
    for p in head.parameters():  # larger weights than the init: varied objectness
        torch.nn.init.normal_(p, std=0.3)
    tv_head = TVRPNHead(8, 3)
    tv_head.load_state_dict(head.state_dict())
    ours = RegionProposalNetwork(AnchorGenerator(sizes, (0.5, 1.0, 2.0)), head, 0.7, 0.3, 64, 0.5,
                                 {"train": pre, "test": pre}, {"train": post, "test": post}, 0.7)
    theirs = TVRegionProposalNetwork(TVAnchorGenerator(sizes, ratios), tv_head, 0.7, 0.3, 64, 0.5,
                                     {"training": pre, "testing": pre}, {"training": post, "testing": post}, 0.7)
    return ours, theirs


def test_rpn_proposals_and_losses_equal_torchvision():
    ours, theirs = _rpn_pair()
    features = [torch.randn(2, 8, 16, 20), torch.randn(2, 8, 8, 10)]
    image_sizes = [(64, 80), (60, 70)]
    batch = ImageBatch(torch.zeros(2, 3, 64, 80), image_sizes, image_sizes)
    image_list = ImageList(batch.tensor, image_sizes)
    targets = [{"boxes": torch.tensor([[5.0, 5.0, 30.0, 40.0], [40.0, 10.0, 70.0, 30.0]]), "labels": torch.tensor([1, 2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]

    theirs.eval()
    proposals, losses = ours(batch, features, [4, 8], training=False)
    tv_proposals, _ = theirs(image_list, OrderedDict(zip("ab", features)))
    assert losses == {}
    assert [p.shape[0] for p in proposals] == [30, 30]
    for a, b in zip(proposals, tv_proposals):
        assert torch.allclose(a, b, atol=1e-4)

    theirs.train()
    ours.sampler.generator = torch.Generator().manual_seed(3)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        tv_proposals, tv_losses = theirs(image_list, OrderedDict(zip("ab", features)), targets)
    proposals, losses = ours(batch, features, [4, 8], targets, training=True)
    assert set(losses) == set(tv_losses)
    for key in losses:
        assert torch.allclose(losses[key], tv_losses[key], atol=1e-6), key
        assert losses[key] > 0


# ----------------------------------------------------------------------------- RoI heads
def _roi_heads_pair(num_classes=4):
    torch.manual_seed(0)
    pooler = RoIPooler(7, [4, 8, 16, 32])
    head, predictor = TwoMLPHead(8 * 49, 32), FastRCNNPredictor(32, num_classes)
    for p in predictor.parameters():
        torch.nn.init.normal_(p, std=0.3)
    ours = RoIHeads(pooler, head, predictor, 0.5, 0.5, 64, 0.25, None, 0.05, 0.5, 20)
    theirs = TVRoIHeads(MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2), head, predictor,
                        0.5, 0.5, 64, 0.25, None, 0.05, 0.5, 20)
    return ours, theirs


def test_roi_heads_detections_and_losses_equal_torchvision():
    ours, theirs = _roi_heads_pair()
    sizes = [(32, 40), (16, 20), (8, 10), (4, 5)]
    features = [torch.randn(2, 8, h, w) for h, w in sizes]
    named = OrderedDict((str(i), f) for i, f in enumerate(features))
    image_sizes = [(128, 160), (120, 150)]
    proposals = [random_boxes(80, 110, seed=8), random_boxes(60, 100, seed=9)]

    theirs.eval()
    detections, losses = ours(features, [p.clone() for p in proposals], image_sizes, training=False)
    tv_detections, _ = theirs(named, [p.clone() for p in proposals], image_sizes)
    assert losses == {}
    assert sum(len(d["boxes"]) for d in detections) > 20
    for a, b in zip(detections, tv_detections):
        assert torch.equal(a["labels"], b["labels"])
        assert torch.allclose(a["boxes"], b["boxes"], atol=1e-4)
        assert torch.allclose(a["scores"], b["scores"], atol=1e-6)
        assert a["labels"].dtype == torch.int64 and a["labels"].min() >= 1

    targets = [{"boxes": proposals[0][:3] + 2.0, "labels": torch.tensor([1, 2, 3])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    theirs.train()
    ours.sampler.generator = torch.Generator().manual_seed(4)
    with torch.random.fork_rng():
        torch.manual_seed(4)
        _, tv_losses = theirs(named, [p.clone() for p in proposals], image_sizes, targets)
    _, losses = ours(features, [p.clone() for p in proposals], image_sizes, targets, training=True)
    for key in ("loss_classifier", "loss_box_reg"):
        assert torch.allclose(losses[key], tv_losses[key], atol=1e-6), key
        assert losses[key] > 0


def test_roi_heads_box_loss_is_zero_without_objects():
    ours, _ = _roi_heads_pair()
    features = [torch.randn(1, 8, 32 // 2 ** i, 40 // 2 ** i) for i in range(4)]
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    _, losses = ours(features, [random_boxes(30, 100, seed=10)], [(128, 160)], empty, training=True)
    assert losses["loss_box_reg"].item() == 0.0
    assert math.isfinite(losses["loss_classifier"].item()) and losses["loss_classifier"] > 0
