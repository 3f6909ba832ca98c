"""What FCN and the R-CNN family need of a classifier backbone: VGG / AlexNet fc6 and fc7 with
torchvision's weights (``classifier_fc=True``), pool outputs as ``cN`` (``cn_unit="first"``), and
ResNet dilation (``replace_stride_with_dilation``), all loading torchvision state dicts unchanged."""
from __future__ import annotations

import pytest
import torch
import torchvision

from backbones import build_backbone


def _seeded(name: str, **kwargs):
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None, **kwargs).eval()


@pytest.fixture(scope="module")
def vgg16():
    return _seeded("vgg16")


@pytest.mark.parametrize("name, fc6, fc7, shape", [("vgg16", 0, 3, (512, 7, 7)),
                                                   ("alexnet", 1, 4, (256, 6, 6))])
@pytest.mark.parity
def test_classifier_fc_weights_are_torchvision_classifier(name, fc6, fc7, shape, vgg16):
    reference = vgg16 if name == "vgg16" else _seeded(name)
    model = build_backbone(f"tv:{name}", weights=reference.state_dict(), classifier_fc=True)
    assert list(model.classifier_fc) == ["fc6", "fc7"]
    assert model.classifier_input == shape
    for ours, index in zip(model.classifier_fc.values(), (fc6, fc7)):
        assert torch.equal(ours.weight, reference.classifier[index].weight)
        assert torch.equal(ours.bias, reference.classifier[index].bias)
    # Registered once, under torchvision's names; fc8 is not kept.
    fc_keys = sorted(k for k in model.state_dict() if k.startswith("classifier"))
    assert fc_keys == sorted(f"classifier.{i}.{p}" for i in (fc6, fc7) for p in ("weight", "bias"))
    assert model.classifier_fc.fc6.in_features == shape[0] * shape[1] * shape[2]
    # fc6 and fc7 applied to the pooled, flattened features give torchvision's fc7 activations.
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        deepest = reference.avgpool(reference.features(x)).flatten(1)
        expected = reference.classifier[: fc7 + 2](deepest)  # up to fc7's ReLU
        ours = torch.relu(model.classifier_fc.fc7(torch.relu(model.classifier_fc.fc6(deepest))))
    assert torch.allclose(ours, expected, atol=1e-6)


def test_vgg16_default_features_unchanged(vgg16):
    """The default ``tv:vgg16`` (the Faster R-CNN VGG path: c4 = conv5_3 + ReLU) is untouched by
    the new options, and ``classifier_fc`` does not change what forward returns."""
    plain = build_backbone("tv:vgg16", weights=vgg16.state_dict())
    with_fc = build_backbone("tv:vgg16", weights=vgg16.state_dict(), classifier_fc=True)
    assert plain.classifier_fc is None and plain.classifier_input is None
    assert plain.torchvision_nodes == {"c2": "features.15", "c3": "features.22",
                                       "c4": "features.29", "c5": "features.30"}
    assert not any(k.startswith("classifier") for k in plain.state_dict())
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        conv5_3 = vgg16.features[:30](x)
        a, b = plain(x), with_fc(x)
    assert list(a) == list(b) == ["c2", "c3", "c4", "c5"]
    assert torch.equal(a["c4"], conv5_3)
    for name in a:
        assert torch.equal(a[name], b[name])


def test_vgg16_pool_outputs(vgg16):
    model = build_backbone("tv:vgg16", weights=vgg16.state_dict(), cn_unit="first",
                           out_features=["c3", "c4", "c5"])
    assert model.torchvision_nodes == {"c3": "features.16", "c4": "features.23", "c5": "features.30"}
    assert model.out_channels == {"c3": 256, "c4": 512, "c5": 512}
    assert model.strides == {"c3": 8, "c4": 16, "c5": 32}
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours = model(x)
        pool3 = vgg16.features[:17](x)
        pool4 = vgg16.features[17:24](pool3)
        pool5 = vgg16.features[24:](pool4)
    assert torch.equal(ours["c3"], pool3) and torch.equal(ours["c4"], pool4) and torch.equal(ours["c5"], pool5)
    assert tuple(ours["c3"].shape[-2:]) == (8, 12)


def test_classifier_fc_and_cn_unit_errors():
    with pytest.raises(ValueError, match="MLP classifier"):
        build_backbone("tv:resnet18", classifier_fc=True)
    with pytest.raises(ValueError, match="cn_unit"):
        build_backbone("tv:alexnet", cn_unit="pool")


@pytest.mark.parity
@pytest.mark.parametrize("name", ["resnet50", "dcn_resnet50"])
def test_dilated_resnet_strides_and_torchvision_parity(name):
    flags = (False, True, True)
    reference = _seeded("resnet50", replace_stride_with_dilation=list(flags))
    model = build_backbone(name, weights=reference.state_dict(), replace_stride_with_dilation=flags).eval()
    assert model.strides == {"c2": 4, "c3": 8, "c4": 8, "c5": 8}
    assert model.size_divisibility == 8
    dilation = [torch.nn.modules.utils._pair(m.conv2.dilation) for m in model.layer4]
    assert dilation == [(2, 2), (4, 4), (4, 4)]
    x = torch.randn(1, 3, 67, 75)
    with torch.no_grad():
        ours = model(x)
        r = reference
        c2 = r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x)))))
        c3 = r.layer2(c2)
        c4 = r.layer3(c3)
        c5 = r.layer4(c4)
    for got, expected in zip(ours.values(), (c2, c3, c4, c5)):
        assert got.shape == expected.shape
        # deform_conv2d at zero offsets sums in another order than the dense kernel
        assert torch.allclose(got, expected, atol=1e-6 if name == "resnet50" else 1e-3)
    assert tuple(ours["c5"].shape[-2:]) == (9, 10)


def test_partial_dilation_strides():
    model = build_backbone("resnet101", replace_stride_with_dilation=(False, False, True),
                           out_features=["c4", "c5"])
    assert model.strides == {"c4": 16, "c5": 16}
    with pytest.raises(ValueError, match="three booleans"):
        build_backbone("resnet50", replace_stride_with_dilation=(True, True))
    with pytest.raises(ValueError, match="bottleneck"):
        build_backbone("resnet18", replace_stride_with_dilation=(False, True, True))
