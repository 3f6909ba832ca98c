"""Parity with torchvision: its seeded random weights, saved to a file and loaded with
``weights=path``, give our features equal to its intermediate activations and our classifier
logits equal to its logits. The deformable ResNet v1 at initialisation equals the ResNet."""
import logging

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from backbones import (DeformableConv2d, GoogLeNetClassifier, GoogLeNetOutputs, ResNetClassifier,
                       build_backbone)


pytestmark = pytest.mark.parity
RESNET_NODES = {"c2": "layer1", "c3": "layer2", "c4": "layer3", "c5": "layer4"}
GOOGLENET_NODES = {"c3": "inception3b", "c4": "inception4e", "c5": "inception5b"}


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_features_and_logits_equal_torchvision(name, torchvision_weights, capture, caplog):
    tv_model, path = torchvision_weights(name)
    x = torch.randn(2, 3, 75, 97, generator=torch.Generator().manual_seed(1))
    expected = capture(tv_model, RESNET_NODES, x)
    with caplog.at_level(logging.INFO, logger="backbones"):
        ours = build_backbone(name, weights=path).eval()
    assert "ignored 2 key(s)" in caplog.text and "fc.* (2)" in caplog.text
    with torch.no_grad():
        features = ours(x)
    assert list(features) == ["c2", "c3", "c4", "c5"]
    for key, value in features.items():
        assert value.shape == expected[key].shape
        assert max_abs_diff(value, expected[key]) <= 1e-5, key
    # The activations are O(1), so the tolerance above is meaningful.
    assert 0.1 < features["c5"].abs().mean().item() < 100

    classifier = ResNetClassifier(int(name[len("resnet"):]))
    classifier.load_weights(path)
    classifier.eval()
    with torch.no_grad():
        assert max_abs_diff(classifier(x), tv_model(x)) <= 1e-5
    assert classifier.state_dict().keys() == tv_model.state_dict().keys()


def test_googlenet_features_and_logits_equal_torchvision(torchvision_weights, capture, caplog):
    tv_model, path = torchvision_weights("googlenet")
    x = torch.randn(2, 3, 75, 97, generator=torch.Generator().manual_seed(2))
    expected = capture(tv_model, GOOGLENET_NODES, x)
    with caplog.at_level(logging.INFO, logger="backbones"):
        ours = build_backbone("googlenet", layout="torchvision", weights=path).eval()
    assert all(f"{head}.* " in caplog.text for head in ("aux1", "aux2", "fc"))
    assert not any(name.startswith(("aux", "fc")) for name, _ in ours.named_parameters())
    with torch.no_grad():
        features = ours(x)
    assert list(features) == ["c3", "c4", "c5"]
    for key, value in features.items():
        assert value.shape == expected[key].shape
        assert max_abs_diff(value, expected[key]) <= 1e-5, key

    classifier = GoogLeNetClassifier(layout="torchvision")
    assert classifier.state_dict().keys() == tv_model.state_dict().keys()
    classifier.load_weights(path)
    classifier.eval()
    with torch.no_grad():
        assert max_abs_diff(classifier(x), tv_model(x)) <= 1e-5
        # Training mode: same dropout draws in the same order give the same three outputs.
        classifier.train()
        tv_model.train()
        torch.manual_seed(5)
        ours_out = classifier(x)
        torch.manual_seed(5)
        tv_out = tv_model(x)
        tv_model.eval()
    assert isinstance(ours_out, GoogLeNetOutputs)
    assert max_abs_diff(ours_out.logits, tv_out.logits) <= 1e-5
    assert max_abs_diff(ours_out.aux1, tv_out.aux_logits1) <= 1e-5
    assert max_abs_diff(ours_out.aux2, tv_out.aux_logits2) <= 1e-5


def test_googlenet_torchvision_weights_need_torchvision_layout(torchvision_weights):
    _, path = torchvision_weights("googlenet")
    with pytest.raises(RuntimeError, match="5, 5"):  # the paper's 5x5 vs torchvision's 3x3
        build_backbone("googlenet", layout="paper", weights=path)


def test_dcn_v1_at_init_equals_resnet(torchvision_weights, caplog):
    _, path = torchvision_weights("resnet50")
    resnet = build_backbone("resnet50", weights=path).eval()
    with caplog.at_level(logging.INFO, logger="backbones"):
        dcn = build_backbone("dcn_resnet50", weights=path, dcn_version=1).eval()
    assert "conv_offset" in caplog.text  # reported as new, not an error
    deformable = [name for name, m in dcn.named_modules() if isinstance(m, DeformableConv2d)]
    assert len(deformable) == 4 + 6 + 3  # every 3x3 of c3..c5
    assert all(not n.startswith("layer1") for n in deformable)
    x = torch.randn(1, 3, 75, 97, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, got = resnet(x), dcn(x)
    for key in expected:
        scale = expected[key].abs().max().item()
        assert max_abs_diff(got[key], expected[key]) <= 1e-4 * scale, key


def test_deformable_conv_initial_outputs():
    """v1 at zero offsets is the plain conv; v2's mask sigmoid(0) = 0.5 halves it."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 11, 9)
    for version, factor in ((1, 1.0), (2, 0.5)):
        conv = DeformableConv2d(8, 6, 3, stride=2, padding=1, version=version, bias=True)
        with torch.no_grad():
            conv.bias.uniform_(-1, 1)
            got = conv(x)
            plain = F.conv2d(x, conv.weight, None, stride=2, padding=1)
        torch.testing.assert_close(got, factor * plain + conv.bias.reshape(1, -1, 1, 1),
                                   rtol=1e-5, atol=1e-5)
    # A non-zero offset moves the sampling points: the same op as deform_conv2d with it.
    with torch.no_grad():
        conv.conv_offset.bias.fill_(0.5)
        offset_mask = conv.conv_offset(x)
        expected = deform_conv2d(x, offset_mask[:, :18], conv.weight, conv.bias, stride=2,
                                 padding=1, mask=offset_mask[:, 18:].sigmoid())
        torch.testing.assert_close(conv(x), expected)
        assert max_abs_diff(conv(x), 0.5 * F.conv2d(x, conv.weight, conv.bias, 2, 1)) > 1e-2
