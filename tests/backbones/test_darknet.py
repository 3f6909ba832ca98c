"""The YOLOv1 Darknet trunks: names, channels, strides, layers, gradients, weights."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from backbones import Backbone, DarknetClassifier, ShapeSpec, WeightsError, build_backbone, list_backbones

YOLOV1_CHANNELS = {"c2": 192, "c3": 512, "c4": 1024, "c5": 1024}
FAST_CHANNELS = {"c2": 64, "c3": 128, "c4": 256, "c5": 512, "c6": 1024}


def ceil_div(size, level):
    return -(-size // 2 ** level)


def test_names_are_registered():
    names = list_backbones()
    assert "yolov1_darknet" in names and "fast_yolo_darknet" in names


@pytest.mark.parametrize("name, channels", [("yolov1_darknet", YOLOV1_CHANNELS), ("fast_yolo_darknet", FAST_CHANNELS)])
def test_declared_shapes_at_448_and_an_odd_size(name, channels):
    torch.manual_seed(0)
    model = build_backbone(name).eval()
    assert isinstance(model, Backbone)
    assert model.out_channels == channels
    assert model.strides == {n: 2 ** int(n[1:]) for n in channels}
    assert model.size_divisibility == max(model.strides.values())
    assert model.output_shape() == {n: ShapeSpec(c, 2 ** int(n[1:])) for n, c in channels.items()}
    for h, w in [(448, 448), (97, 131)]:
        with torch.no_grad():
            features = model(torch.rand(1, 3, h, w))
        assert list(features) == list(channels)
        for n, value in features.items():
            level = int(n[1:])
            assert tuple(value.shape) == (1, channels[n], ceil_div(h, level), ceil_div(w, level)), (n, h, w)
            assert torch.isfinite(value).all()
    if name == "yolov1_darknet":
        assert features["c5"].shape[-2:] == (4, 5)  # 97 x 131 -> ceil(/32)


def test_yolov1_trunk_is_the_first_20_convolutions_of_figure_3():
    model = build_backbone("yolov1_darknet")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20
    assert [(c.kernel_size[0], c.out_channels) for c in convs] == (
        [(7, 64), (3, 192), (1, 128), (3, 256), (1, 256), (3, 512)]
        + [(1, 256), (3, 512)] * 4 + [(1, 512), (3, 1024)] + [(1, 512), (3, 1024)] * 2
    )
    assert [c.stride[0] for c in convs] == [2] + [1] * 19
    assert all(c.bias is not None for c in convs)  # the paper: no normalisation
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 4
    assert {m.negative_slope for m in model.modules() if isinstance(m, nn.LeakyReLU)} == {0.1}
    assert sum(p.numel() for p in model.parameters()) == 22_403_136


@pytest.mark.parametrize("name, norm", [("yolov1_darknet", None), ("yolov1_darknet", "bn"), ("fast_yolo_darknet", "bn")])
def test_every_trainable_parameter_gets_a_gradient(name, norm):
    torch.manual_seed(0)
    model = build_backbone(name, norm=norm).train()
    if norm == "bn":
        assert all(c.bias is None for c in model.modules() if isinstance(c, nn.Conv2d))
        assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    features = model(torch.rand(2, 3, 64, 64))
    sum(f.square().mean() for f in features.values()).backward()
    for key, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, key


def test_out_features_frozen_stages_and_errors():
    model = build_backbone("yolov1_darknet", out_features=["c3"], frozen_stages=1)
    assert model.out_channels == {"c3": 512}
    assert len(model.features) == 8  # conv1, pool, conv2, pool, 4 convs: nothing after c3 is built
    # frozen_stages=1: the stem (c1: conv1) and the first stage (c2: pool, conv2)
    assert not any(p.requires_grad for p in model.features[:3].parameters())
    assert all(p.requires_grad for p in model.features[4:].parameters())
    with pytest.raises(ValueError, match="out_features"):
        build_backbone("yolov1_darknet", out_features=["c6"])
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.rand(3, 64, 64))


def test_classifier_weights_load_into_the_backbone(tmp_path):
    torch.manual_seed(0)
    classifier = DarknetClassifier(num_classes=10).eval()
    assert classifier(torch.rand(2, 3, 64, 64)).shape == (2, 10)
    assert isinstance(classifier.avgpool, nn.AdaptiveAvgPool2d)
    path = tmp_path / "darknet.pth"
    torch.save(classifier.state_dict(), path)
    backbone = build_backbone("yolov1_darknet", weights=str(path)).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(backbone(x)["c5"], classifier.features(x))
    with pytest.raises(WeightsError):
        build_backbone("yolov1_darknet", weights="torchvision")
