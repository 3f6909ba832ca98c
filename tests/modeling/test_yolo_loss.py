"""The YOLOv1 loss on hand-computed cases, and one test per classic reimplementation bug.

Set-up of every hand case: S = 2, B = 2, C = 2, a 100 x 100 network input, so a cell is 50 px.
Each expected value is written out from the paper's formula with the numbers of the case;
:func:`reference_loss` is an independent loop-per-object implementation used only to build
the *buggy* variants (and checked against the hand values itself).
"""
from __future__ import annotations

import math

import pytest
import torch

from detect.modeling.yolo_loss import YOLOv1Loss, encode_targets

S, B, C = 2, 2, 2
SIZE = (100, 100)
TOL = dict(rtol=0, atol=1e-6)


def iou(a, b):
    """IoU of two (cx, cy, w, h) tuples, by the formula (plain floats)."""
    ix = max(0.0, min(a[0] + a[2] / 2, b[0] + b[2] / 2) - max(a[0] - a[2] / 2, b[0] - b[2] / 2))
    iy = max(0.0, min(a[1] + a[3] / 2, b[1] + b[3] / 2) - max(a[1] - a[3] / 2, b[1] - b[3] / 2))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def cell(output, row, col, preds, probs):
    """Write ``preds`` ((x, y, sqrt_w, sqrt_h, conf) x B) and ``probs`` into one cell."""
    values = [v for p in preds for v in p] + list(probs)
    output[0, row, col] = torch.tensor(values, dtype=torch.float64)


def one_object_case():
    """Object: xyxy (10, 20, 40, 60) -> cx .25, cy .4, w .3, h .4 (normalised), cell (0, 0),
    offsets x .5, y .8, label 2. Cell (0, 0): predictor 0 (.5, .5, .5, .5, conf .6) decodes to
    (.25, .25, .25, .25), predictor 1 (.2, .9, .5, .7, conf .3) to (.1, .45, .25, .49).
    Cell (1, 1) has confidences .4 and -.2; cell (0, 1) class outputs that must not count."""
    output = torch.zeros(1, S, S, B * 5 + C, dtype=torch.float64)
    cell(output, 0, 0, [(0.5, 0.5, 0.5, 0.5, 0.6), (0.2, 0.9, 0.5, 0.7, 0.3)], (0.1, 0.7))
    cell(output, 1, 1, [(0.3, 0.3, 0.2, 0.2, 0.4), (0.6, 0.6, 0.3, 0.3, -0.2)], (0.0, 0.0))
    output[0, 0, 1, 10:] = torch.tensor([0.5, 0.5], dtype=torch.float64)
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0]]), "labels": torch.tensor([2])}]
    return output, targets


# IoU of predictor 0 with the object: x overlap [.125, .375] & [.1, .4] = .25, y overlap
# [.2, .375] = .175, intersection .04375, union .0625 + .12 - .04375 = .13875.
IOU_0 = 0.04375 / 0.13875
# predictor 1: x overlap [.1, .225] = .125, y [.205, .6] = .395, inter .049375, union
# .1225 + .12 - .049375 = .193125 (< IOU_0, so predictor 0 is responsible)
IOU_1 = 0.049375 / 0.193125

ONE = {
    "loss_xy": 5 * ((0.5 - 0.5) ** 2 + (0.5 - 0.8) ** 2),
    "loss_wh": 5 * ((0.5 - math.sqrt(0.3)) ** 2 + (0.5 - math.sqrt(0.4)) ** 2),
    "loss_obj": (0.6 - IOU_0) ** 2,
    # predictor 1 of the object cell, and both predictors of cell (1, 1)
    "loss_noobj": 0.5 * (0.3 ** 2 + 0.4 ** 2 + (-0.2) ** 2),
    "loss_cls": (0.1 - 0) ** 2 + (0.7 - 1) ** 2,
}


def two_object_case():
    """The one-object case plus object 2: xyxy (60, 55, 90, 95) -> (.75, .75, .3, .4), cell
    (1, 1), offsets (.5, .5), label 1. Cell (1, 1): predictor 0 (.5, .5, .55, .6, conf .4)
    decodes to (.75, .75, .3025, .36) (concentric with the object), predictor 1
    (.1, .1, .1, .1, conf -.2) to a 1 x 1 px box at (.55, .55), IoU 0; classes (.8, .3)."""
    output, targets = one_object_case()
    cell(output, 1, 1, [(0.5, 0.5, 0.55, 0.6, 0.4), (0.1, 0.1, 0.1, 0.1, -0.2)], (0.8, 0.3))
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0], [60.0, 55.0, 90.0, 95.0]]),
                "labels": torch.tensor([2, 1])}]
    return output, targets


# concentric boxes: intersection .3 * .36 = .108, union .3025 * .36 + .12 - .108 = .1209
IOU_2 = 0.108 / 0.1209
TWO = {
    "loss_xy": 5 * ((0.5 - 0.5) ** 2 + (0.5 - 0.8) ** 2) + 5 * ((0.5 - 0.5) ** 2 + (0.5 - 0.5) ** 2),
    "loss_wh": 5 * ((0.5 - math.sqrt(0.3)) ** 2 + (0.5 - math.sqrt(0.4)) ** 2)
    + 5 * ((0.55 - math.sqrt(0.3)) ** 2 + (0.6 - math.sqrt(0.4)) ** 2),
    "loss_obj": (0.6 - IOU_0) ** 2 + (0.4 - IOU_2) ** 2,
    "loss_noobj": 0.5 * (0.3 ** 2 + (-0.2) ** 2),
    "loss_cls": (0.1 ** 2 + 0.3 ** 2) + ((0.8 - 1) ** 2 + 0.3 ** 2),
}


def ours(output, targets, **options):
    return YOLOv1Loss(C, S, B, **options)(output, targets, SIZE)


def total(losses):
    return float(sum(float(v) for v in losses.values()))


def assert_losses(losses, expected):
    assert set(losses) == set(expected)
    for key, value in expected.items():
        assert float(losses[key].detach()) == pytest.approx(value, abs=1e-6), key


def reference_loss(output, targets, bug=None, rescore=True):
    """A plain loop-per-object YOLOv1 loss (for the buggy variants); ``bug`` one of
    ``"conf_one"``, ``"no_noobj_second_box"``, ``"cell_relative_iou"``, ``"sqrt_prediction"``
    (the net predicts w, h and the loss takes their square root), ``"no_batch_division"``."""
    output = output.double()
    N = output.shape[0]
    h_img, w_img = SIZE
    xy = wh = obj = noobj = cls = output.new_zeros(())
    responsible = torch.zeros(N, S, S, B, dtype=torch.bool)
    object_cell = torch.zeros(N, S, S, dtype=torch.bool)
    for n, target in enumerate(targets):
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            cx, cy = (box[0] + box[2]) / 2 / w_img, (box[1] + box[3]) / 2 / h_img
            bw, bh = (box[2] - box[0]) / w_img, (box[3] - box[1]) / h_img
            col, row = min(int(cx * S), S - 1), min(int(cy * S), S - 1)
            ox, oy = cx * S - col, cy * S - row
            preds = output[n, row, col, : 5 * B].reshape(B, 5)
            ious = []
            for p in preds.tolist():
                if bug == "cell_relative_iou":
                    ious.append(iou((p[0], p[1], p[2] ** 2, p[3] ** 2), (ox, oy, bw, bh)))
                else:
                    ious.append(iou(((col + p[0]) / S, (row + p[1]) / S, p[2] ** 2, p[3] ** 2), (cx, cy, bw, bh)))
            k = max(range(B), key=lambda i: (ious[i], -i))
            p = preds[k]
            responsible[n, row, col, k] = True
            object_cell[n, row, col] = True
            xy = xy + 5 * ((p[0] - ox) ** 2 + (p[1] - oy) ** 2)
            if bug == "sqrt_prediction":
                wh = wh + 5 * ((p[2].sqrt() - math.sqrt(bw)) ** 2 + (p[3].sqrt() - math.sqrt(bh)) ** 2)
            else:
                wh = wh + 5 * ((p[2] - math.sqrt(bw)) ** 2 + (p[3] - math.sqrt(bh)) ** 2)
            target_conf = 1.0 if bug == "conf_one" or not rescore else ious[k]
            obj = obj + (p[4] - target_conf) ** 2
            onehot = torch.zeros(C, dtype=output.dtype)
            onehot[label - 1] = 1
            cls = cls + ((output[n, row, col, 5 * B:] - onehot) ** 2).sum()
    conf = output[..., : 5 * B].reshape(N, S, S, B, 5)[..., 4]
    mask = ~responsible
    if bug == "no_noobj_second_box":
        mask = mask & ~object_cell[..., None]
    noobj = 0.5 * (conf[mask] ** 2).sum()
    divisor = 1 if bug == "no_batch_division" else N
    return {"loss_xy": xy / divisor, "loss_wh": wh / divisor, "loss_obj": obj / divisor,
            "loss_noobj": noobj / divisor, "loss_cls": cls / divisor}


# ------------------------------------------------------------------- hand-computed cases
def test_one_object_by_hand():
    output, targets = one_object_case()
    assert IOU_0 > IOU_1
    assert_losses(ours(output, targets), ONE)
    assert_losses(reference_loss(output, targets), ONE)  # the reference agrees with the hand values


def test_two_objects_in_two_cells_by_hand():
    output, targets = two_object_case()
    assert_losses(ours(output, targets), TWO)
    assert_losses(ours(output.float(), targets), TWO)  # float32 to 1e-6 too


def test_the_loss_is_the_sum_of_its_terms_and_has_gradients():
    output, targets = two_object_case()
    output.requires_grad_(True)
    losses = ours(output, targets)
    total_loss = sum(losses.values())
    assert float(total_loss.detach()) == pytest.approx(sum(TWO.values()), abs=1e-6)
    total_loss.backward()
    assert torch.isfinite(output.grad).all()
    # d loss_obj / d conf of the responsible predictor of object 1 = 2 (0.6 - IoU): the IoU
    # target is detached
    assert float(output.grad[0, 0, 0, 4]) == pytest.approx(2 * (0.6 - IOU_0), abs=1e-6)
    # the other predictor of that cell gets the no-object gradient 2 * 0.5 * 0.3
    assert float(output.grad[0, 0, 0, 9]) == pytest.approx(0.3, abs=1e-6)


def test_rmse_picks_the_predictor_when_every_iou_is_zero():
    """Object (10, 20, 40, 60) -> (.25, .4, .3, .4) again; predictor 0 decodes to a 1 px box at
    (.05, .05) (squared distance .04 + .1225 + .0841 + .1521), predictor 1 to one at (.05, .4)
    (.04 + 0 + .0841 + .1521, nearer); neither overlaps the object."""
    output = torch.zeros(1, S, S, B * 5 + C, dtype=torch.float64)
    cell(output, 0, 0, [(0.1, 0.1, 0.1, 0.1, 0.6), (0.1, 0.8, 0.1, 0.1, 0.3)], (0.0, 1.0))
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0]]), "labels": torch.tensor([2])}]
    expected = {
        "loss_xy": 5 * ((0.1 - 0.5) ** 2 + (0.8 - 0.8) ** 2),
        "loss_wh": 5 * ((0.1 - math.sqrt(0.3)) ** 2 + (0.1 - math.sqrt(0.4)) ** 2),
        "loss_obj": (0.3 - 0.0) ** 2,  # IoU 0 is the rescored target
        "loss_noobj": 0.5 * 0.6 ** 2,
        "loss_cls": 0.0,
    }
    assert_losses(ours(output, targets), expected)


def test_two_objects_in_one_cell_the_larger_wins_in_either_order():
    """Objects A (10, 20, 40, 60) (area 1200 px) and A' (15, 25, 35, 55) (600 px) both have
    their centre in cell (0, 0): the cell describes A, whatever the order; darknet's
    "last written wins" would take A' for the order (A, A')."""
    output, one = one_object_case()
    big, small = one[0]["boxes"][0], torch.tensor([15.0, 25.0, 35.0, 55.0])
    for boxes, labels in [((big, small), (2, 1)), ((small, big), (1, 2))]:
        targets = [{"boxes": torch.stack(boxes), "labels": torch.tensor(labels)}]
        assert_losses(ours(output, targets), ONE)
    # the darknet rule (last wins) gives another loss for the order (big, small)
    darknet = reference_loss(output, [{"boxes": small[None], "labels": torch.tensor([1])}])
    assert abs(total(darknet) - sum(ONE.values())) > 1e-3


def test_two_objects_of_equal_area_in_one_cell_the_first_wins():
    output, one = one_object_case()
    first = one[0]["boxes"][0]
    second = first + torch.tensor([5.0, 2.0, 5.0, 2.0])  # same size, centre still in cell (0, 0)
    targets = [{"boxes": torch.stack([first, second]), "labels": torch.tensor([2, 1])}]
    assert_losses(ours(output, targets), ONE)
    enc = encode_targets(targets, SIZE, S)
    assert enc["index"].tolist() == [0]
    swapped = [{"boxes": torch.stack([second, first]), "labels": torch.tensor([1, 2])}]
    assert encode_targets(swapped, SIZE, S)["index"].tolist() == [0]
    assert abs(total(ours(output, swapped)) - sum(ONE.values())) > 1e-3


def test_targets_are_encoded_for_the_whole_batch_at_once():
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
        {"boxes": torch.tensor([[60.0, 55.0, 90.0, 95.0], [0.0, 0.0, 100.0, 100.0]]), "labels": torch.tensor([1, 2])},
    ]
    enc = encode_targets(targets, SIZE, S)
    assert enc["batch"].tolist() == [0, 2]  # the whole-image box (centre .5, .5 -> cell 1, 1) beats the smaller one
    assert enc["row"].tolist() == [0, 1] and enc["col"].tolist() == [0, 1]
    assert enc["index"].tolist() == [0, 2]
    torch.testing.assert_close(enc["offset"], torch.tensor([[0.5, 0.8], [0.0, 0.0]]), **TOL)
    torch.testing.assert_close(enc["box"], torch.tensor([[0.25, 0.4, 0.3, 0.4], [0.5, 0.5, 1.0, 1.0]]), **TOL)


# ------------------------------------------------------------------- the classic bugs
def test_bug_confidence_target_one_instead_of_iou():
    output, targets = one_object_case()
    buggy = reference_loss(output, targets, bug="conf_one")
    assert float(buggy["loss_obj"]) == pytest.approx((0.6 - 1.0) ** 2)
    assert float(ours(output, targets)["loss_obj"]) == pytest.approx(ONE["loss_obj"], abs=1e-6)
    assert abs(total(buggy) - total(ours(output, targets))) > 1e-3
    # rescore=False is that target on purpose (darknet's rescore=0)
    assert float(ours(output, targets, rescore=False)["loss_obj"]) == pytest.approx(0.16, abs=1e-6)


def test_bug_no_noobject_loss_on_the_second_box_of_an_object_cell():
    output, targets = one_object_case()
    buggy = reference_loss(output, targets, bug="no_noobj_second_box")
    assert float(buggy["loss_noobj"]) == pytest.approx(0.5 * (0.4 ** 2 + 0.2 ** 2))
    assert float(ours(output, targets)["loss_noobj"]) == pytest.approx(ONE["loss_noobj"], abs=1e-6)
    assert abs(total(buggy) - total(ours(output, targets))) > 1e-3


def test_bug_iou_in_cell_relative_coordinates():
    """Cell-relative: centres in cell units (0..1) against image-relative sizes. Object at
    offsets (.5, .8) size (.3, .4); predictor 0 at (.5, .5) size (.25, .25): overlap x .25, y
    [.6, .625] = .025, IoU .00625 / .17625; predictor 1 (.2, .9, .25, .49) does not overlap."""
    output, targets = one_object_case()
    buggy = reference_loss(output, targets, bug="cell_relative_iou")
    assert float(buggy["loss_obj"]) == pytest.approx((0.6 - 0.00625 / 0.17625) ** 2, abs=1e-9)
    assert float(ours(output, targets)["loss_obj"]) == pytest.approx((0.6 - IOU_0) ** 2, abs=1e-6)
    assert abs(total(buggy) - total(ours(output, targets))) > 1e-3


def test_bug_sqrt_of_a_negative_prediction():
    """Negative raw w, h outputs: ours (the net predicts sqrt w) stays finite with finite
    gradients; taking the square root of the prediction gives NaN."""
    output, targets = one_object_case()
    output[0, 0, 0, 2:4] = torch.tensor([-0.5, -0.5], dtype=torch.float64)  # decodes as (.5, .5) did
    buggy = reference_loss(output, targets, bug="sqrt_prediction")
    assert math.isnan(float(buggy["loss_wh"]))
    output.requires_grad_(True)
    losses = ours(output, targets)
    expected_wh = 5 * ((-0.5 - math.sqrt(0.3)) ** 2 + (-0.5 - math.sqrt(0.4)) ** 2)
    assert float(losses["loss_wh"].detach()) == pytest.approx(expected_wh, abs=1e-6)
    assert float(losses["loss_obj"].detach()) == pytest.approx(ONE["loss_obj"], abs=1e-6)  # same responsible box
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert torch.isfinite(output.grad).all()


def test_bug_loss_not_divided_by_the_batch_size():
    output, targets = two_object_case()
    double = torch.cat([output, output])
    ours_two = ours(double, targets * 2)
    assert_losses(ours_two, TWO)  # a batch of two copies has the loss of one
    buggy = reference_loss(double, targets * 2, bug="no_batch_division")
    assert total(buggy) == pytest.approx(2 * sum(TWO.values()), abs=1e-6)


# ------------------------------------------------------------------- edge cases
def test_empty_targets_give_only_the_noobject_term_with_finite_gradients():
    torch.manual_seed(0)
    output = torch.randn(2, S, S, B * 5 + C, requires_grad=True)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    losses = ours(output, empty)
    conf = output.detach()[..., [4, 9]]
    for key in ("loss_xy", "loss_wh", "loss_obj", "loss_cls"):
        assert float(losses[key].detach()) == 0.0
    assert float(losses["loss_noobj"].detach()) == pytest.approx(float(0.5 * (conf ** 2).sum() / 2), abs=1e-6)
    sum(losses.values()).backward()
    assert torch.isfinite(output.grad).all()
    assert int((output.grad != 0).sum()) == 2 * S * S * B  # only the confidences


def test_wrong_output_shape_raises():
    with pytest.raises(ValueError, match=r"\[N, S, S, B\*5 \+ C\]"):
        empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
        YOLOv1Loss(C, S, B)(torch.zeros(1, S, S, 11), empty, SIZE)
