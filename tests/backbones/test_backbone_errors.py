"""Bad input gets a clear error: unknown names list the available ones, unusable weights
files name the file and the first mismatched keys, non-4D input raises ValueError."""
import logging
import urllib.error

import pytest
import torch
import torchvision

from backbones import WeightsError, WeightsFileNotFoundError, build_backbone
from backbones.googlenet import GoogLeNetClassifier, GoogLeNetOutputs, googlenet_loss


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(KeyError) as info:
        build_backbone("resnet51")
    message = str(info.value)
    assert "'resnet51'" in message
    for name in ("googlenet", "resnet50", "dcn_resnet101", "tv:<name>"):
        assert name in message
    with pytest.raises(ValueError):  # the same error is a ValueError too
        build_backbone("resnet51")


def test_unknown_torchvision_name_lists_torchvision_classifiers():
    with pytest.raises(ValueError, match="tv:resnet51 is not a torchvision classification model.*resnet50"):
        build_backbone("tv:resnet51")


def test_missing_weights_file_is_named(tmp_path):
    path = tmp_path / "nowhere" / "r18.pth"
    with pytest.raises(WeightsFileNotFoundError, match=str(path)) as info:
        build_backbone("resnet18", weights=path)
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "truncated"])
def test_corrupt_weights_file_is_named(tmp_path, content):
    path = tmp_path / "corrupt.pth"
    if content == "truncated":
        buffer = tmp_path / "full.pth"
        torch.save(build_backbone("resnet18", out_features=["c2"]).state_dict(), buffer)
        content = buffer.read_bytes()[: buffer.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=f"cannot read weights file {path}"):
        build_backbone("resnet18", weights=path)


def test_file_without_a_state_dict_is_named(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "config": {"lr": 0.1}}, path)
    with pytest.raises(WeightsError, match=f"{path} holds a dict with keys epoch, config, not a state dict"):
        build_backbone("resnet18", weights=path)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), path)  # a whole module, not a state dict
    with pytest.raises(WeightsError, match=str(path)):
        build_backbone("resnet18", weights=path)


def test_mismatched_weights_file_names_the_file_and_first_keys(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(WeightsError) as info:
        build_backbone("resnet50", weights=path)
    message = str(info.value)
    assert f"weights file {path} does not match resnet50: " in message
    # resnet50's first key that resnet18 lacks, and its first shape mismatch (1x1 vs 3x3).
    assert "missing key(s): layer1.0.conv3.weight" in message
    assert "layer1.0.conv1.weight (file [64, 64, 3, 3] vs model [64, 64, 1, 1])" in message
    assert "shape mismatch" in message


def test_unexpected_keys_are_named(tmp_path):
    state = build_backbone("resnet18").state_dict()
    state["layer2.0.extra.weight"] = torch.zeros(1)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"1 unexpected key\(s\): layer2.0.extra.weight"):
        build_backbone("resnet18", weights=path)


def test_wrapped_and_data_parallel_state_dicts_load(tmp_path, caplog):
    source = build_backbone("resnet18")
    path = tmp_path / "ckpt.pth"
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["module.fc.weight"] = torch.zeros(10, 512)
    torch.save({"state_dict": state, "epoch": 7}, path)
    with caplog.at_level(logging.INFO, logger="backbones"):
        loaded = build_backbone("resnet18", weights=path)
    assert "fc.* (1)" in caplog.text
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_frozen_bn_backbone_loads_batchnorm_weights(tmp_path):
    reference = torchvision.models.resnet18()
    with torch.no_grad():
        reference.layer3[1].bn2.running_var.fill_(3.0)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    frozen = build_backbone("resnet18", norm="frozen_bn", weights=path)
    assert torch.equal(frozen.layer3[1].bn2.running_var, torch.full((256,), 3.0))


def test_torchvision_weights_offline_says_how_to_pass_a_file(monkeypatch):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(WeightsError) as info:
        build_backbone("resnet18", weights="torchvision")
    message = str(info.value)
    assert "ResNet18_Weights.IMAGENET1K_V1" in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "weights='/path/to/resnet18-f37072fd.pth'" in message


def test_torchvision_weights_go_through_torchvision_api(monkeypatch):
    """weights='torchvision' fetches the DEFAULT weights of the matching torchvision model
    (here served from memory instead of the network)."""
    served = torchvision.models.resnet50().state_dict()
    urls = []

    def serve(url, *args, **kwargs):
        urls.append(url)
        return served

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", serve)
    model = build_backbone("dcn_resnet50", weights="torchvision")
    assert urls == [torchvision.models.ResNet50_Weights.DEFAULT.url]
    assert torch.equal(model.layer3[2].conv2.weight, served["layer3.2.conv2.weight"])
    assert torch.equal(model.layer3[2].conv2.conv_offset.weight,
                       torch.zeros_like(model.layer3[2].conv2.conv_offset.weight))
    with pytest.raises(WeightsError, match="no torchvision weights"):
        build_backbone("googlenet", layout="paper", weights="torchvision")


@pytest.mark.parametrize("shape", [(3, 64, 64), (64, 64), (1, 1, 3, 64, 64), (1, 4, 64, 64)])
def test_input_that_is_not_b3hw_raises_value_error(shape):
    model = build_backbone("resnet18", out_features=["c2"])
    with pytest.raises(ValueError, match=r"expects a Tensor\[B, 3, H, W\], got shape"):
        model(torch.zeros(shape))


def test_integer_images_are_refused():
    model = build_backbone("resnet18", out_features=["c2"])
    with pytest.raises(ValueError, match=r"floating-point images, got torch.uint8.*x.float\(\) / 255"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize("name, options, match", [
    ("resnet18", {"norm": "batchnorm"}, "norm='batchnorm' is not one of"),
    ("resnet18", {"frozen_stages": 5}, r"frozen_stages=5 must be an int in -1\.\.4"),
    ("resnet18", {"out_features": ["c6"]}, r"subset of \['c2', 'c3', 'c4', 'c5'\]"),
    ("googlenet", {"layout": "caffe"}, "layout='caffe' is not one of"),
    ("googlenet", {"layout": "paper", "norm": "bn"}, "no normalisation layers"),
    ("dcn_resnet50", {"dcn_version": 3}, r"dcn_version=3 is not one of \(1, 2\)"),
    ("dcn_resnet50", {"dcn_stages": ["c6"]}, "dcn_stages"),
    ("tv:vgg11", {"norm": "gn"}, "'bn' or 'frozen_bn'"),
])
def test_bad_options_are_explained(name, options, match):
    with pytest.raises(ValueError, match=match):
        build_backbone(name, **options)


def test_googlenet_classifier_auxiliary_loss():
    torch.manual_seed(0)
    model = GoogLeNetClassifier(num_classes=5, layout="paper").train()
    x, targets = torch.randn(2, 3, 64, 64), torch.tensor([1, 4])
    outputs = model(x)
    assert isinstance(outputs, GoogLeNetOutputs)
    assert [o.shape for o in outputs] == [(2, 5)] * 3
    ce = torch.nn.functional.cross_entropy
    expected = ce(outputs.logits, targets) + 0.3 * (ce(outputs.aux1, targets) + ce(outputs.aux2, targets))
    loss = googlenet_loss(outputs, targets)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert model.aux1.fc2.weight.grad is not None and model.fc.weight.grad is not None
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 5)
    torch.testing.assert_close(googlenet_loss(logits, targets), ce(logits, targets))


def test_wrapping_a_model_excludes_model_arguments():
    model = torchvision.models.mobilenet_v3_small()
    with pytest.raises(ValueError, match="either model= or model arguments"):
        build_backbone("tv:mobilenet_v3_small", model=model, width_mult=0.5)
