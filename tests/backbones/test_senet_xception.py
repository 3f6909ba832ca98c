"""SE-ResNet 50/101 and Xception: the backbone contract, parity with timm's ``seresnet50`` /
``seresnet101`` / ``legacy_xception`` (features and logits, through a weights file), training
behaviour, weight-file errors and use as a Faster R-CNN backbone."""
from __future__ import annotations

import math

import pytest
import timm  # a declared dev dependency (test-only): a broken install must fail here, not skip
import torch
from torch import nn

from backbones import SEBlock, SEResNetClassifier, WeightsError, XceptionClassifier, build_backbone

SIZES = [(64, 64), (97, 131), (65, 96)]
CHANNELS = {
    "seresnet50": {"c2": 256, "c3": 512, "c4": 1024, "c5": 2048},
    "seresnet101": {"c2": 256, "c3": 512, "c4": 1024, "c5": 2048},
    "xception": {"c2": 128, "c3": 256, "c4": 728, "c5": 2048},
}
STRIDES = {"c2": 4, "c3": 8, "c4": 16, "c5": 32}
#: timm submodules whose outputs are our c2..c5 (timm's features_only taps).
TIMM_TAPS = {
    "seresnet50": {"c2": "layer1", "c3": "layer2", "c4": "layer3", "c5": "layer4"},
    "seresnet101": {"c2": "layer1", "c3": "layer2", "c4": "layer3", "c5": "layer4"},
    "legacy_xception": {"c2": "block2.rep.0", "c3": "block3.rep.0", "c4": "block12.rep.0", "c5": "act4"},
}
OURS = {"seresnet50": "seresnet50", "seresnet101": "seresnet101", "legacy_xception": "xception"}


def seeded_timm_model(name: str, seed: int = 0) -> nn.Module:
    """timm ``name`` (no download) with seeded random weights and BatchNorm statistics set from
    one random batch, so that every norm does real work and activations stay O(1); eval mode."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.momentum = None
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
        for m in model.modules():  # SE gates away from saturation
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.uniform_(-0.5, 0.5)
        model.train()(torch.randn(2, 3, 64, 64))
    for m in norms:
        m.momentum = 0.1
    return model.eval()


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory):
    """``get(name) -> (timm model, path of its state dict)``."""
    cache = {}

    def get(name):
        if name not in cache:
            model = seeded_timm_model(name)
            path = tmp_path_factory.mktemp("timm") / f"{name}.pth"
            torch.save(model.state_dict(), path)
            cache[name] = (model, path)
        return cache[name]

    return get


# ----------------------------------------------------------------------------- the contract
def test_names_are_registered():
    from backbones import list_backbones

    assert {"seresnet50", "seresnet101", "xception"} <= set(list_backbones())


@pytest.mark.parametrize("name", list(CHANNELS))
def test_names_channels_and_strides_at_several_sizes(name):
    model = build_backbone(name).eval()
    assert model.out_channels == CHANNELS[name] and model.strides == STRIDES
    assert model.size_divisibility == 32
    assert {k: (s.channels, s.stride) for k, s in model.output_shape().items()} == {
        k: (CHANNELS[name][k], STRIDES[k]) for k in STRIDES}
    for height, width in SIZES:
        with torch.no_grad():
            features = model(torch.randn(1, 3, height, width))
        assert list(features) == ["c2", "c3", "c4", "c5"]
        for key, f in features.items():
            stride = STRIDES[key]
            assert f.shape == (1, CHANNELS[name][key], math.ceil(height / stride), math.ceil(width / stride)), key


def test_out_features_build_only_needed_layers_and_norm_options():
    se = build_backbone("seresnet50", out_features=["c3"], norm="gn")
    assert not hasattr(se, "layer3") and list(se.out_channels) == ["c3"]
    assert isinstance(se.layer1[0].bn1, nn.GroupNorm) and isinstance(se.layer1[0].se, SEBlock)
    xc = build_backbone("xception", out_features=["c2", "c4"], norm="frozen_bn")
    assert not hasattr(xc, "block12") and not hasattr(xc, "conv3") and hasattr(xc, "block11")
    assert list(xc(torch.randn(1, 3, 64, 64))) == ["c2", "c4"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in xc.modules())
    gn = build_backbone("xception", norm="gn", out_features=["c2"])
    assert gn(torch.randn(1, 3, 64, 64))["c2"].shape == (1, 128, 16, 16)
    with pytest.raises(ValueError, match="stem_padding"):
        build_backbone("xception", stem_padding="zeros")
    with pytest.raises(ValueError, match="depth"):
        SEResNetClassifier(depth=34)
    with pytest.raises(WeightsError, match="no torchvision weights"):
        build_backbone("seresnet50", out_features=["c2"], weights="torchvision")


def test_se_block_gates_each_channel():
    torch.manual_seed(0)
    block = SEBlock(64, reduction=16)
    assert block.fc1.out_channels == 4 and block.fc2.out_channels == 64
    x = torch.randn(2, 64, 5, 7)
    gate = torch.sigmoid(block.fc2(torch.relu(block.fc1(x.mean((2, 3), keepdim=True)))))
    torch.testing.assert_close(block(x), x * gate)
    assert SEBlock(8, reduction=16).fc1.out_channels == 1


def test_xception_is_built_as_in_the_paper():
    model = build_backbone("xception")
    middle = [getattr(model, f"block{i}") for i in range(4, 12)]
    assert all(b.skip is None and len(b.rep) == 9 for b in middle)  # 8 blocks, 3 x (ReLU, sep, BN)
    for i in (1, 2, 3, 12):  # entry and exit flow: 1x1 stride-2 shortcuts
        skip = getattr(model, f"block{i}").skip
        assert skip.kernel_size == (1, 1) and skip.stride == (2, 2)
    sep = model.block4.rep[1]  # depthwise then pointwise, nothing between
    assert list(dict(sep.named_children())) == ["conv1", "pointwise"]
    assert sep.conv1.groups == sep.conv1.in_channels == 728 and sep.pointwise.kernel_size == (1, 1)
    assert not isinstance(model.block1.rep[0], nn.ReLU)  # block1 follows the stem's ReLU


# ---------------------------------------------------------------------------- timm parity
@pytest.mark.parametrize("timm_name", ["seresnet50", "legacy_xception",
                                       "seresnet101"])
@pytest.mark.parametrize("norm", ["bn", "frozen_bn"])
def test_features_equal_timm_intermediate_activations(timm_name, norm, timm_weights, capture):
    reference, path = timm_weights(timm_name)
    options = {"stem_padding": "valid"} if timm_name == "legacy_xception" else {}
    ours = build_backbone(OURS[timm_name], weights=path, norm=norm, **options).eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 97, 131)
    expected = capture(reference, TIMM_TAPS[timm_name], x)
    with torch.no_grad():
        got = ours(x)
    assert list(got) == ["c2", "c3", "c4", "c5"]
    for key in got:
        assert got[key].shape == expected[key].shape, key
        assert (got[key] - expected[key]).abs().max() <= 1e-5 * max(1.0, expected[key].abs().max()), key


@pytest.mark.parametrize("timm_name, classifier", [
    ("seresnet50", lambda: SEResNetClassifier(50)),
    ("legacy_xception", lambda: XceptionClassifier()),
    ("seresnet101", lambda: SEResNetClassifier(101)),
])
def test_classifier_logits_equal_timm(timm_name, classifier, timm_weights):
    reference, path = timm_weights(timm_name)
    ours = classifier()
    report = ours.load_weights(path)
    assert not report.ignored and "fc.weight" in report.loaded
    assert set(ours.state_dict()) == set(reference.state_dict())
    ours.eval()
    torch.manual_seed(2)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert got.shape == (2, 1000)
    assert (got - expected).abs().max() <= 1e-5


def test_backbone_ignores_the_timm_classifier_and_the_same_stem_loads_its_weights(timm_weights):
    _, path = timm_weights("legacy_xception")
    same = build_backbone("xception", weights=path)  # default "same" stem: same parameter shapes
    report = same.load_weights(path)
    assert report.ignored == ["fc.weight", "fc.bias"]
    c2 = build_backbone("xception", weights=path, out_features=["c2"])
    assert c2.load_weights(path).ignored[-2:] == ["fc.weight", "fc.bias"]


def test_mismatched_file_names_the_first_mismatched_keys(timm_weights, tmp_path):
    _, se50 = timm_weights("seresnet50")
    with pytest.raises(WeightsError, match=r"missing key\(s\): layer3\.6\.") as info:
        build_backbone("seresnet101", weights=se50)
    assert str(se50) in str(info.value)
    with pytest.raises(WeightsError, match=r"block1\.skip\.weight|conv1\.weight \(file"):
        build_backbone("xception", weights=se50)
    state = torch.load(se50, weights_only=True)
    state["layer2.0.se.fc1.weight"] = torch.zeros(7, 512, 1, 1)
    del state["layer1.0.se.fc2.bias"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(WeightsError) as info:
        build_backbone("seresnet50", weights=tmp_path / "broken.pth")
    message = str(info.value)
    assert "layer1.0.se.fc2.bias" in message and "layer2.0.se.fc1.weight (file [7, 512, 1, 1]" in message


# ------------------------------------------------------------------------------- training
def _backward(model, size=(64, 64)):
    torch.manual_seed(0)
    features = model(torch.randn(2, 3, *size))
    sum(f.pow(2).mean() for f in features.values()).backward()


@pytest.mark.parametrize("name, options", [("seresnet50", {}), ("xception", {}),
                                           ("xception", {"norm": "gn"})])
def test_every_trainable_parameter_gets_a_finite_gradient(name, options):
    model = build_backbone(name, **options).train()
    _backward(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    assert not [n for n, p in trainable if p.grad is None]
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    assert all(p.grad.abs().sum() > 0 for _, p in trainable)


@pytest.mark.parametrize("name, frozen_stages, frozen, trainable", [
    ("seresnet50", 1, ("conv1.", "bn1.", "layer1."), ("layer2.0.se.", "layer4.")),
    ("xception", 0, ("conv1.", "bn1.", "conv2.", "bn2."), ("block1.",)),
    ("xception", 3, ("conv2.", "block1.", "block2.", "block3.", "block11."), ("block12.", "conv4.", "bn4.")),
])
def test_frozen_stages_get_no_gradient_and_keep_statistics(name, frozen_stages, frozen, trainable):
    model = build_backbone(name, frozen_stages=frozen_stages).train()
    before = {n: b.clone() for n, b in model.named_buffers() if "running" in n}
    _backward(model)
    for n, p in model.named_parameters():
        if n.startswith(frozen):
            assert not p.requires_grad and p.grad is None, n
        elif n.startswith(trainable):
            assert p.requires_grad and p.grad is not None, n
    for n, b in model.named_buffers():
        if "running" in n and n.startswith(frozen):
            assert torch.equal(b, before[n]), n
    assert any("running" in n and not torch.equal(b, before[n]) for n, b in model.named_buffers())
    with pytest.raises(ValueError, match="frozen_stages"):
        build_backbone(name, frozen_stages=5)


@pytest.mark.parametrize("name", ["seresnet50", "xception"])
def test_fuse_norm_keeps_the_features(name):
    torch.manual_seed(0)
    model = build_backbone(name, norm="frozen_bn").eval()
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "running_var"):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.uniform_(-0.1, 0.1)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        got = model.fuse_norm_()(x)
    assert not any(hasattr(m, "running_var") for m in model.modules())
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4 * expected[key].abs().max().item())


def test_seresnet_splits_its_last_stage_like_resnet():
    model = build_backbone("seresnet50", out_features=["c4", "c5"], frozen_stages=4)
    stage, frozen = model.split_last_stage_()
    assert frozen and isinstance(stage[0].se, SEBlock) and list(model.out_channels) == ["c4"]
    assert stage(torch.randn(1, 1024, 4, 4)).shape == (1, 2048, 2, 2)


# ------------------------------------------------------------------------------ detection
@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["seresnet50", "xception"])
def test_faster_rcnn_fpn_trains_one_step(backbone):
    from detect import build_detector

    torch.manual_seed(0)
    model = build_detector("faster_rcnn", backbone=backbone, fpn=True, num_classes=3, min_size=64,
                           max_size=96, rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
                           box_batch_size_per_image=16)
    assert list(model.backbone.out_channels) == ["c2", "c3", "c4", "c5"]
    model.train()
    images = [torch.rand(3, 64, 80), torch.rand(3, 72, 64)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[10.0, 8.0, 30.0, 60.0], [0.0, 0.0, 20.0, 20.0]]),
                "labels": torch.tensor([2, 3])}]
    losses = model(images, targets)
    assert losses and all(torch.isfinite(v) for v in losses.values())
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    sum(losses.values()).backward()
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    optimizer.step()


# ------------------------------------------------------------------------------ benchmark
@pytest.mark.parametrize("name", ["seresnet50", "xception"])
def test_benchmark_timm_counterparts_compute_the_same_features(name):
    from detect.benchmarks.backbones import our_options, torchvision_counterpart

    torch.manual_seed(0)
    ours = build_backbone(name, out_features=["c2", "c3"], **our_options(name)).eval()
    theirs, note = torchvision_counterpart(name, ours)
    assert "timm" in note
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        got, expected = ours(x), theirs.eval()(x)
    assert list(got) == list(expected) == ["c2", "c3"]
    for key in got:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-5)


def test_benchmark_falls_back_without_timm(monkeypatch):
    import detect.benchmarks.backbones as bench

    monkeypatch.setattr(bench, "timm_available", lambda: False)
    ours = build_backbone("seresnet50", out_features=["c2"]).eval()
    theirs, note = bench.torchvision_counterpart("seresnet50", ours)
    assert "plain ResNet" in note and list(theirs(torch.randn(1, 3, 64, 64))) == ["c2"]
    with pytest.raises(ValueError, match="install timm"):
        bench.torchvision_counterpart("xception", build_backbone("xception", out_features=["c2"]))


@pytest.mark.slow
def test_seresnet_faster_rcnn_c4_uses_its_last_stage_as_the_box_head():
    """SE-ResNet is a ResNet to the builder: C4 puts its c5 stage (SE blocks included) in the head."""
    from detect import build_detector
    from detect.modeling.box_heads import ConvStageHead

    torch.manual_seed(0)
    model = build_detector("faster_rcnn", backbone="seresnet50", fpn=False, num_classes=3, min_size=64, max_size=96)
    assert isinstance(model.roi_heads.box_head, ConvStageHead)
    assert list(model.backbone.out_channels) == ["c4"]
    model.train()
    losses = model([torch.rand(3, 64, 96)], [{"boxes": torch.tensor([[5.0, 5.0, 40.0, 50.0]]), "labels": torch.tensor([1])}])
    sum(losses.values()).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == [], f"parameters without a gradient: {unused[:5]}"


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["seresnet50", "xception"])
def test_yolov1_trains_one_step_on_the_new_backbones(backbone):
    from detect import build_detector

    torch.manual_seed(0)
    model = build_detector("yolov1", backbone=backbone, head="conv", input_size=(64, 64), grid_size=2, num_classes=3)
    model.train()
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = model([torch.rand(3, 70, 90), torch.rand(3, 64, 64)], targets)
    assert set(losses) == {"loss_xy", "loss_wh", "loss_obj", "loss_noobj", "loss_cls"}
    sum(losses.values()).backward()
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
