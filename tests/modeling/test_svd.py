"""Truncated SVD of fully connected layers (Fast R-CNN section 3.1)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from detect import build_detector
from detect.modeling.svd import (
    TruncatedSVDLinear,
    compress_fc_layers_,
    compress_linear,
    svd_factors,
    truncate_detector_fc_,
    use_truncated_svd_,
)


def seeded_linear(in_features=48, out_features=32, seed=0):
    torch.manual_seed(seed)
    layer = nn.Linear(in_features, out_features)
    nn.init.normal_(layer.bias)
    return layer


def test_full_rank_compression_equals_the_layer():
    layer = seeded_linear()
    x = torch.randn(7, 48, generator=torch.Generator().manual_seed(1))
    for rank in (32, 40):  # min(in, out) and above it: every singular value is kept
        pair = compress_linear(layer, rank)
        reduce, expand = pair
        assert (reduce.in_features, reduce.out_features, reduce.bias) == (48, 32, None)
        assert (expand.in_features, expand.out_features) == (32, 32)
        torch.testing.assert_close(expand.bias, layer.bias, rtol=0, atol=0)
        torch.testing.assert_close(pair(x), layer(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(expand.weight @ reduce.weight, layer.weight, rtol=0, atol=1e-5)


def test_truncation_is_the_best_rank_t_approximation():
    layer = seeded_linear()
    singular = torch.linalg.svdvals(layer.weight.double())
    for rank in (1, 5, 20):
        reduce, expand = compress_linear(layer, rank)
        assert reduce.out_features == rank and expand.in_features == rank
        approx = (expand.weight @ reduce.weight).double()
        # Eckart-Young: the Frobenius error is the norm of the dropped singular values
        error = torch.linalg.norm(layer.weight.double() - approx)
        assert error.item() == pytest.approx(torch.linalg.norm(singular[rank:]).item(), rel=1e-5)
        assert torch.linalg.matrix_rank(approx, rtol=1e-5).item() == rank  # float32 factors: relative tolerance
    # the layer is not tied to the compressed copy
    pair = compress_linear(layer, 4)
    assert all(p.data_ptr() != q.data_ptr() for p in pair.parameters() for q in layer.parameters())


@pytest.mark.parametrize("shape", [(32, 48), (48, 32)])  # wide (Gram of W W^T) and tall (W^T W)
def test_factors_equal_the_full_svd_reconstruction_and_survive_rank_deficiency(shape):
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(*shape, generator=g)
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    for rank in (1, 7, 32):
        first, second = svd_factors(weight, rank)
        assert first.shape == (rank, shape[1]) and second.shape == (shape[0], rank) and first.dtype == torch.float32
        expected = (u[:, :rank] * s[:rank]) @ vh[:rank]
        torch.testing.assert_close((second @ first).double(), expected, rtol=0, atol=2e-5)
    # rank 3 exactly: the factors neither invert the zero singular values nor lose the matrix
    low = torch.randn(shape[0], 3, generator=g) @ torch.randn(3, shape[1], generator=g)
    for rank in (3, 10, 32):
        first, second = svd_factors(low, rank)
        assert torch.isfinite(first).all() and torch.isfinite(second).all()
        torch.testing.assert_close(second @ first, low, rtol=0, atol=1e-4)


def test_bad_ranks_and_layers_are_refused():
    layer = seeded_linear()
    for rank in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            compress_linear(layer, rank)
    with pytest.raises(TypeError, match="nn.Linear"):
        compress_linear(nn.Conv2d(3, 3, 1), 2)
    head = nn.Module()
    head.fc6 = nn.Linear(4, 4)
    with pytest.raises(ValueError, match=r"'fc7'.*\['fc6'\]"):
        compress_fc_layers_(head, {"fc7": 2})


def test_compress_fc_layers_in_place():
    head = nn.Module()
    head.fc6, head.fc7 = seeded_linear(48, 32, 0), seeded_linear(32, 16, 1)
    x = torch.randn(3, 48, generator=torch.Generator().manual_seed(2))
    expected = head.fc7(head.fc6(x))
    compress_fc_layers_(head, {"fc6": 32, "fc7": 16})
    assert isinstance(head.fc6, nn.Sequential) and set(head.state_dict()) == {
        "fc6.0.weight", "fc6.1.weight", "fc6.1.bias", "fc7.0.weight", "fc7.1.weight", "fc7.1.bias"}
    torch.testing.assert_close(head.fc7(head.fc6(x)), expected, rtol=0, atol=1e-5)


def test_truncated_svd_linear_is_exact_in_training_and_factored_in_eval():
    layer = seeded_linear()
    x = torch.randn(5, 48, generator=torch.Generator().manual_seed(3))
    svd = TruncatedSVDLinear.from_linear(layer, 8)
    assert svd.weight is layer.weight and svd.bias is layer.bias
    assert set(svd.state_dict()) == {"weight", "bias"}
    torch.testing.assert_close(svd.train()(x), layer(x), rtol=0, atol=0)
    with torch.no_grad():
        factored = svd.eval()(x)
    torch.testing.assert_close(factored, compress_linear(layer, 8)(x), rtol=1e-5, atol=1e-5)
    assert (factored - layer(x)).abs().max() > 1e-2  # rank 8 of 32 really truncates

    # An optimiser step changes the weight in place: the eval factors follow it.
    optimizer = torch.optim.SGD(svd.parameters(), lr=0.5)
    svd.train()
    svd(x).square().sum().backward()
    optimizer.step()
    with torch.no_grad():
        torch.testing.assert_close(svd.eval()(x), compress_linear(svd, 8)(x), rtol=1e-5, atol=1e-5)
        first, second = svd.factors()
        expected_first, expected_second = svd_factors(svd.weight, 8)
        torch.testing.assert_close(second @ first, expected_second @ expected_first)

    full = TruncatedSVDLinear.from_linear(layer, 32).eval()
    assert not full.is_truncated
    torch.testing.assert_close(full(x), layer(x), rtol=0, atol=0)


def test_use_truncated_svd_swaps_children_and_keeps_keys():
    head = nn.Module()
    head.fc6, head.fc7 = seeded_linear(48, 32, 0), seeded_linear(32, 16, 1)
    keys = set(head.state_dict())
    use_truncated_svd_(head, {"fc6": 4, "fc7": 2})
    assert isinstance(head.fc6, TruncatedSVDLinear) and head.fc6.rank == 4 and head.fc7.rank == 2
    assert set(head.state_dict()) == keys
    use_truncated_svd_(head, {"fc6": 6})  # again: a new rank, no nesting
    assert type(head.fc6) is TruncatedSVDLinear and head.fc6.rank == 6

    # swapped into an eval-mode module, the layer computes the factorisation at once
    head = nn.Module()
    head.fc6 = seeded_linear(48, 32, 0)
    head.eval()
    x = torch.randn(3, 48, generator=torch.Generator().manual_seed(5))
    full = head.fc6(x)
    use_truncated_svd_(head, {"fc6": 4})
    assert not head.fc6.training
    with torch.no_grad():
        torch.testing.assert_close(head.fc6(x), compress_linear(head.fc6, 4)(x), rtol=1e-5, atol=1e-5)
        assert (head.fc6(x) - full).abs().max() > 1e-2


SMALL = dict(backbone="resnet18", fpn=True, num_classes=3, min_size=96, max_size=160)


def test_fast_rcnn_svd_option_at_full_rank_keeps_predictions(shapes_data):
    images, targets = shapes_data
    proposals = [torch.cat([t["boxes"], t["boxes"] * 0.9 + 2]) for t in targets]
    torch.manual_seed(0)
    plain = build_detector("fast_rcnn", **SMALL).eval()
    torch.manual_seed(0)
    full = build_detector("fast_rcnn", **SMALL, svd_ranks={"fc6": 1024, "fc7": 1024}).eval()
    assert set(full.state_dict()) == set(plain.state_dict())
    full.load_state_dict(plain.state_dict())
    for head in (plain, full):  # spread the scores so that detections are many and distinct
        nn.init.normal_(head.roi_heads.box_predictor.cls_score.weight, std=0.5, generator=torch.Generator().manual_seed(4))
    expected = plain.predict(images, proposals=proposals)
    got = full.predict(images, proposals=proposals)
    assert isinstance(full.roi_heads.box_head.fc6, TruncatedSVDLinear)
    for e, g in zip(expected, got):
        assert len(e["boxes"]) > 0 and len(e["boxes"]) == len(g["boxes"])
        torch.testing.assert_close(g["boxes"], e["boxes"], rtol=0, atol=1e-3)
        torch.testing.assert_close(g["scores"], e["scores"], rtol=0, atol=1e-4)
        assert torch.equal(g["labels"], e["labels"])

    low = build_detector("fast_rcnn", **SMALL, svd_ranks={"fc6": 16, "fc7": 8}).eval()
    assert low.roi_heads.box_head.fc6.rank == 16 and low.roi_heads.box_head.fc7.is_truncated

    # the model-level function, permanent: the factors replace the layers, same predictions
    truncate_detector_fc_(plain, {"fc6": 1024, "fc7": 1024}, permanent=True)
    assert isinstance(plain.roi_heads.box_head.fc6, nn.Sequential)
    for e, g in zip(expected, plain.predict(images, proposals=proposals)):
        torch.testing.assert_close(g["boxes"], e["boxes"], rtol=0, atol=1e-3)
        assert torch.equal(g["labels"], e["labels"])
    with pytest.raises(TypeError, match="no roi_heads.box_head"):
        truncate_detector_fc_(nn.Linear(2, 2), {"fc6": 1})
    with pytest.raises(ValueError, match="svd_ranks names 'fc6'"):
        build_detector("fast_rcnn", backbone="resnet18", fpn=False, num_classes=3, svd_ranks={"fc6": 16})
