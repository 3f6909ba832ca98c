"""The FCN family (detect.modeling.meta_arch.fcn): the paper's VGG-16 FCN-32s/16s/8s and
at-once, skip fusion on other backbones, torchvision's fcn_resnet50/101 layout and its weights,
the loss, and output sizes. Seeded random weights only (no downloads); small images."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from detect import build_detector
from detect.benchmarks.common import calibrate_batchnorm_
from detect.modeling.meta_arch.fcn import build_fcn, convolutionalise
from detect.modeling.seg_heads import BilinearUpsample, bilinear_kernel, sem_seg_loss
from detect.modeling.transform import IMAGENET_MEAN, IMAGENET_STD
from detect.modeling.weights import load_detector_weights

ODD_SIZES = [(45, 77), (64, 33), (97, 101)]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread (restored afterwards): the inputs are small, and on a shared 2-core
    machine two OpenMP threads competing with other processes spin-wait (as tests/backbones)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _normalise(image: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return ((image - mean) / std)[None]


def _random_masks(sizes, num_classes: int, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    targets = []
    for h, w in sizes:
        mask = torch.randint(0, num_classes + 1, (h, w), generator=generator)
        mask[: h // 4] = 255  # an ignored band
        targets.append({"masks": mask})
    return targets


# ----------------------------------------------------------------------------- torchvision parity
@pytest.fixture(scope="module")
def torchvision_fcn50():
    from torchvision.models.segmentation import fcn_resnet50

    torch.manual_seed(0)
    model = fcn_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    return calibrate_batchnorm_(model)


@pytest.mark.parametrize("depth", [50, pytest.param(101, marks=pytest.mark.slow)])
def test_torchvision_fcn_parity(depth, torchvision_fcn50):
    """Same seeded weights: our logits (from 0..1 images through our transform, no resize)
    equal torchvision's (from the same images normalised by hand) on odd sizes, aux included."""
    if depth == 50:
        reference = torchvision_fcn50
    else:
        from torchvision.models.segmentation import fcn_resnet101

        torch.manual_seed(1)
        reference = calibrate_batchnorm_(fcn_resnet101(weights=None, weights_backbone=None, num_classes=21,
                                                       aux_loss=True))
    ours = build_fcn(num_classes=20, backbone=f"resnet{depth}", layout="torchvision",
                     weights=reference.state_dict()).eval()
    assert ours.backbone.strides == {"c4": 8, "c5": 8}
    generator = torch.Generator().manual_seed(depth)
    for h, w in [(67, 93), (81, 59)]:
        image = torch.rand(3, h, w, generator=generator)
        with torch.no_grad():
            expected = reference(_normalise(image))
            got = ours.predict([image])[0]["sem_seg"]
            batch, _ = ours.transform([image])
            got_aux = ours.head_outputs(batch.tensor, with_aux=True)["aux"][0]
        scale = expected["out"].abs().max()
        assert got.shape == (21, h, w) and got.dtype == torch.float32
        assert scale > 0.1  # real logits, not a degenerate zero network
        assert (got - expected["out"][0]).abs().max() <= 1e-4 * scale
        assert (got_aux - expected["aux"][0]).abs().max() <= 1e-4 * expected["aux"].abs().max()


def test_torchvision_layout_structure():
    model = build_fcn(num_classes=4, backbone="resnet50", layout="torchvision")
    head = model.head
    assert [type(m) for m in head] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Dropout, nn.Conv2d]
    assert head[0].in_channels == 2048 and head[0].out_channels == 512 and head[0].kernel_size == (3, 3)
    assert head[0].bias is None and head[3].p == 0.1 and head[4].out_channels == 5
    assert model.aux_head[0].in_channels == 1024 and model.aux_head[0].out_channels == 256
    assert model.aux_weight == 0.5 and model.aux_feature == "c4"
    assert model.class_specific_prefixes == ("head.4.", "aux_head.4.")
    assert model.transform.size_divisibility == 1


def test_torchvision_weights_reinitialise_for_other_class_count(torchvision_fcn50, caplog):
    model = build_fcn(num_classes=3, backbone="resnet50", layout="torchvision")
    fresh = model.head[4].weight.clone()
    report = load_detector_weights(model, torchvision_fcn50.state_dict(), where="tv fcn")
    assert report["format"] == "torchvision"
    assert report["reinitialized"] == ["head.4", "aux_head.4"]
    assert torch.equal(model.head[4].weight, fresh)
    assert torch.equal(model.head[0].weight, torchvision_fcn50.classifier[0].weight)
    assert torch.equal(model.aux_head[1].running_var, torchvision_fcn50.aux_classifier[1].running_var)
    assert torch.equal(model.backbone.layer4[2].conv3.weight, torchvision_fcn50.backbone.layer4[2].conv3.weight)


# ----------------------------------------------------------------------------- bilinear upsampling
def test_bilinear_kernel_values_exact():
    assert torch.equal(bilinear_kernel(4)[0] / 0.25, torch.tensor([0.25, 0.75, 0.75, 0.25]))
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.equal(bilinear_kernel(4), taps[:, None] * taps[None, :])
    assert torch.equal(bilinear_kernel(3), torch.tensor([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]))
    # 16 taps (FCN-8s's upscore8): (2 i + 1) / 16 rising, then falling
    rising = torch.arange(1, 16, 2, dtype=torch.float32) / 16
    assert torch.equal(bilinear_kernel(16)[7], torch.cat([rising, rising.flip(0)]) * (15 / 16))


def test_bilinear_upsample_init_and_alignment():
    up = BilinearUpsample(3, 8, learnable=False)
    assert up.kernel_size == (16, 16) and up.stride == (8, 8) and up.padding == (4, 4)
    assert not up.weight.requires_grad
    for i in range(3):
        for j in range(3):
            expected = bilinear_kernel(16) if i == j else torch.zeros(16, 16)
            assert torch.equal(up.weight[i, j], expected)
    x = torch.randn(1, 3, 5, 7)
    y = up(x)
    assert y.shape == (1, 3, 40, 56)
    # Half-pixel aligned: equal to bilinear interpolation away from the zero-padded border.
    reference = F.interpolate(x, scale_factor=8, mode="bilinear", align_corners=False)
    assert torch.allclose(y[..., 4:-4, 4:-4], reference[..., 4:-4, 4:-4], atol=1e-5)
    assert BilinearUpsample(3, 2).weight.requires_grad


# ----------------------------------------------------------------------------- the paper's VGG-16
@pytest.fixture(scope="module")
def seeded_vgg16():
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).eval()


@pytest.fixture(scope="module")
def vgg_fcn8s_at_once(seeded_vgg16):
    return build_fcn(num_classes=4, backbone="vgg16", at_once=True, backbone_weights=seeded_vgg16.state_dict())


def test_convolutionalised_vgg_gives_classifier_logits(seeded_vgg16, vgg_fcn8s_at_once):
    model = vgg_fcn8s_at_once.eval()
    fc = model.head.fc
    assert fc.fc6.kernel_size == (7, 7) and fc.fc6.padding == (3, 3) and fc.fc7.kernel_size == (1, 1)
    assert fc.drop6.p == 0.5 and fc.drop7.p == 0.5
    assert "classifier.0.weight" not in model.state_dict()  # fc6 is held once, as a convolution
    fc8 = convolutionalise(seeded_vgg16.classifier[6], (4096, 1, 1))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = seeded_vgg16(x)
        pool5 = model.backbone(x)["c5"]
        dense = fc8(fc(pool5))
    assert pool5.shape == (1, 512, 7, 7)
    assert dense.shape == (1, 1000, 7, 7)
    # the centre position sees exactly the classifier's 7x7 input (the padding lies outside it)
    assert expected.abs().max() > 1e-3
    assert (dense[0, :, 3, 3] - expected[0]).abs().max() <= 1e-5


def test_vgg_fcn_variants(vgg_fcn8s_at_once, seeded_vgg16):
    model = vgg_fcn8s_at_once
    head = model.head
    assert head.features == ["c5", "c4", "c3"] and head.skip_scales == {"c4": 0.01, "c3": 0.0001}
    assert model.backbone.torchvision_nodes == {"c3": "features.16", "c4": "features.23", "c5": "features.30"}
    assert head.final_upsample.factor == 8 and not head.final_upsample.weight.requires_grad
    assert head.upsample["c5"].factor == 2 and head.upsample["c5"].weight.requires_grad
    assert all(float(p.detach().abs().sum()) == 0.0 for p in head.scores.parameters())
    model.eval()
    sizes = [(45, 77), (64, 33)]
    outputs = model.predict([torch.rand(3, h, w) for h, w in sizes])
    for (h, w), out in zip(sizes, outputs):
        assert out["sem_seg"].shape == (5, h, w)
        assert float(out["sem_seg"].abs().max()) == 0.0  # zero-initialised scores



@pytest.mark.slow
def test_vgg_fcn32s():
    fcn32 = build_fcn(num_classes=4, backbone="vgg16", variant="32s")
    assert fcn32.head.features == ["c5"] and fcn32.head.final_upsample.factor == 32
    assert fcn32.head.final_upsample.kernel_size == (64, 64)
    assert list(fcn32.backbone.out_channels) == ["c5"]
    assert fcn32.predict([torch.rand(3, 71, 39)])[0]["sem_seg"].shape == (5, 71, 39)


def test_vgg_scaled_skips_reach_the_scores(vgg_fcn8s_at_once):
    """With non-zero score layers, the at-once scales multiply the skips exactly: scoring pool3
    with weights w gives 1e-4 * w . pool3 at stride 8."""
    model = copy.deepcopy(vgg_fcn8s_at_once).eval()
    with torch.no_grad():
        model.head.scores["c3"].weight.normal_()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = model.backbone(x)
        out = model.head(features)
        expected = model.head.final_upsample(
            F.conv2d(features["c3"], model.head.scores["c3"].weight) * 1e-4)
    assert torch.allclose(out, expected, atol=1e-7, rtol=1e-5)
    assert out.abs().max() > 0


# ----------------------------------------------------------------------------- other backbones
@pytest.mark.parametrize("backbone, variant", [("resnet18", "32s"), ("resnet18", "16s"), ("resnet18", "8s"),
                                               ("googlenet", "8s"), ("dcn_resnet50", "16s")])
def test_skip_fusion_on_backbones_output_size(backbone, variant):
    model = build_fcn(num_classes=2, backbone=backbone, variant=variant).eval()
    assert model.head.features == {"32s": ["c5"], "16s": ["c5", "c4"], "8s": ["c5", "c4", "c3"]}[variant]
    assert model.transform.size_divisibility == 32
    outputs = model.predict([torch.rand(3, h, w) for h, w in ODD_SIZES])
    for (h, w), out in zip(ODD_SIZES, outputs):
        assert out["sem_seg"].shape == (3, h, w) and out["sem_seg"].dtype == torch.float32
        assert float(out["sem_seg"].abs().max()) == 0.0


def test_torchvision_layout_output_size_and_resize():
    model = build_fcn(num_classes=2, backbone="resnet18", layout="torchvision", min_size=40).eval()
    assert model.backbone.strides == {"c4": 16, "c5": 32}  # BasicBlock ResNets are not dilated
    outputs = model.predict([torch.rand(3, h, w) for h, w in ODD_SIZES])
    assert [tuple(o["sem_seg"].shape) for o in outputs] == [(3, h, w) for h, w in ODD_SIZES]
    googlenet = build_fcn(num_classes=2, backbone="googlenet", layout="torchvision").eval()
    assert googlenet.predict([torch.rand(3, 50, 70)])[0]["sem_seg"].shape == (3, 50, 70)


# ----------------------------------------------------------------------------- loss
def test_sem_seg_loss_exact_values():
    logits = torch.tensor([[[[2.0, 0.0, 5.0]], [[0.0, 1.0, -5.0]]]])  # [1, 2, 1, 3]
    masks = torch.tensor([[[0, 1, 255]]])
    ce0 = math.log(1 + math.exp(-2.0))        # pixel 0, class 0: -log softmax
    ce1 = math.log(1 + math.exp(-1.0))        # pixel 1, class 1
    assert math.isclose(float(sem_seg_loss(logits, masks)), (ce0 + ce1) / 2, rel_tol=1e-6)
    assert math.isclose(float(sem_seg_loss(logits, masks, reduction="sum")), ce0 + ce1, rel_tol=1e-6)
    two = torch.cat([logits, logits]), torch.cat([masks, torch.full_like(masks, 255)])
    assert math.isclose(float(sem_seg_loss(*two)), (ce0 + ce1) / 2, rel_tol=1e-6)      # valid pixels only
    assert math.isclose(float(sem_seg_loss(*two, reduction="sum")), (ce0 + ce1) / 2, rel_tol=1e-6)  # per image
    nothing = sem_seg_loss(logits, torch.full_like(masks, 255))
    assert float(nothing) == 0.0  # not NaN
    with pytest.raises(ValueError, match="reduction"):
        sem_seg_loss(logits, masks, reduction="none")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_model_loss_ignores_255(reduction):
    """Zero-initialised scores: every valid pixel costs log(K + 1), ignored ones nothing."""
    model = build_fcn(num_classes=3, backbone="resnet18", variant="8s", loss_reduction=reduction).train()
    sizes = [(45, 77), (33, 40)]
    targets = _random_masks(sizes, 3)
    targets.append({"masks": torch.full((20, 30), 255, dtype=torch.int64)})  # no valid pixel
    images = [torch.rand(3, h, w) for h, w in [*sizes, (20, 30)]]
    losses = model.loss(images, targets)
    assert set(losses) == {"loss_sem_seg"}
    valid = sum(int((t["masks"] != 255).sum()) for t in targets)
    expected = math.log(4) if reduction == "mean" else math.log(4) * valid / 3
    assert math.isclose(float(losses["loss_sem_seg"].detach()), expected, rel_tol=1e-5)


def test_aux_loss_weight_and_gradients():
    model = build_fcn(num_classes=2, backbone="resnet18", layout="torchvision")
    sizes = [(41, 55), (48, 37)]
    images = [torch.rand(3, h, w) for h, w in sizes]
    targets = _random_masks(sizes, 2)
    model.eval()  # no dropout, BatchNorm statistics: the same numbers twice
    losses = model.loss(images, targets)
    assert set(losses) == {"loss_sem_seg", "loss_aux"}
    with torch.no_grad():
        batch, resized = model.transform(images, targets)
        masks = model.transform.pad_masks([t["masks"] for t in resized], batch)
        outputs = model.head_outputs(batch.tensor, with_aux=True)
    assert torch.allclose(losses["loss_aux"], 0.5 * sem_seg_loss(outputs["aux"], masks), rtol=1e-5)
    assert torch.allclose(losses["loss_sem_seg"], sem_seg_loss(outputs["out"], masks), rtol=1e-5)

    model.train()
    losses = model.loss(images, targets)
    sum(losses.values()).backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["head.4.weight"].abs().sum() > 0 and grads["aux_head.4.weight"].abs().sum() > 0
    assert build_fcn(num_classes=2, backbone="resnet18", layout="torchvision", aux_loss=False).aux_head is None


def test_skip_layout_gradients_finite():
    model = build_fcn(num_classes=2, backbone="resnet18", variant="8s").train()
    sizes = [(45, 77), (64, 33)]
    losses = model.loss([torch.rand(3, h, w) for h, w in sizes], _random_masks(sizes, 2))
    losses["loss_sem_seg"].backward()
    head = model.head
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert head.scores["c5"].weight.grad.abs().sum() > 0 and head.scores["c3"].weight.grad.abs().sum() > 0
    assert head.final_upsample.weight.grad is None  # fixed bilinear
    learned = build_fcn(num_classes=2, backbone="resnet18", learn_final_upsample=True)
    assert learned.head.final_upsample.weight.requires_grad


# ----------------------------------------------------------------------------- contract, weights, errors
def test_contract_and_registry():
    model = build_detector("fcn", num_classes=3, backbone="resnet18", variant="16s")
    assert model.task == "semantic_segmentation" and model.default_metric == "miou"
    assert model.default_best_metric == "sem_seg/mIoU" and model.score_thresh is None
    assert model.class_specific_prefixes == ("head.scores.", "head.upsample.", "head.final_upsample.")
    with pytest.raises(ValueError, match="255"):
        model.loss([torch.rand(3, 32, 32)], [{"masks": torch.full((32, 32), 4, dtype=torch.int64)}])


def test_weights_reinitialise_class_specific_layers_when_k_changes(tmp_path):
    source = build_fcn(num_classes=3, backbone="resnet18", variant="8s")
    with torch.no_grad():
        for p in source.head.parameters():
            p.add_(1.0)
    path = tmp_path / "fcn.pth"
    torch.save({"model": source.state_dict()}, path)
    same = build_fcn(num_classes=3, backbone="resnet18", variant="8s", weights=str(path))
    assert torch.equal(same.head.scores["c3"].weight, source.head.scores["c3"].weight)

    other = build_fcn(num_classes=5, backbone="resnet18", variant="8s")
    report = load_detector_weights(other, str(path))
    assert report["reinitialized"] == ["head.scores", "head.upsample", "head.final_upsample"]
    assert torch.equal(other.backbone.layer3[0].conv1.weight, source.backbone.layer3[0].conv1.weight)
    assert float(other.head.scores["c5"].weight.detach().abs().sum()) == 0.0
    assert torch.equal(other.head.final_upsample.weight[2, 2], bilinear_kernel(16))


def test_optimize_for_inference_matches():
    torch.manual_seed(0)
    model = build_fcn(num_classes=20, backbone="resnet18", layout="torchvision")
    model = calibrate_batchnorm_(model, run=lambda x: model.train().head_outputs(x, with_aux=True))
    images = [torch.rand(3, 57, 83), torch.rand(3, 64, 48)]
    expected = model.predict(images)
    fast = copy.deepcopy(model).optimize_for_inference()
    got = fast.predict(images)
    for a, b in zip(got, expected):
        assert a["sem_seg"].shape == b["sem_seg"].shape
        assert (a["sem_seg"] - b["sem_seg"]).abs().max() <= 1e-4 * b["sem_seg"].abs().max()
    with pytest.raises(RuntimeError, match="optimized for inference"):
        fast.train()


def test_bad_options_raise():
    with pytest.raises(ValueError, match="at-once"):
        build_fcn(num_classes=2, backbone="resnet18", variant="16s", at_once=True)
    with pytest.raises(ValueError, match="layout"):
        build_fcn(num_classes=2, backbone="resnet18", layout="deeplab")
    with pytest.raises(ValueError, match="variant"):
        build_fcn(num_classes=2, backbone="resnet18", variant="4s")
    with pytest.raises(ValueError, match="num_classes"):
        build_fcn(num_classes=0, backbone="resnet18")
    with pytest.raises(ValueError, match="reads"):
        build_fcn(num_classes=2, backbone="resnet18", backbone_options={"out_features": ["c5"]})
    with pytest.raises(ValueError, match="aux_loss"):
        build_fcn(num_classes=2, backbone="resnet18", aux_loss=True)
