"""R-CNN: warped crops with context, the fine-tuning sampler, hard-negative mining, ridge box
regression, the SVM / regressor buffers in checkpoints, and bad proposals.

A tiny CNN (two convolutions) on 32 px crops keeps every test in milliseconds; nothing is
downloaded.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detect.errors import UserInputError
from detect.modeling.crops import context_boxes, valid_proposals, warp_crops
from detect.modeling.linear_svm import HardNegativeMiner, fit_linear_svm, fit_ridge, mean_norm_scale
from detect.modeling.meta_arch.rcnn import RCNN, CropCNN, classifier_fc


class TinyBody(nn.Module):
    """Stands in for a backbone of the table: ``forward`` returns ``{"c2": map}``."""

    out_channels = {"c2": 8}

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)

    def forward(self, x):
        return {"c2": F.relu(self.conv2(F.relu(self.conv1(x))))}


def tiny_rcnn(num_classes=2, fc=True, **options) -> RCNN:
    torch.manual_seed(0)
    if fc:
        cnn = CropCNN(TinyBody(), (2, 2), classifier_fc(32, (16,), "dropout_last", 0.0), 32, 16)
    else:
        cnn = CropCNN(TinyBody(), (1, 1), nn.Sequential(), 8, 8)
    options = {"crop_size": 32, "context_pad": 4, **options}
    return RCNN(cnn, num_classes, **options)


# ------------------------------------------------------------------ crops
def test_context_boxes_leave_exactly_p_warped_pixels_around_the_box():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0]])
    dilated = context_boxes(boxes, crop_size=32, context_pad=4)
    # w = 40, h = 20 warped into 32 - 2 * 4 = 24 px: 4 warped px are 40 / 24 * 4 and 20 / 24 * 4 image px
    expected = torch.tensor([[10 - 40 / 6, 20 - 20 / 6, 50 + 40 / 6, 40 + 20 / 6]])
    torch.testing.assert_close(dilated, expected)
    assert torch.equal(context_boxes(boxes, 32, 0), boxes)
    with pytest.raises(ValueError):
        context_boxes(boxes, 32, 16)


def test_crop_centre_is_the_box_itself_and_matches_a_direct_bilinear_sample():
    g = torch.Generator().manual_seed(0)
    image = torch.randn(3, 40, 60, generator=g)
    boxes = torch.tensor([[10.3, 8.2, 41.7, 30.9], [5.0, 5.0, 20.0, 35.0]])
    size, pad = 32, 4
    with_context = warp_crops(image, boxes, size, pad)
    plain = warp_crops(image, boxes, size - 2 * pad, 0)
    assert with_context.shape == (2, 3, size, size)
    # the central (S - 2p) pixels of the crop with context are the warp of the box alone
    torch.testing.assert_close(with_context[:, :, pad:size - pad, pad:size - pad], plain, atol=1e-5, rtol=0)
    # every crop pixel is the bilinear sample at its centre's image point (grid_sample, inside the image)
    region = context_boxes(boxes, size, pad)
    steps = (torch.arange(size) + 0.5) / size
    xs = region[:, 0, None] + steps * (region[:, 2] - region[:, 0])[:, None]  # [B, S]
    ys = region[:, 1, None] + steps * (region[:, 3] - region[:, 1])[:, None]
    grid = torch.stack((xs[:, None, :].expand(-1, size, -1) / 60 * 2 - 1,
                        ys[:, :, None].expand(-1, -1, size) / 40 * 2 - 1), dim=-1)
    reference = F.grid_sample(image[None].expand(2, -1, -1, -1), grid, mode="bilinear", align_corners=False)
    torch.testing.assert_close(with_context, reference, atol=5e-5, rtol=0)


def test_crop_outside_the_image_is_the_mean():
    model = tiny_rcnn()
    image = torch.ones(3, 20, 20)
    box = torch.tensor([[-20.0, 0.0, 10.0, 20.0]])  # its left two thirds (and the context) lie outside
    crop = model.crops(image, box)[0]
    inside_value = (1 - model.image_mean) / model.image_std  # [3, 1, 1]
    # crop column j samples x = x1' + (j + 0.5) * w' / 32 with x1' = -20 - 30 / 6, w' = 40
    x = -25 + (torch.arange(32) + 0.5) * 40 / 32
    y = -20 / 6 + (torch.arange(32) + 0.5) * (20 + 40 / 6) / 32
    far_outside, well_inside = x < -1.5, x > 0.5
    rows_inside = (y > 0.5) & (y < 19.5)
    assert far_outside.sum() > 10 and well_inside.sum() > 5 and rows_inside.sum() > 20
    assert torch.equal(crop[:, :, far_outside], torch.zeros_like(crop[:, :, far_outside]))
    assert torch.equal(crop[:, y < -1.5], torch.zeros_like(crop[:, y < -1.5]))  # above the image: context rows
    inside = crop[:, rows_inside][:, :, well_inside]
    torch.testing.assert_close(inside, inside_value.expand_as(inside))
    # a mean-coloured image gives an all-zero crop whatever the box: the fill is the mean
    mean_image = model.image_mean.expand(3, 20, 20).clone()
    assert model.crops(mean_image, box).abs().max() < 1e-6


def test_valid_proposals_drop_degenerate_and_non_finite_boxes_and_clip():
    boxes = torch.tensor([[2.0, 2.0, 8.0, 9.0], [5.0, 5.0, 5.0, 9.0], [float("nan"), 0, 4, 4],
                          [-5.0, -5.0, 30.0, 30.0], [9.0, 3.0, 4.0, 8.0], [19.5, 0.0, 25.0, 5.0]])
    kept, index = valid_proposals(boxes, (16, 20))
    assert index.tolist() == [0, 3]
    torch.testing.assert_close(kept, torch.tensor([[2.0, 2.0, 8.0, 9.0], [0.0, 0.0, 20.0, 16.0]]))


# ------------------------------------------------------------------ fine-tuning sampler
def _image_with_proposals(num_fg: int, num_bg: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    gt = torch.tensor([[20.0, 20.0, 60.0, 60.0]])
    fg = gt + torch.rand(num_fg, 4, generator=g) * 4 - 2  # IoU > 0.8 with the ground truth
    bg = torch.tensor([[70.0, 70.0, 95.0, 95.0]]) + torch.rand(num_bg, 4, generator=g) * 4 - 2
    return torch.rand(3, 100, 100, generator=g), {"boxes": gt, "labels": torch.tensor([2]),
                                                  "proposals": torch.cat((fg, bg))}


def test_finetune_batch_is_32_foreground_and_96_background_over_the_images():
    model = tiny_rcnn()
    images, targets = zip(*[_image_with_proposals(100, 300, 0), _image_with_proposals(50, 200, 1)])
    torch.manual_seed(0)
    boxes, labels = model.sample_finetune_batch(list(images), list(targets))
    assert labels.numel() == 128 and sum(b.shape[0] for b in boxes) == 128
    assert int((labels == 2).sum()) == 32 and int((labels == 0).sum()) == 96
    assert set(labels.unique().tolist()) == {0, 2}


def test_finetune_batch_fills_with_background_when_foreground_is_scarce():
    model = tiny_rcnn()
    image, target = _image_with_proposals(4, 300)
    torch.manual_seed(0)
    _, labels = model.sample_finetune_batch([image], [target])
    # 4 proposals + the ground-truth box itself are foreground, the rest of the 128 background
    assert int((labels == 2).sum()) == 5 and int((labels == 0).sum()) == 123


def test_finetune_loss_is_finite_with_gradients_and_the_new_layer_gradient_is_scaled():
    images, targets = zip(*[_image_with_proposals(10, 30, 0), _image_with_proposals(0, 0, 1)])
    losses = {}
    grads = {}
    for mult in (1.0, 10.0):
        model = tiny_rcnn(new_layer_lr_mult=mult, mirror=False)
        model.train()
        torch.manual_seed(0)
        loss = model(list(images), list(targets))["loss_cls"]
        loss.backward()
        losses[mult], grads[mult] = float(loss.detach()), model.cls_score.weight.grad.clone()
        assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())
        grads[(mult, "conv")] = model.cnn.body.conv1.weight.grad.clone()
    assert losses[1.0] == losses[10.0]
    torch.testing.assert_close(grads[10.0], grads[1.0] * 10)
    torch.testing.assert_close(grads[(10.0, "conv")], grads[(1.0, "conv")])


def test_finetune_batch_without_any_box_gives_a_zero_loss():
    model = tiny_rcnn()
    model.train()
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "proposals": torch.zeros(0, 4)}
    loss = model([torch.rand(3, 30, 30)], [target])["loss_cls"]
    assert float(loss.detach()) == 0.0
    loss.backward()


# ------------------------------------------------------------------ SVMs and hard-negative mining
def test_hard_negative_mining_keeps_exactly_the_negatives_the_rule_says():
    # 1-d features; the "SVM" fitted is fixed, score = x - 0.5 (w = 1, b = -0.5), so the rule is checkable
    values = torch.tensor([5.0, 6.0,                      # rows 0, 1: positives
                           -3.0, -0.2, -0.6, 0.3,          # image 0 (rows 2-5)
                           -0.5, -0.51, -2.0, 1.0, 0.1,    # image 1 (rows 6-10)
                           -0.4, -9.0, 0.0])               # image 2 (rows 11-13)
    features = values[:, None].numpy().astype(np.float16)
    fits = []

    def fit(pos, neg):
        fits.append((len(pos), sorted(np.round(neg[:, 0].astype(np.float32), 3).tolist())))
        return np.array([1.0], dtype=np.float32), -0.5

    miner = HardNegativeMiner(features, [torch.tensor([0, 1])], retrain_every=3, fit=fit)
    # image 0: the first image adds all its negatives, fits, then evicts scores < -1.2 (row 2: -3.5)
    assert miner.add_image([torch.tensor([2, 3, 4, 5])]) == [0]
    assert miner.cache[0].tolist() == [3, 4, 5]
    # image 1: hard = score > -1.0001: rows 6 (-1.0), 7 (-1.01: no), 8 (-2.5: no), 9, 10 -> 3 added = retrain_every
    assert miner.add_image([torch.tensor([6, 7, 8, 9, 10])]) == [0]
    assert fits[1][1] == sorted(np.round(features[[3, 4, 5, 6, 9, 10], 0].astype(np.float32), 3).tolist())
    # after the refit, row 6 (score -1.0) stays (>= -1.2)
    assert sorted(miner.cache[0].tolist()) == [3, 4, 5, 6, 9, 10]
    # image 2: rows 11 (-0.9) and 13 (-0.5) are hard, row 12 (-9.5) not; 2 < 3 added, so no refit yet
    assert miner.add_image([torch.tensor([11, 12, 13, 3])]) == []  # row 3 is cached already: not added twice
    assert sorted(miner.cache[0].tolist()) == [3, 4, 5, 6, 9, 10, 11, 13]
    assert int(miner.added[0]) == 2
    miner.finish()
    assert len(fits) == 3 and fits[-1][0] == 2
    assert sorted(miner.cache[0].tolist()) == [3, 4, 5, 6, 9, 10, 11, 13]


def test_miner_state_round_trip_continues_identically():
    g = torch.Generator().manual_seed(0)
    features = (torch.randn(60, 4, generator=g) + torch.tensor([1.0, 0, 0, 0])).numpy().astype(np.float16)
    positives = [torch.arange(0, 6)]
    images = [torch.arange(6 + 9 * i, 15 + 9 * i) for i in range(6)]

    def run(split_at=None):
        miner = HardNegativeMiner(features, positives, retrain_every=5)
        for i, rows in enumerate(images):
            if split_at == i:
                state = miner.state_dict()
                miner = HardNegativeMiner(features, positives, retrain_every=5)
                miner.load_state_dict(state)
            miner.add_image([rows])
        miner.finish()
        return miner

    whole, resumed = run(), run(split_at=3)
    assert torch.equal(whole.weight, resumed.weight) and torch.equal(whole.bias, resumed.bias)
    assert [c.tolist() for c in whole.cache] == [c.tolist() for c in resumed.cache]


def test_linear_svm_separates_and_mean_norm_scale():
    g = np.random.default_rng(0)
    pos = g.normal(size=(30, 5)) + 3
    neg = g.normal(size=(200, 5)) - 3
    w, b = fit_linear_svm(pos * 5, neg * 5, C=1e-3)
    assert ((pos * 5) @ w + b > 0).mean() == 1.0 and ((neg * 5) @ w + b < 0).mean() == 1.0
    scale = mean_norm_scale(pos, 20.0)
    assert np.linalg.norm(pos * scale, axis=1).mean() == pytest.approx(20.0)


# ------------------------------------------------------------------ ridge regression
def test_ridge_recovers_a_known_linear_map():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(400, 6, generator=g, dtype=torch.float64)
    W = torch.randn(4, 6, generator=g, dtype=torch.float64)
    b = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
    Y = X @ W.t() + b
    W_fit, b_fit = fit_ridge(X.numpy(), Y.numpy(), lam=1e-6)
    torch.testing.assert_close(W_fit, W.float(), atol=1e-4, rtol=0)
    torch.testing.assert_close(b_fit, b.float(), atol=1e-4, rtol=0)
    # lambda shrinks the map towards 0, not the (unregularised) bias towards 0
    W_big, b_big = fit_ridge(X.numpy(), Y.numpy(), lam=1e6)
    assert W_big.abs().max() < 0.01
    torch.testing.assert_close(b_big, Y.mean(0).float(), atol=0.01, rtol=0)


def test_robust_ridge_drops_the_gross_outliers_and_refits():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(500, 6, generator=g, dtype=torch.float64)
    W = torch.randn(4, 6, generator=g, dtype=torch.float64)
    Y = X @ W.t() + 0.01 * torch.randn(500, 4, generator=g, dtype=torch.float64)
    Y[:25] += 50.0 * torch.randn(25, 4, generator=g, dtype=torch.float64)  # 5% gross outliers
    Y += torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
    plain, plain_bias = fit_ridge(X.numpy(), Y.numpy(), lam=1e-6)
    robust, robust_bias = fit_ridge(X.numpy(), Y.numpy(), lam=1e-6, robust=0.1)  # drop the worst 10% per target
    assert (plain - W.float()).abs().max() > 0.5 and (plain_bias - torch.tensor([0.5, -1.0, 2.0, 0.0])).abs().max() > 0.5
    # per (whitened) target, as the original: an outlier that fits one target well stays in it
    torch.testing.assert_close(robust, W.float(), atol=0.02, rtol=0)
    torch.testing.assert_close(robust_bias, torch.tensor([0.5, -1.0, 2.0, 0.0]), atol=0.02, rtol=0)
    assert torch.equal(fit_ridge(X.numpy(), Y.numpy(), lam=1e-6, robust=0.0)[0], plain)  # 0: the plain fit
    with pytest.raises(ValueError, match="robust must be a fraction"):
        fit_ridge(X.numpy(), Y.numpy(), robust=1.0)


# ------------------------------------------------------------------ inference, buffers, checkpoints
def _trained_buffers(model: RCNN, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    model.svms.weight.copy_(torch.randn(model.svms.weight.shape, generator=g))
    model.svms.bias.copy_(torch.randn(model.svms.bias.shape, generator=g))
    model.svms.feature_scale.fill_(2.5)
    model.svms.trained.fill_(True)
    model.bbox_regressor.weight.copy_(torch.randn(model.bbox_regressor.weight.shape, generator=g) * 0.01)
    model.bbox_regressor.bias.copy_(torch.randn(model.bbox_regressor.bias.shape, generator=g) * 0.1)
    model.bbox_regressor.feature_scale.fill_(0.5)
    model.bbox_regressor.trained.fill_(True)


def test_svms_and_regressor_survive_a_checkpoint_round_trip(tmp_path):
    from detect.engine.checkpoint import load_checkpoint, save_checkpoint

    model = tiny_rcnn().eval()
    _trained_buffers(model)
    save_checkpoint(tmp_path / "m.pth", {"format_version": 1, "model": model.state_dict()})
    payload = torch.load(tmp_path / "m.pth", weights_only=True)
    assert payload["model"]["svms.trained"].item() is True
    fresh = tiny_rcnn().eval()
    assert not bool(fresh.svms.trained)
    fresh.load_state_dict(load_checkpoint(tmp_path / "m.pth")["model"])
    image = torch.rand(3, 50, 60, generator=torch.Generator().manual_seed(1))
    proposals = [torch.tensor([[5.0, 5.0, 30.0, 40.0], [20.0, 10.0, 55.0, 45.0], [0.0, 0.0, 60.0, 50.0]])]
    model.score_thresh = fresh.score_thresh = 0.0
    a, b = model.predict([image], proposals=proposals)[0], fresh.predict([image], proposals=proposals)[0]
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(a[key], b[key])
    assert a["boxes"].shape[0] > 0


def test_predict_scores_are_the_svm_margins_through_a_sigmoid_and_boxes_regressed():
    model = tiny_rcnn(num_classes=2).eval()
    _trained_buffers(model)
    model.score_thresh = 0.0
    model.nms_thresh = 1.0  # keep everything: compare each proposal's scores
    image = torch.rand(3, 50, 60, generator=torch.Generator().manual_seed(2))
    proposals = torch.tensor([[5.0, 5.0, 30.0, 40.0], [20.0, 10.0, 55.0, 45.0]])
    out = model.predict([image], proposals=[proposals])[0]
    pool5, feature = model.extract_features(image, proposals)
    margins = (feature * 2.5) @ model.svms.weight.t() + model.svms.bias
    deltas = torch.einsum("nd,kjd->nkj", pool5 * 0.5, model.bbox_regressor.weight) + model.bbox_regressor.bias
    boxes = model.box_coder.decode(deltas.reshape(2, -1), proposals)
    expected = sorted(zip(torch.sigmoid(margins).flatten().tolist(), boxes.reshape(-1, 4).tolist()), reverse=True)
    got = sorted(zip(out["scores"].tolist(), out["boxes"].tolist()), reverse=True)
    assert len(got) == 4
    for (s1, b1), (s2, b2) in zip(got, expected):
        assert s1 == pytest.approx(s2, abs=1e-6)
        assert b1 == pytest.approx([min(max(v, 0), lim) for v, lim in zip(b2, (60, 50, 60, 50))], abs=1e-4)
    # without box regression the boxes are the proposals
    model.box_regression = False
    plain = model.predict([image], proposals=[proposals])[0]
    assert {tuple(b) for b in plain["boxes"].tolist()} == {tuple(b) for b in proposals.tolist()}


def test_bad_proposals_an_empty_image_and_degenerate_boxes():
    model = tiny_rcnn().eval()
    _trained_buffers(model)
    model.score_thresh = 0.0
    image = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(3))
    good = torch.tensor([[5.0, 5.0, 30.0, 35.0]])
    bad = torch.tensor([[10.0, 10.0, 10.0, 20.0], [20.0, 5.0, 8.0, 30.0], [float("inf"), 0.0, 5.0, 5.0],
                        [50.0, 50.0, 60.0, 60.0]])  # zero width, x2 < x1, inf, entirely outside
    empty, with_bad, clean = model.predict([image, image, image], proposals=[torch.zeros(0, 4), torch.cat((bad, good)), good])
    assert empty["boxes"].shape == (0, 4) and empty["scores"].shape == (0,) and empty["labels"].dtype == torch.int64
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(with_bad[key], clean[key])
    with pytest.raises(UserInputError, match="proposals of image 1"):
        model.predict([image, image], proposals=[good, torch.zeros(3, 5)])
    with pytest.raises(UserInputError, match="needs region proposals"):
        model.predict([image])


def test_on_the_fly_proposals_equal_given_ones_and_draw_a_progress_bar(capsys):
    model = tiny_rcnn().eval()
    _trained_buffers(model)
    model.score_thresh = 0.0
    images = [torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(s)) for s in (5, 6)]
    boxes = torch.tensor([[5.0, 5.0, 30.0, 35.0], [2.0, 8.0, 38.0, 30.0]])
    model.proposal_generator = lambda image: boxes
    model.proposal_progress = True
    generated = model.predict(images)
    err = capsys.readouterr().err
    assert "proposals:" in err and "/2 [" in err and "image/s" in err
    given = model.predict(images, proposals=[boxes, boxes])
    for a, b in zip(generated, given):
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(a[key], b[key])


def test_bad_stage_options_raise_the_config_error():
    from detect.modeling.meta_arch.rcnn import build_rcnn

    with pytest.raises(UserInputError, match="stage_options must map a stage name to a dict"):
        build_rcnn(num_classes=2, backbone="resnet18", stage_options={"stages": ["finetune"]})


def test_before_the_svm_stage_scores_are_the_softmax_of_the_fine_tuned_classifier():
    model = tiny_rcnn(num_classes=2).eval()
    model.score_thresh = 0.0
    model.nms_thresh = 1.0
    image = torch.rand(3, 50, 60, generator=torch.Generator().manual_seed(4))
    proposals = torch.tensor([[5.0, 5.0, 30.0, 40.0]])
    out = model.predict([image], proposals=[proposals])[0]
    _, feature = model.extract_features(image, proposals)
    probs = F.softmax(model.cls_score(feature), dim=1)[0, 1:]
    assert sorted(out["scores"].tolist()) == pytest.approx(sorted(probs.tolist()), abs=1e-6)


def test_registered_builder_and_contract():
    from detect import build_detector, list_detectors

    assert "rcnn" in list_detectors()
    model = build_detector("rcnn", num_classes=3, backbone="resnet18", crop_size=32, context_pad=2)
    assert model.accepts_proposals and model.training_stages == ("finetune", "features", "svm", "bbox_reg")
    assert model.cnn.pool5_dim == 512 and model.svms.weight.shape == (3, 512)
    assert model.bbox_regressor.weight.shape == (3, 4, 512) and model.cls_score.out_features == 4
    keys = model.state_dict()
    assert all(any(k.startswith(p) for k in keys) for p in model.class_specific_prefixes)
    with pytest.raises(UserInputError):
        build_detector("rcnn", num_classes=3, backbone="resnet18", svm_feature="fc8")


def test_alexnet_keeps_torchvision_fc6_fc7():
    from detect import build_detector

    model = build_detector("rcnn", num_classes=2, backbone="tv:alexnet", crop_size=224)
    assert model.cnn.pool5_dim == 9216 and model.cnn.feature_dim == 4096
    linears = [m for m in model.cnn.fc if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(4096, 9216), (4096, 4096)]
    assert isinstance(model.cnn.fc[0], nn.Dropout)  # torchvision's AlexNet order: dropout, fc6, relu, ...
    pool5, feature = model.eval().cnn(torch.zeros(2, 3, 224, 224))
    assert pool5.shape == (2, 9216) and feature.shape == (2, 4096)
