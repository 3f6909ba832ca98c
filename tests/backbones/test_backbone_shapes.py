"""Every backbone, several input sizes (odd ones included): output names, channels, strides
and exact spatial sizes equal the declared ones; tv:* features equal the activations of the
torchvision modules they name."""
import logging
import math

import pytest
import torch
import torchvision

from backbones import Backbone, ShapeSpec, build_backbone, list_backbones

SIZES = [(64, 64), (75, 97), (33, 50)]


def resnet_size(h: int, level: int) -> int:
    # Every stride-2 layer (7x7/2 pad 3, 3x3/2 pad 1 max-pool and convs) rounds up.
    return math.ceil(h / 2 ** level)


def googlenet_size(h: int, level: int) -> int:
    def ceil_pool(h, kernel):  # stride 2, no padding, ceil_mode=True
        return math.ceil((h - kernel) / 2) + 1

    h = (h + 2 * 3 - 7) // 2 + 1  # conv1 7x7/2 pad 3
    h = ceil_pool(h, 3)  # c2
    for _ in range(min(level, 4) - 2):  # c3, c4
        h = ceil_pool(h, 3)
    return ceil_pool(h, 2) if level == 5 else h


OURS = {
    # name: (options, channels, size function)
    "resnet18": ({}, {"c2": 64, "c3": 128, "c4": 256, "c5": 512}, resnet_size),
    "resnet34": ({}, {"c2": 64, "c3": 128, "c4": 256, "c5": 512}, resnet_size),
    "resnet50": ({}, {"c2": 256, "c3": 512, "c4": 1024, "c5": 2048}, resnet_size),
    "resnet101": ({}, {"c2": 256, "c3": 512, "c4": 1024, "c5": 2048}, resnet_size),
    "resnet152": ({}, {"c2": 256, "c3": 512, "c4": 1024, "c5": 2048}, resnet_size),
    "dcn_resnet50": ({"dcn_version": 1}, {"c2": 256, "c3": 512, "c4": 1024, "c5": 2048}, resnet_size),
    "dcn_resnet101": ({"dcn_version": 2}, {"c2": 256, "c3": 512, "c4": 1024, "c5": 2048}, resnet_size),
    "googlenet": ({"layout": "torchvision"}, {"c3": 480, "c4": 832, "c5": 1024}, googlenet_size),
    "googlenet-paper": ({"layout": "paper"}, {"c3": 480, "c4": 832, "c5": 1024}, googlenet_size),
}


def test_list_backbones_names_every_family():
    names = list_backbones()
    for name in ("googlenet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                 "dcn_resnet50", "dcn_resnet101", "tv:<name>"):
        assert name in names


@pytest.mark.parametrize("key", list(OURS))
def test_our_backbones_declared_shapes(key):
    options, channels, size = OURS[key]
    model = build_backbone(key.split("-")[0], **options).eval()
    assert isinstance(model, Backbone)
    assert model.out_channels == channels
    assert model.strides == {name: 2 ** int(name[1:]) for name in channels}
    assert model.size_divisibility == 32
    assert model.output_shape() == {n: ShapeSpec(channels=c, stride=2 ** int(n[1:]))
                                    for n, c in channels.items()}
    for h, w in SIZES:
        with torch.no_grad():
            features = model(torch.randn(1, 3, h, w))
        assert list(features) == list(channels)
        for name, value in features.items():
            level = int(name[1:])
            assert tuple(value.shape) == (1, channels[name], size(h, level), size(w, level)), (name, h, w)
            assert torch.isfinite(value).all()


def test_padded_input_gives_exact_strides():
    model = build_backbone("googlenet").eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 64, 96))
    for name, value in features.items():
        assert value.shape[-2:] == (64 // model.strides[name], 96 // model.strides[name])


def test_googlenet_layouts_differ_as_documented():
    paper = build_backbone("googlenet", layout="paper")
    tv = build_backbone("googlenet", layout="torchvision")
    assert paper.inception3a.branch3[1].conv.weight.shape == (32, 16, 5, 5)
    assert tv.inception3a.branch3[1].conv.weight.shape == (32, 16, 3, 3)
    assert sum(isinstance(m, torch.nn.LocalResponseNorm) for m in paper.modules()) == 2
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in paper.modules())
    bns = [m for m in tv.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 57 and all(m.eps == 1e-3 for m in bns)  # 3 stem convs + 9 x 6
    assert tv.transform_input and not paper.transform_input


def test_out_features_subset_builds_only_what_it_needs():
    model = build_backbone("resnet50", out_features=["c3", "c4"])
    assert model.out_channels == {"c3": 512, "c4": 1024}
    assert not hasattr(model, "layer4")
    with torch.no_grad():
        assert list(model(torch.randn(1, 3, 64, 64))) == ["c3", "c4"]
    c2 = build_backbone("googlenet", out_features=["c2", "c3"])
    assert c2.out_channels == {"c2": 192, "c3": 480} and not hasattr(c2, "inception4a")


# torchvision model -> (our cN -> the torchvision module whose output it is)
TV_NODES = {
    "vgg16": {"c2": "features.15", "c3": "features.22", "c4": "features.29", "c5": "features.30"},
    "resnet18": {"c2": "layer1", "c3": "layer2", "c4": "layer3", "c5": "layer4"},
    "mobilenet_v3_large": {"c2": "features.3", "c3": "features.6", "c4": "features.12", "c5": "features.16"},
    "efficientnet_b0": {"c2": "features.2", "c3": "features.3", "c4": "features.5", "c5": "features.8"},
    "densenet121": {"c2": "features.denseblock1", "c3": "features.denseblock2",
                    "c4": "features.denseblock3", "c5": "features.norm5"},
    "regnet_x_400mf": {f"c{i + 2}": f"trunk_output.block{i + 1}" for i in range(4)},
    "swin_t": {"c2": "features.1", "c3": "features.3", "c4": "features.5", "c5": "norm"},
    "googlenet": {"c2": "conv3", "c3": "inception3b", "c4": "inception4e", "c5": "inception5b"},
}


@pytest.mark.parity
@pytest.mark.parametrize("tv_name", list(TV_NODES))
def test_torchvision_backbone_matches_torchvision_modules(tv_name, capture):
    nodes = TV_NODES[tv_name]
    kwargs = dict(aux_logits=False, transform_input=True, init_weights=True) if tv_name == "googlenet" else {}
    torch.manual_seed(0)
    reference = torchvision.models.get_model(tv_name, weights=None, **kwargs).eval()
    # Wrapping the reference's own modules (model=) saves building and initialising the model
    # twice: what is tested is which module output becomes which cN, and the input transform,
    # final ReLU and layout handling around them. test_torchvision_backbone_loads_a_weights_file
    # covers building from the name and loading a file.
    ours = build_backbone(f"tv:{tv_name}", model=reference).eval()
    assert list(ours.out_channels) == list(nodes)
    assert ours.strides == {name: 2 ** int(name[1:]) for name in nodes}
    for h, w in [(64, 64), (97, 75)]:
        x = torch.randn(1, 3, h, w)
        expected = capture(reference, nodes, x)
        with torch.no_grad():
            features = ours(x)
        assert list(features) == list(nodes)
        for name, value in features.items():
            want = expected[name]
            if tv_name == "swin_t":
                want = want.permute(0, 3, 1, 2)  # Swin's trunk is channels-last
            if tv_name == "densenet121" and name == "c5":
                want = torch.relu(want)  # DenseNet applies F.relu after features
            assert value.shape == want.shape, (name, h, w)
            assert value.shape[1] == ours.out_channels[name]
            torch.testing.assert_close(value, want, rtol=0, atol=0)


def test_vgg16_c4_is_conv5_3_relu_with_floor_pooling():
    ours = build_backbone("tv:vgg16", out_features=["c4"])
    assert ours.out_channels == {"c4": 512}
    # Only the layers up to conv5_3 + ReLU are kept: 13 convs, no final pool, no classifier.
    assert len(ours.features) == 30 and isinstance(ours.features[29], torch.nn.ReLU)
    assert not hasattr(ours, "classifier")
    with torch.no_grad():
        c4 = ours(torch.randn(1, 3, 100, 77))["c4"]
    assert c4.shape == (1, 512, 100 // 16, 77 // 16)  # four 2x2/2 max-pools round down


def test_unsupported_torchvision_models_are_rejected_clearly():
    with pytest.raises(ValueError, match="vit_b_16.*no multi-stride"):
        build_backbone("tv:vit_b_16")
    with pytest.raises(ValueError, match="not a torchvision classification model.*vgg16"):
        build_backbone("tv:fasterrcnn_resnet50_fpn")


def test_torchvision_backbone_loads_a_weights_file(torchvision_weights, capture, caplog):
    reference, path = torchvision_weights("resnet18")
    with caplog.at_level(logging.INFO, logger="backbones"):
        ours = build_backbone("tv:resnet18", weights=path, out_features=["c3", "c4"]).eval()
    assert "fc.* (2)" in caplog.text and "layer4.* " in caplog.text  # unused keys, logged
    assert not hasattr(ours, "layer4") and not hasattr(ours, "fc")
    x = torch.randn(1, 3, 75, 97)
    expected = capture(reference, {"c3": "layer2", "c4": "layer3"}, x)
    with torch.no_grad():
        features = ours(x)
    for name in ("c3", "c4"):
        assert (features[name] - expected[name]).abs().max().item() <= 1e-5
