"""Training behaviour: gradients reach every trainable parameter, frozen stages get none and
keep their statistics, FrozenBatchNorm2d is exact, fuse_norm_ keeps the features."""
import pytest
import torch
from torch import nn

from backbones import FrozenBatchNorm2d, build_backbone
from backbones.norm import convert_frozen_batchnorm


def backward_on_features(model, size=(64, 64), batch=2):
    torch.manual_seed(0)
    features = model(torch.randn(batch, 3, *size))
    sum(f.float().pow(2).mean() for f in features.values()).backward()
    return features


def norm_statistics(module):
    return {name: b.clone() for name, b in module.named_buffers() if "running" in name}


@pytest.mark.parametrize("name, options", [
    ("resnet18", {}),
    ("googlenet", {"layout": "paper"}),
    ("googlenet", {"norm": "gn"}),
    ("dcn_resnet50", {"dcn_version": 2, "out_features": ["c3"]}),
    ("tv:mobilenet_v3_small", {}),
])
def test_every_trainable_parameter_gets_a_finite_gradient(name, options):
    model = build_backbone(name, **options).train()
    backward_on_features(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, missing[:5]
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    nonzero = sum(bool(p.grad.abs().sum() > 0) for _, p in trainable)
    # Zero-initialised offset predictors still get a gradient through the sampling positions.
    assert nonzero == len(trainable) or name == "tv:mobilenet_v3_small"


@pytest.mark.parametrize("name, frozen_stages, frozen_prefixes, trainable_prefixes", [
    ("resnet18", 0, ("conv1.", "bn1."), ("layer1.", "layer4.")),
    ("resnet18", 2, ("conv1.", "bn1.", "layer1.", "layer2."), ("layer3.", "layer4.")),
    ("googlenet", 2, ("conv1.", "conv2.", "conv3.", "inception3a.", "inception3b."),
     ("inception4a.", "inception5b.")),
    ("dcn_resnet50", 1, ("conv1.", "layer1."), ("layer2.0.conv2.conv_offset.", "layer2.3.")),
    ("tv:resnet18", 1, ("conv1.", "bn1.", "layer1."), ("layer2.", "layer4.")),
])
def test_frozen_stages_get_no_gradient_and_keep_statistics(name, frozen_stages, frozen_prefixes,
                                                          trainable_prefixes):
    options = {"out_features": ["c2", "c3"]} if name.startswith("dcn") else {}
    model = build_backbone(name, frozen_stages=frozen_stages, **options).train()
    assert model.frozen_stages == frozen_stages
    before = norm_statistics(model)
    backward_on_features(model)
    after = norm_statistics(model)
    for n, p in model.named_parameters():
        if n.startswith(frozen_prefixes):
            assert not p.requires_grad and p.grad is None, n
        if n.startswith(trainable_prefixes):
            assert p.requires_grad and p.grad is not None, n
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    frozen_stats = {n for n in before if n.startswith(frozen_prefixes)}
    assert frozen_stats and not (changed & frozen_stats)
    assert any(n.startswith(trainable_prefixes) for n in changed)  # the others do train
    # Frozen stages' norms stay in eval mode through train().
    model.train()
    for n, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d) and (n + ".").startswith(frozen_prefixes):
            assert not m.training, n


def test_frozen_bn_backbone_never_changes_statistics_and_has_no_norm_parameters():
    model = build_backbone("resnet18", norm="frozen_bn").train()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any("bn" in n or "downsample.1" in n for n, _ in model.named_parameters())
    before = {n: b.clone() for n, b in model.named_buffers()}
    backward_on_features(model)
    assert all(torch.equal(before[n], b) for n, b in model.named_buffers())


def test_frozen_batchnorm_equals_batchnorm_in_eval_and_loads_its_state_dict():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(5, eps=1e-3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    bn.eval()
    frozen = FrozenBatchNorm2d(5, eps=1e-3)
    state = bn.state_dict()
    assert "num_batches_tracked" in state
    result = frozen.load_state_dict(state)  # strict: num_batches_tracked is accepted and dropped
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(3, 5, 4, 6)
    torch.testing.assert_close(frozen(x), bn(x))
    x.requires_grad_(True)  # the autograd path (affine form) computes the same thing
    y = frozen(x)
    torch.testing.assert_close(y, bn(x.detach()))
    y.sum().backward()
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(x.grad, scale.reshape(1, -1, 1, 1).expand_as(x).detach())
    assert list(dict(frozen.named_parameters())) == []
    converted = convert_frozen_batchnorm(nn.Sequential(nn.Conv2d(3, 5, 1), bn))
    assert isinstance(converted[1], FrozenBatchNorm2d)
    torch.testing.assert_close(converted[1].running_var, bn.running_var)


def test_group_norm_uses_32_groups_where_it_can():
    resnet = build_backbone("resnet18", norm="gn")
    groups = {m.num_groups for m in resnet.modules() if isinstance(m, nn.GroupNorm)}
    assert groups == {32}
    googlenet = build_backbone("googlenet", norm="gn")
    # 3a's 5x5-reduce conv has 16 channels: 16 groups; 24 channels: 8 groups.
    assert googlenet.inception3a.branch3[0].bn.num_groups == 16
    assert googlenet.inception4b.branch3[0].bn.num_groups == 8
    assert googlenet.inception3a.branch1.bn.num_groups == 32


def perturb_norms(model):
    """Give every norm non-trivial statistics so that folding is really tested."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                c = m.running_mean.numel()
                m.running_mean.copy_(torch.rand(c, generator=generator) - 0.5)
                m.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                m.bias.copy_(torch.rand(c, generator=generator) - 0.5)


@pytest.mark.parametrize("name, options", [
    ("resnet50", {"norm": "frozen_bn"}),
    ("resnet18", {}),
    ("googlenet", {}),
    ("dcn_resnet50", {"dcn_version": 2, "out_features": ["c3"]}),
    ("tv:resnet18", {}),
    ("tv:mobilenet_v3_small", {}),
])
def test_fuse_norm_keeps_features(name, options):
    model = build_backbone(name, **options)
    perturb_norms(model)
    model.eval()
    x = torch.randn(1, 3, 75, 97)
    with torch.no_grad():
        expected = model(x)
        model.fuse_norm_()
        got = model(x)
    norms = [n for n, m in model.named_modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert not norms, norms[:3]  # every norm here follows a conv
    for key in expected:
        scale = expected[key].abs().max().item()
        assert (got[key] - expected[key]).abs().max().item() <= 1e-4 * scale, key


def test_fuse_norm_refuses_batchnorm_in_training_mode():
    model = build_backbone("resnet18", out_features=["c2"]).train()
    with pytest.raises(RuntimeError, match=r"\.eval\(\)"):
        model.fuse_norm_()
