"""Fast R-CNN (given proposals) and the two-stage parts it shares with Faster R-CNN."""
from __future__ import annotations

import pytest
import torch

from detect import build_detector
from detect.modeling.transform import scale_boxes

SMALL_FASTER = dict(min_size=96, max_size=160, rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=50)


def test_propose_returns_the_rpn_proposals_in_input_pixels(make_shapes_batch):
    images, _ = make_shapes_batch([0, 1])
    images = [images[0], torch.nn.functional.interpolate(images[1][None], size=(80, 120))[0]]
    torch.manual_seed(0)
    model = build_detector("faster_rcnn", backbone="resnet18", fpn=True, num_classes=3, **SMALL_FASTER).train()
    boxes, scores = model.propose(images)
    assert model.training  # the mode is restored
    assert len(boxes) == len(scores) == 2

    # The RPN's own proposals, in network-input pixels, mapped back by the transform.
    model.eval()
    with torch.no_grad():
        batch, _ = model.transform(images)
        features = model.extract_features(batch)
        levels = [features[n] for n in model.proposal_features]
        reference, _ = model.rpn(batch, levels, [model.feature_strides[n] for n in model.proposal_features])
        logits, _ = model.rpn.head(levels)
        best_logit = torch.stack([level.flatten(1).max(1).values for level in logits], 1).max(1).values
    for i, image in enumerate(images):
        expected = scale_boxes(reference[i], batch.image_sizes[i], batch.original_sizes[i])
        assert boxes[i].shape == (expected.shape[0], 4) and scores[i].shape == (expected.shape[0],)
        assert 0 < boxes[i].shape[0] <= 50
        torch.testing.assert_close(boxes[i], expected, rtol=0, atol=0)
        assert (scores[i] > 0).all() and (scores[i] < 1).all()
        assert (scores[i][:-1] >= scores[i][1:]).all()  # best first
        # the best anchor always survives NMS: its score is the sigmoid of the top logit
        torch.testing.assert_close(scores[i][0], torch.sigmoid(best_logit[i]))
        height, width = image.shape[-2:]
        assert (boxes[i][:, 2] <= width + 1e-4).all() and (boxes[i][:, 3] <= height + 1e-4).all()
        assert not boxes[i].requires_grad and not scores[i].requires_grad


# ---------------------------------------------------------------------- labelling and sampling
from torch import nn  # noqa: E402

from detect.errors import UserInputError  # noqa: E402
from detect.modeling.box_heads import TwoMLPHead, VGGHead  # noqa: E402
from detect.modeling.meta_arch.fast_rcnn import FastRCNN  # noqa: E402
from detect.modeling.roi_heads import RoIHeads  # noqa: E402

SMALL = dict(min_size=96, max_size=160)
GT = torch.tensor([[0.0, 0.0, 10.0, 10.0]])


def shifted(iou: float) -> list[float]:
    """A 10 x 10 box shifted right along x so that its IoU with GT is ``iou``."""
    shift = 10 * (1 - iou) / (1 + iou)
    return [shift, 0.0, shift + 10, 10.0]


def sampling_heads(**options) -> RoIHeads:
    model = build_detector("fast_rcnn", backbone="resnet18", fpn=True, num_classes=3, **SMALL, **options)
    return model.roi_heads


def test_background_lies_in_the_papers_range_and_foreground_at_half():
    proposals = torch.tensor([shifted(0.05), shifted(0.2), shifted(0.45), shifted(0.6)])
    from torchvision.ops import box_iou

    torch.testing.assert_close(box_iou(GT, proposals)[0], torch.tensor([0.05, 0.2, 0.45, 0.6]))
    target = {"boxes": GT, "labels": torch.tensor([2])}
    heads = sampling_heads()
    assert heads.bg_iou_low_thresh == 0.1 and heads.sampler.batch_size_per_image == 64
    assert heads.sampler.positive_fraction == 0.25 and heads.matcher.high_threshold == 0.5
    sampled, labels, regression = heads.select_training_samples([proposals], [target])
    # 0.05 is ignored; 0.2 and 0.45 are background; 0.6 and the ground truth itself are class 2
    expected = torch.cat([proposals[1:], GT])
    order = torch.argsort(sampled[0][:, 0], descending=True)
    torch.testing.assert_close(sampled[0][order], expected[torch.argsort(expected[:, 0], descending=True)])
    by_iou = {round(float(box_iou(GT, box[None])[0, 0]), 2): int(label) for box, label in zip(sampled[0], labels)}
    assert by_iou == {0.2: 0, 0.45: 0, 0.6: 2, 1.0: 2}
    foreground = labels > 0
    encoded = heads.box_coder.encode(GT.expand(2, 4), sampled[0][foreground])
    torch.testing.assert_close(regression[foreground], encoded)
    assert (regression[~foreground] == 0).all()

    # Faster R-CNN keeps background in [0, 0.5): the 0.05 proposal is background there
    faster = build_detector("faster_rcnn", backbone="resnet18", num_classes=3, **SMALL).roi_heads
    assert faster.bg_iou_low_thresh == 0.0 and faster.box_loss_beta == pytest.approx(1 / 9)
    _, faster_labels, _ = faster.select_training_samples([proposals], [target])
    assert sorted(faster_labels.tolist()) == [0, 0, 0, 2, 2]

    # an image without objects: every proposal is background (there is no IoU to bound)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    sampled, labels, _ = heads.select_training_samples([proposals], [empty])
    assert sampled[0].shape == (4, 4) and labels.tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="bg_iou_low_thresh"):
        sampling_heads(box_bg_iou_low_thresh=0.6)


def test_ground_truth_is_added_to_the_rois():
    boxes = torch.tensor([[5.0, 5.0, 40.0, 30.0], [50.0, 10.0, 90.0, 60.0]])
    target = {"boxes": boxes, "labels": torch.tensor([1, 3])}
    heads = sampling_heads()
    # no proposals at all: the RoIs are exactly the ground-truth boxes, labelled, zero targets
    sampled, labels, regression = heads.select_training_samples([torch.zeros(0, 4)], [target])
    torch.testing.assert_close(sampled[0], boxes, rtol=0, atol=0)
    assert labels.tolist() == [1, 3] and (regression == 0).all()
    # with 100 far background proposals, both ground-truth boxes are still sampled as foreground
    far = torch.tensor([[100.0, 100.0, 120.0, 120.0]]).repeat(100, 1) + torch.arange(100.0)[:, None]
    sampled, labels, _ = heads.select_training_samples([far], [target])
    assert sampled[0].shape[0] == 2  # the far boxes have IoU 0 < 0.1: ignored, not background
    near = torch.tensor([[6.0, 6.0, 30.0, 30.0]]).repeat(100, 1)  # IoU 0.66 with the first box: foreground
    sampled, labels, _ = heads.select_training_samples([near], [target])
    assert labels.numel() == 16 and (labels > 0).all()  # 25 % of 64: at most 16 foreground, no background
    from_near = (sampled[0] == near[0]).all(dim=1)
    assert (labels[from_near] == 1).all() and (labels[~from_near] > 0).all()


# ---------------------------------------------------------------------- the family
def test_builder_variants_and_paper_defaults():
    vgg = build_detector("fast_rcnn", num_classes=3, **SMALL, box_representation_size=256)
    assert isinstance(vgg, FastRCNN) and vgg.accepts_proposals and vgg.rpn is None
    assert isinstance(vgg.roi_heads.box_head, VGGHead) and vgg.roi_heads.pooler.pooler_type == "roi_pool"
    assert vgg.roi_heads.pooler.output_size == (7, 7) and vgg.feature_strides == {"c4": 16}
    assert vgg.roi_heads.nms_thresh == 0.3 and vgg.roi_heads.box_loss_beta == 1.0
    assert vgg.roi_heads.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert not any(k.startswith("rpn.") for k in vgg.state_dict())
    import inspect

    from detect.modeling.meta_arch.fast_rcnn import build_fast_rcnn

    defaults = {k: v.default for k, v in inspect.signature(build_fast_rcnn).parameters.items()}
    assert (defaults["backbone"], defaults["fpn"], defaults["min_size"], defaults["max_size"]) == ("tv:vgg16", False, 600, 1000)
    assert (defaults["box_batch_size_per_image"], defaults["box_positive_fraction"]) == (64, 0.25)
    aligned = build_detector("fast_rcnn", num_classes=3, **SMALL, box_representation_size=256, box_roi_pool="roi_align")
    assert aligned.roi_heads.pooler.pooler_type == "roi_align"

    fpn = build_detector("fast_rcnn", backbone="resnet18", fpn=True, num_classes=3, **SMALL)
    assert fpn.roi_features == ["p2", "p3", "p4", "p5"] and isinstance(fpn.roi_heads.box_head, TwoMLPHead)
    c4 = build_detector("fast_rcnn", backbone="resnet18", fpn=False, num_classes=3, **SMALL)
    assert c4.roi_features == ["c4"] and c4.roi_heads.pooler.output_size == (14, 14)
    with pytest.raises(ValueError, match="proposal_generator"):
        build_detector("fast_rcnn", num_classes=3, proposal_generator="edge_boxes")
    with pytest.raises(ValueError, match="num_classes"):
        build_detector("fast_rcnn", num_classes=0)


def jittered_proposals(target, count=40, seed=0):
    """``count`` boxes around the ground truth (some foreground, some background)."""
    g = torch.Generator().manual_seed(seed)
    boxes = target["boxes"].repeat(count // len(target["boxes"]) + 1, 1)[:count]
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    jittered = boxes + (torch.rand(boxes.shape, generator=g) - 0.5) * 0.6 * size
    return jittered.clamp(0, 96)


def test_loss_falls_when_overfitting_one_batch_with_given_proposals(shapes_data):
    images, targets = shapes_data
    targets = [{**t, "proposals": jittered_proposals(t, seed=i)} for i, t in enumerate(targets)]
    torch.manual_seed(0)
    model = build_detector("fast_rcnn", backbone="resnet18", fpn=True, num_classes=3, **SMALL,
                           box_batch_size_per_image=32).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    history = []
    for _ in range(10):
        losses = model(images, targets)
        assert set(losses) == {"loss_classifier", "loss_box_reg"}
        total = sum(losses.values())
        assert torch.isfinite(total)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(float(total.detach()))
    # (FPN levels that no RoI maps to, here P3-P5 on these small images, get no gradient)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    for part in (model.backbone.conv1, model.roi_heads.box_head.fc6, model.roi_heads.box_predictor.bbox_pred):
        assert part.weight.grad.abs().sum() > 0
    assert history[-1] < 0.6 * history[0], history


def test_training_needs_proposals_and_allows_empty_ones(shapes_data):
    images, targets = shapes_data
    torch.manual_seed(0)
    model = build_detector("fast_rcnn", backbone="resnet18", fpn=True, num_classes=3, **SMALL).train()
    with pytest.raises(UserInputError, match="target 0 has no 'proposals'.*proposal_file"):
        model(images, targets)
    with pytest.raises(UserInputError, match="proposals of image 1"):
        model(images, [{**targets[0], "proposals": torch.zeros(0, 4)}, {**targets[1], "proposals": torch.zeros(3)}])
    # no proposals at all: the ground-truth boxes alone are the RoIs, the losses are finite
    losses = model(images, [{**t, "proposals": torch.zeros(0, 4)} for t in targets])
    assert torch.isfinite(losses["loss_classifier"]) and losses["loss_classifier"] > 0
    sum(losses.values()).backward()
    assert model.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    # no proposals and no objects: zero losses that still backpropagate
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "proposals": torch.zeros(0, 4)}
    losses = model(images, [empty, empty])
    assert losses["loss_classifier"].detach().item() == 0.0 and losses["loss_box_reg"].detach().item() == 0.0
    sum(losses.values()).backward()


def identity_box_model(**options):
    """A Fast R-CNN whose predictor returns zero deltas and class 1 for every RoI, so that
    each detection is its proposal, mapped through the network and back."""
    torch.manual_seed(0)
    model = build_detector("fast_rcnn", backbone="resnet18", fpn=True, num_classes=3, **SMALL, **options).eval()
    predictor = model.roi_heads.box_predictor
    with torch.no_grad():
        for layer in (predictor.cls_score, predictor.bbox_pred):
            layer.weight.zero_()
            layer.bias.zero_()
        predictor.cls_score.bias[1] = 5.0
    return model


def test_predict_with_given_proposals_returns_input_coordinates(make_shapes_batch):
    images, _ = make_shapes_batch([2, 3])
    # sizes that the transform rescales by different factors per image (and non-square)
    images = [nn.functional.interpolate(images[0][None], size=(150, 210))[0],
              nn.functional.interpolate(images[1][None], size=(70, 50))[0]]
    proposals = [torch.tensor([[10.0, 12.0, 60.0, 50.0], [100.0, 80.0, 200.0, 140.0], [150.0, 5.0, 205.0, 40.0]]),
                 torch.tensor([[3.0, 4.0, 30.0, 40.0], [35.0, 45.0, 49.0, 69.0]])]
    model = identity_box_model()
    outputs = model.predict(images, proposals=proposals)
    for out, given in zip(outputs, proposals):
        assert out["labels"].tolist() == [1] * len(given)
        order = torch.argsort(out["boxes"][:, 0])
        torch.testing.assert_close(out["boxes"][order], given[torch.argsort(given[:, 0])], rtol=0, atol=1e-3)
        expected_score = torch.softmax(torch.tensor([0.0, 5.0, 0.0, 0.0]), 0)[1]
        torch.testing.assert_close(out["scores"], expected_score.expand(len(given)))
    # the proposals count: only the first proposals_per_image_test are used
    model.proposals_per_image["test"] = 1
    outputs = model.predict(images, proposals=proposals)
    assert [len(o["boxes"]) for o in outputs] == [1, 1]
    torch.testing.assert_close(outputs[1]["boxes"], proposals[1][:1], rtol=0, atol=1e-3)


def test_predict_without_proposals_or_generator_raises_one_line(shapes_data):
    images, _ = shapes_data
    model = identity_box_model()
    with pytest.raises(UserInputError) as caught:
        model.predict(images)
    message = str(caught.value)
    assert "\n" not in message
    assert "predict(images, proposals=" in message and "proposal_generator='selective_search'" in message
    assert "tools/make_proposals.py" in message


def test_empty_proposals_give_no_detections(shapes_data):
    images, targets = shapes_data
    model = identity_box_model()
    outputs = model.predict(images, proposals=[torch.zeros(0, 4), targets[1]["boxes"]])
    assert outputs[0]["boxes"].shape == (0, 4) and outputs[0]["scores"].shape == (0,)
    assert outputs[0]["labels"].dtype == torch.int64
    assert len(outputs[1]["boxes"]) == len(targets[1]["boxes"])
    outputs = model.predict(images, proposals=[torch.zeros(0, 4), torch.zeros(0, 4)])
    assert [o["boxes"].shape for o in outputs] == [(0, 4), (0, 4)]


def test_a_proposal_generator_is_used_when_no_proposals_are_given(shapes_data):
    images, targets = shapes_data
    model = identity_box_model()
    calls = []

    def generator(image):
        calls.append(tuple(image.shape))
        return targets[(len(calls) - 1) % 2]["boxes"]

    model.proposal_generator = generator
    outputs = model.predict(images)
    assert calls == [tuple(i.shape) for i in images]
    for out, target in zip(outputs, targets):
        order = torch.argsort(out["boxes"][:, 0])
        expected = target["boxes"][torch.argsort(target["boxes"][:, 0])]
        # overlapping ground truths of one class may suppress each other at NMS 0.3
        assert len(out["boxes"]) <= len(expected)
        if len(out["boxes"]) == len(expected):
            torch.testing.assert_close(out["boxes"][order], expected, rtol=0, atol=1e-3)
    # training targets without proposals use the generator too
    model.train()
    losses = model(images, targets)
    assert torch.isfinite(sum(losses.values())) and len(calls) == 4
    with pytest.raises(TypeError, match="no region proposal network"):
        model.propose(images)


def test_on_the_fly_proposals_draw_a_progress_bar_over_the_images(shapes_data, capsys):
    images, targets = shapes_data
    model = identity_box_model().eval()
    model.proposal_generator = lambda image: targets[0]["boxes"]
    model.proposal_progress = True
    model.predict(images)
    err = capsys.readouterr().err
    assert "proposals:" in err and f"/{len(images)} [" in err and "image/s" in err
    model.proposal_progress = False
    model.predict(images)
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_paper_vgg16_setup_takes_fc6_fc7_from_the_imagenet_classifier():
    """conv5_3 features, fc6/fc7 from the classifier (moved, not copied), conv3_1 and up trained."""
    import torchvision

    torch.manual_seed(0)
    classifier = torchvision.models.vgg16(weights=None).state_dict()
    model = build_detector("fast_rcnn", num_classes=3, **SMALL, backbone_weights=classifier)
    head = model.roi_heads.box_head
    assert isinstance(head, VGGHead)
    torch.testing.assert_close(head.fc6.weight, classifier["classifier.0.weight"], rtol=0, atol=0)
    torch.testing.assert_close(head.fc7.bias, classifier["classifier.3.bias"], rtol=0, atol=0)
    state = model.state_dict()
    assert not any(k.startswith("backbone.classifier") for k in state)  # one copy, in the head
    assert sum(k.startswith("roi_heads.box_head.fc") for k in state) == 4
    torch.testing.assert_close(state["backbone.features.28.weight"], classifier["features.28.weight"], rtol=0, atol=0)
    trainable = {n.split(".")[1] for n, p in model.backbone.named_parameters() if p.requires_grad}
    frozen = {n.split(".")[1] for n, p in model.backbone.named_parameters() if not p.requires_grad}
    assert frozen == {"0", "2", "5", "7"}  # conv1_1..conv2_2
    assert trainable == {"10", "12", "14", "17", "19", "21", "24", "26", "28"}  # conv3_1..conv5_3
    assert model.feature_strides == {"c4": 16}
    # the head runs on 7x7 max-pooled RoIs and the model predicts
    image = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0))
    out = model.predict([image], proposals=[torch.tensor([[8.0, 8.0, 60.0, 70.0]])])
    assert out[0]["boxes"].shape[1] == 4
