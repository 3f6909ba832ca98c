"""Faster R-CNN as a Detector: the contract, every variant training and predicting, weights."""
from __future__ import annotations

import math

import pytest
import torch

from detect import build_detector, list_detectors
from detect.modeling.box_heads import ConvStageHead, TwoMLPHead, VGGHead
from detect.modeling.fast_inference import FusedConv2d
from torchvision_reference import assert_same_detections_unordered

SMALL = dict(min_size=96, max_size=160, rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100,
             rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=64,
             box_batch_size_per_image=32)

VARIANTS = {
    "resnet18_fpn": dict(backbone="resnet18", fpn=True),
    # The C4 head runs ResNet's last stage on every RoI: sample fewer to keep the test short.
    "resnet18_c4": dict(backbone="resnet18", fpn=False, box_batch_size_per_image=8, rpn_post_nms_top_n_test=50),
    "dcn_resnet50_fpn": dict(backbone="dcn_resnet50", fpn=True),
    "googlenet": dict(backbone="googlenet", fpn=False),
    "googlenet_fpn": dict(backbone="googlenet", fpn=True),
    "vgg16": dict(backbone="tv:vgg16", fpn=False, box_representation_size=256),
}
EMPTY = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}


def small_model(seed=0, **options):
    torch.manual_seed(seed)
    return build_detector("faster_rcnn", num_classes=3, **{**SMALL, **VARIANTS["resnet18_fpn"], **options})


def check_detections(outputs, images, num_classes=3):
    assert len(outputs) == len(images)
    for out, image in zip(outputs, images):
        boxes, scores, labels = out["boxes"], out["scores"], out["labels"]
        assert boxes.dtype == torch.float32 and scores.dtype == torch.float32 and labels.dtype == torch.int64
        assert boxes.shape == (len(scores), 4) and labels.shape == scores.shape
        height, width = image.shape[-2:]
        if len(boxes):
            assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= width + 1e-3).all()
            assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= height + 1e-3).all()
            assert (boxes[:, 2:] >= boxes[:, :2]).all()
            assert labels.min() >= 1 and labels.max() <= num_classes
            assert (scores[:-1] >= scores[1:]).all()


def test_registry_and_variant_structure():
    assert "faster_rcnn" in list_detectors()
    model = small_model()
    assert model.num_classes == 3 and list(model.feature_strides) == ["p2", "p3", "p4", "p5", "p6"]
    assert model.proposal_features == ["p2", "p3", "p4", "p5", "p6"] and model.roi_features == ["p2", "p3", "p4", "p5"]
    assert isinstance(model.roi_heads.box_head, TwoMLPHead)
    assert model.roi_heads.box_predictor.cls_score.out_features == 4

    c4 = small_model(**VARIANTS["resnet18_c4"])
    assert list(c4.backbone.out_channels) == ["c4"] and not hasattr(c4.backbone, "layer4")
    assert isinstance(c4.roi_heads.box_head, ConvStageHead) and c4.roi_heads.pooler.output_size == (14, 14)
    assert c4.rpn.anchor_generator.num_anchors_per_location() == [15]

    vgg = small_model(**VARIANTS["vgg16"])
    assert isinstance(vgg.roi_heads.box_head, VGGHead) and vgg.roi_heads.pooler.pooler_type == "roi_pool"
    assert vgg.rpn.anchor_generator.sizes == ((128.0, 256.0, 512.0),) and vgg.feature_strides == {"c4": 16}
    with pytest.raises(ValueError, match="num_classes"):
        build_detector("faster_rcnn", backbone="resnet18", num_classes=0)


def test_training_losses_and_gradients(shapes_data):
    images, targets = shapes_data
    model = small_model().train()
    losses = model(images, targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value) and value > 0, name
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_empty_targets_give_finite_losses_and_zero_box_losses(shapes_data):
    images, _ = shapes_data
    model = small_model().train()
    losses = model(images, [EMPTY, EMPTY])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_rpn_box_reg"].item() == 0.0 and losses["loss_box_reg"].item() == 0.0
    assert losses["loss_objectness"] > 0 and losses["loss_classifier"] > 0
    sum(losses.values()).backward()
    # One image with objects, one without: still finite, box losses from the first only.
    losses = model(images, [shapes_data[1][0], EMPTY])
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_box_reg"] > 0


def test_bad_targets_name_the_index(shapes_data):
    images, targets = shapes_data
    model = small_model()
    bad = [targets[0], {"boxes": torch.tensor([[10.0, 10.0, 30.0, 40.0], [5.0, 5.0, 5.0, 9.0]]), "labels": torch.tensor([1, 2])}]
    with pytest.raises(ValueError, match=r"target 1, box 1: degenerate"):
        model(images, bad)
    wrong_label = [targets[0], {"boxes": torch.tensor([[10.0, 10.0, 30.0, 40.0]]), "labels": torch.tensor([4])}]
    with pytest.raises(ValueError, match=r"target 1, box 0: label 4 is outside 1..3"):
        model.loss(images, wrong_label)
    with pytest.raises(ValueError, match="target 0: labels must be int64"):
        model.loss(images, [{"boxes": targets[0]["boxes"], "labels": targets[0]["labels"].int()}, targets[1]])
    with pytest.raises(TypeError, match="list of Tensor"):
        model.predict(torch.stack(images))


def test_loss_and_predict_in_either_mode_change_no_state(shapes_data):
    images, targets = shapes_data
    model = small_model(backbone="resnet18", fpn=False).train()  # trainable BatchNorm in the backbone
    bn = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    outputs = model.predict(images)
    assert model.training and torch.equal(bn.running_mean, stats)
    check_detections(outputs, images)
    model.eval()
    losses = model.loss(images, targets)
    assert not model.training and torch.equal(bn.running_mean, stats)
    assert all(torch.isfinite(v) for v in losses.values())
    # A validation loss uses the training proposal counts and sampling: both stages get training=True.
    seen = []
    for stage in (model.rpn, model.roi_heads):
        stage.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["training"]), with_kwargs=True)
    model.loss(images, targets)
    model.predict(images)
    assert seen == [True, True, False, False]


def test_outputs_are_in_input_image_coordinates():
    model = small_model(box_score_thresh=0.0).eval()
    torch.manual_seed(1)
    image = torch.rand(3, 60, 200)  # the network sees it at 48x160 (max_size 160)
    (out,) = model([image])
    check_detections([out], [image])
    assert len(out["boxes"]) > 10
    assert 165 < out["boxes"][:, 2].max() <= 200 and 50 < out["boxes"][:, 3].max() <= 60


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_trains_and_predicts(variant, shapes_data):
    """30 SGD steps on one batch of shapes images: the total loss falls, predictions are valid."""
    images, targets = shapes_data
    model = small_model(**VARIANTS[variant]).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    history = []
    for _ in range(30):
        losses = model(images, targets)
        total = sum(losses.values())
        assert math.isfinite(total.item())
        history.append(total.item())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert sum(history[-5:]) / 5 < 0.8 * history[0], history
    check_detections(model.predict(images), images)
    model.eval()
    check_detections(model(images), images)


@pytest.mark.parity
def test_optimize_for_inference_c4_and_vgg_match_plain(shapes_data):
    images, _ = shapes_data
    for options in (VARIANTS["resnet18_c4"], VARIANTS["vgg16"]):
        model = small_model(box_score_thresh=0.0, **options).eval()
        reference = model.predict(images)
        model.optimize_for_inference()
        fast = model.predict(images)
        assert_same_detections_unordered(reference, fast, box_tol=1e-3, score_tol=1e-4, min_count=1)
    assert any(isinstance(m, FusedConv2d) for m in model.modules())


def test_optimized_model_is_inference_only(shapes_data):
    images, targets = shapes_data
    model = small_model().optimize_for_inference(bf16=torch.cpu._is_avx512_bf16_supported())
    check_detections(model.predict(images), images)
    with pytest.raises(RuntimeError, match="optimized for inference"):
        model.loss(images, targets)
    with pytest.raises(RuntimeError, match="optimized for inference"):
        model.train()


def test_weights_from_checkpoint_file(tmp_path, shapes_data):
    images, _ = shapes_data
    model = small_model(box_score_thresh=0.0).eval()
    path = tmp_path / "checkpoint.pth"
    torch.save({"format_version": 1, "model": model.state_dict(), "class_names": ["a", "b", "c"]}, path)
    reloaded = build_detector("faster_rcnn", num_classes=3, weights=str(path), **{**SMALL, **VARIANTS["resnet18_fpn"],
                                                                               "box_score_thresh": 0.0}).eval()
    for a, b in zip(model.predict(images), reloaded.predict(images)):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])

    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_detector("faster_rcnn", backbone="resnet18", num_classes=3, weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match=r"checkpoint.pth do not fit this model .*unexpected \['backbone.layer4"):
        build_detector("faster_rcnn", backbone="resnet18", fpn=False, num_classes=3, weights=str(path))
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read detector weights .*broken.pth"):
        build_detector("faster_rcnn", backbone="resnet18", num_classes=3, weights=str(tmp_path / "broken.pth"))
