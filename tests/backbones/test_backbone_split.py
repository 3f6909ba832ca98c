"""split_last_stage_() (the C4 detectors' box head) and GoogLeNet's one input transform."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from backbones import build_backbone
from backbones.googlenet import InputTransform


def test_resnet_split_detaches_layer4_with_its_freezing():
    torch.manual_seed(0)
    model = build_backbone("resnet18", out_features=["c4", "c5"], frozen_stages=4)
    layer4 = model.layer4
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        model.eval()
        expected = model(x)
    stage, frozen = model.split_last_stage_()
    assert stage is layer4 and frozen
    assert not hasattr(model, "layer4") and not any(k.startswith("layer4.") for k in model.state_dict())
    assert model.out_features == ["c4"] and model.out_channels == {"c4": 256} and model.size_divisibility == 16
    assert model.frozen_stages == 3
    with torch.no_grad():
        got = model(x)
        assert list(got) == ["c4"] and torch.equal(got["c4"], expected["c4"])
        assert torch.equal(stage(got["c4"]), expected["c5"])
    # The stage left the backbone: train() no longer reaches it, its owner keeps it frozen.
    stage.train()
    model.train()
    assert stage.training and not model.layer3.training
    assert not any(p.requires_grad for p in stage.parameters())


def test_split_of_an_unfrozen_stage_and_googlenet_inception5():
    torch.manual_seed(0)
    resnet = build_backbone("resnet18", out_features=["c4", "c5"], frozen_stages=1)
    stage, frozen = resnet.split_last_stage_()
    assert not frozen and resnet.frozen_stages == 1 and all(p.requires_grad for p in stage.parameters())

    googlenet = build_backbone("googlenet", out_features=["c4", "c5"]).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        expected = googlenet(x)
    stage, frozen = googlenet.split_last_stage_()
    assert not frozen and isinstance(stage, nn.Sequential) and len(stage) == 3
    assert {k.split(".")[0] for k in stage.state_dict()} == {"1", "2"}  # 5a, 5b (0 is the max-pool)
    assert not any(hasattr(googlenet, n) for n in ("maxpool4", "inception5a", "inception5b"))
    with torch.no_grad():
        c4 = googlenet(x)["c4"]
        assert torch.equal(c4, expected["c4"]) and torch.equal(stage(c4), expected["c5"])


def test_split_needs_the_previous_output_and_a_supporting_family():
    with pytest.raises(ValueError, match=r"needs the output before the last one"):
        build_backbone("resnet18", out_features=["c3", "c5"]).split_last_stage_()
    with pytest.raises(ValueError, match=r"needs the output before the last one"):
        build_backbone("resnet18", out_features=["c5"]).split_last_stage_()
    with pytest.raises(NotImplementedError, match="cannot split off its last stage"):
        build_backbone("tv:mobilenet_v3_small", out_features=["c4", "c5"]).split_last_stage_()


def test_googlenet_input_transform_is_one_module_outside_the_state_dict():
    ours = build_backbone("googlenet")
    wrapped = build_backbone("tv:googlenet", out_features=["c4"])
    assert type(ours.input_transform) is InputTransform and type(wrapped.input_transform) is InputTransform
    for model in (ours, wrapped):
        assert not any("transform" in k or "input_" in k for k in model.state_dict())
    assert build_backbone("googlenet", transform_input=False).input_transform is None
    assert build_backbone("googlenet", layout="paper").input_transform is None
    reference = torchvision.models.googlenet(weights=None, aux_logits=False, transform_input=True, init_weights=False)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(InputTransform()(x), reference._transform_input(x), rtol=0, atol=1e-6)
