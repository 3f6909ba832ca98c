"""What build_faster_rcnn does with the backbone: default freezing from trained weights,
the C4 variants' box head taken from a single backbone build, and torchvision detector
weights loaded into trainable or frozen BatchNorm."""
from __future__ import annotations

import pytest
import torch
import torchvision

import backbones
from backbones import Backbone, build_backbone
from backbones.norm import FrozenBatchNorm2d
from detect import build_detector
from detect.modeling.weights import convert_torchvision_faster_rcnn

from torchvision_reference import random_torchvision_faster_rcnn

SMALL = dict(num_classes=3, min_size=96, max_size=160, rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100,
             rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=64,
             box_batch_size_per_image=8)


# ------------------------------------------------------------------- VGG-16 as in the paper
def test_vgg16_from_trained_weights_freezes_conv1_and_conv2_only():
    """The paper fine-tunes VGG-16 from conv3_1: conv1_1..conv2_2 frozen, conv3_1 onwards trained."""
    trunk = build_backbone("tv:vgg16", out_features=["c4"]).state_dict()
    model = build_detector("faster_rcnn", backbone="tv:vgg16", fpn=False, backbone_weights=trunk,
                           box_representation_size=256, **SMALL)
    convs = {int(name.split(".")[1]): p.requires_grad for name, p in model.backbone.named_parameters()}
    frozen = sorted(index for index, trainable in convs.items() if not trainable)
    trained = sorted(index for index, trainable in convs.items() if trainable)
    assert frozen == [0, 2, 5, 7]  # conv1_1, conv1_2, conv2_1, conv2_2
    assert trained == [10, 12, 14, 17, 19, 21, 24, 26, 28]  # conv3_1 .. conv5_3
    assert model.backbone.frozen_stages == 0


# ------------------------------------------------------------------------------ C4 variants
def test_c4_builds_and_loads_the_backbone_once(monkeypatch):
    built, loads = [], []
    real_build, real_load = backbones.build_backbone, Backbone.load_weights

    def counting_build(*args, **kwargs):
        built.append(kwargs.get("out_features"))
        return real_build(*args, **kwargs)

    def counting_load(self, weights):
        loads.append(type(self).__name__)
        return real_load(self, weights)

    monkeypatch.setattr(backbones, "build_backbone", counting_build)
    monkeypatch.setattr(Backbone, "load_weights", counting_load)
    trunk = build_backbone("resnet18").state_dict()
    build_detector("faster_rcnn", backbone="resnet18", fpn=False, backbone_weights=trunk, **SMALL)
    assert built == [["c4", "c5"]] and loads == ["ResNet"]


def test_r50_c4_head_is_layer4_with_the_loaded_weights():
    """Parameters: torchvision's resnet50 minus fc, each once (layer4 in the head, the rest in
    the backbone), with exactly the weights given."""
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None).eval()
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    state = reference.state_dict()
    model = build_detector("faster_rcnn", backbone="resnet50", fpn=False, backbone_weights=state,
                           backbone_norm="bn", **SMALL)
    stage = model.roi_heads.box_head.stage
    count = sum(p.numel() for p in model.backbone.parameters()) + sum(p.numel() for p in stage.parameters())
    assert count == sum(p.numel() for name, p in reference.named_parameters() if not name.startswith("fc."))
    assert count == 25_557_032 - 2_049_000  # torchvision's resnet50 minus fc (2048 x 1000 + 1000)
    assert not hasattr(model.backbone, "layer4") and model.backbone.out_features == ["c4"]
    assert model.transform.size_divisibility == 16
    for key, value in stage.state_dict().items():
        assert torch.equal(value, state["layer4." + key]), key
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state[key]), key
    # The default from trained weights: frozen BN everywhere, layer4 (stage 4) trainable.
    default = build_detector("faster_rcnn", backbone="resnet50", fpn=False, backbone_weights=state, **SMALL)
    head = default.roi_heads.box_head
    assert not head.frozen and all(p.requires_grad for p in head.stage.parameters())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in head.stage.modules())
    for key, value in head.stage.state_dict().items():
        assert torch.equal(value, state["layer4." + key]), key


@pytest.mark.parametrize("backbone", ["resnet18", "googlenet"])
def test_c4_frozen_stages_4_freezes_the_head_stage(backbone, shapes_data):
    """frozen_stages=4 covers the c5 stage that became the box head: no gradient, and its
    trainable BatchNorm stays in eval mode through a training step."""
    images, targets = shapes_data
    torch.manual_seed(0)
    model = build_detector("faster_rcnn", backbone=backbone, fpn=False, backbone_norm="bn",
                           backbone_frozen_stages=4, **SMALL).train()
    head = model.roi_heads.box_head
    assert head.frozen and model.backbone.frozen_stages == 3
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not any(p.requires_grad for p in head.stage.parameters())
    norms = [m for m in head.stage.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    before = [m.running_mean.clone() for m in norms]
    sum(model(images, targets).values()).backward()
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))
    assert all(p.grad is None for p in head.stage.parameters())


# ------------------------------------------------------- torchvision detector weights and BN
def torchvision_v1_state(seed=0):
    """A torchvision fasterrcnn_resnet50_fpn state dict with random frozen-BN statistics."""
    return random_torchvision_faster_rcnn(seed, num_classes=4).state_dict()


def test_torchvision_weights_into_trainable_batchnorm_keep_the_statistics():
    """backbone_norm="bn" (to fine-tune): weight, bias and running statistics are torchvision's,
    not the eps-folded values meant for a frozen BatchNorm."""
    state = torchvision_v1_state()
    model = build_detector("faster_rcnn", backbone="resnet50", num_classes=3, weights=state, backbone_norm="bn")
    norms = {name: m for name, m in model.backbone.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert len(norms) == 53
    for name, norm in norms.items():
        for field in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(getattr(norm, field), state[f"backbone.body.{name}.{field}"]), (name, field)


@pytest.mark.parity
def test_torchvision_weights_into_frozen_batchnorm_fold_only_a_different_eps():
    state = torchvision_v1_state()
    model = build_detector("faster_rcnn", backbone="resnet50", num_classes=3, weights=state)
    norm = model.backbone.layer1[0].bn1
    assert isinstance(norm, FrozenBatchNorm2d) and norm.eps == 1e-5
    source = {f: state[f"backbone.body.layer1.0.bn1.{f}"] for f in ("weight", "bias", "running_mean", "running_var")}
    scale = source["weight"] * torch.rsqrt(source["running_var"])  # torchvision v1 runs with eps 0
    assert torch.equal(norm.weight, scale) and torch.equal(norm.bias, source["bias"] - source["running_mean"] * scale)
    assert torch.equal(norm.running_mean, torch.zeros_like(scale))
    # Same eps on both sides (v2's 1e-5): copied unchanged.
    same_eps = convert_torchvision_faster_rcnn(state, model, bn_eps=1e-5)
    for field, value in source.items():
        assert torch.equal(same_eps[f"backbone.layer1.0.bn1.{field}"], value), field
