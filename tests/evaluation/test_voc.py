"""VOC AP: hand-computed cases, and the vectorised matching against a literal port of
the devkit's sequential loop (VOCevaldet.m / VOCap) on seeded random data."""
import math

import numpy as np
import pytest
import torch

from detect.evaluation import VOCEvaluator, build_evaluator, voc_ap, voc_evaluate


def t(x, dtype=torch.float32):
    return torch.as_tensor(x, dtype=dtype)


def det(boxes, scores, labels):
    return {"boxes": t(boxes).reshape(-1, 4), "scores": t(scores), "labels": t(labels, torch.int64)}


def gt(boxes, labels, difficult=None):
    difficult = [False] * len(labels) if difficult is None else difficult
    return {"boxes": t(boxes).reshape(-1, 4), "labels": t(labels, torch.int64), "difficult": t(difficult, torch.bool)}


def test_single_class_with_difficult_and_duplicate():
    # GT: A, B and a difficult C. Detections by score: on A (TP), on C (ignored: neither
    # TP nor FP), A again (duplicate: FP), nowhere (FP), on B (TP). Positives: 2 (C not counted).
    # After dropping the ignored one: TP FP FP TP -> recall .5 .5 .5 1, precision 1 .5 1/3 .5
    #   area: 0.5 * 1 + 0.5 * 0.5 = 0.75
    #   11-point: t = 0..0.5 -> 1 (6 points), t = 0.6..1 -> 0.5 (5 points): 8.5 / 11
    ground_truth = [gt([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [1, 1, 1], [False, False, True])]
    detections = [det([[0, 0, 10, 10], [40, 40, 50, 50], [1, 0, 10, 10], [60, 60, 70, 70], [21, 20, 30, 30]],
                      [0.9, 0.8, 0.7, 0.6, 0.5], [1, 1, 1, 1, 1])]
    assert voc_evaluate(detections, ground_truth, 1, use_07_metric=False)[0] == pytest.approx(0.75)
    assert voc_evaluate(detections, ground_truth, 1, use_07_metric=True)[0] == pytest.approx(8.5 / 11)
    # The same boxes with C not difficult: C is found (TP) and counts as a positive:
    # TP TP FP FP TP over 3 positives -> recall 1/3 2/3 2/3 2/3 1, precision 1 1 2/3 .5 .6
    #   area: 2/3 * 1 + 1/3 * 0.6 = 0.8666...
    plain = [gt(ground_truth[0]["boxes"], [1, 1, 1])]
    assert voc_evaluate(detections, plain, 1)[0] == pytest.approx(2 / 3 + 0.6 / 3)


def test_two_images_three_classes_devkit_rules():
    # Image 1, class 1: P=[0,0,10,10] and Q=[5,0,15,10].
    #   e1 .90 = P exactly -> TP (claims P).
    #   e2 .80 = [2,0,12,10]: IoU(P) = 80/120 = .667, IoU(Q) = 70/130 = .538; the best box
    #       P is claimed -> FP, although Q is free and above 0.5 (devkit rule, not COCO's).
    #   e3 .30 = Q exactly -> TP.
    # Image 2, class 1: no ground truth; f1 .85 -> FP.
    # Class 1 in score order: TP FP FP TP, 2 positives -> area 0.75, 11-point 8.5/11.
    # Class 2: image 1 has a difficult S, image 2 has R=[0,0,20,20].
    #   g1 .95 on S -> ignored; g2 .60 = [0,0,20,16] IoU .8 -> TP; g3 .40 = [0,0,20,9] IoU .45 -> FP.
    #   TP FP, 1 positive -> recall 1 1, precision 1 .5 -> AP 1 for both rules.
    # Class 3: detections but no ground truth -> no AP, left out of the mean.
    ground_truth = [
        gt([[0, 0, 10, 10], [5, 0, 15, 10], [50, 50, 60, 60]], [1, 1, 2], [False, False, True]),
        gt([[0, 0, 20, 20]], [2]),
    ]
    detections = [
        det([[0, 0, 10, 10], [2, 0, 12, 10], [5, 0, 15, 10], [50, 50, 60, 60], [70, 70, 80, 80]],
            [0.9, 0.8, 0.3, 0.95, 0.5], [1, 1, 1, 2, 3]),
        det([[30, 30, 40, 40], [0, 0, 20, 16], [0, 0, 20, 9]], [0.85, 0.6, 0.4], [1, 2, 2]),
    ]
    area = voc_evaluate(detections, ground_truth, 3, use_07_metric=False)
    eleven = voc_evaluate(detections, ground_truth, 3, use_07_metric=True)
    assert area[:2] == pytest.approx([0.75, 1.0]) and math.isnan(area[2])
    assert eleven[:2] == pytest.approx([8.5 / 11, 1.0]) and math.isnan(eleven[2])

    # The same case through the evaluator protocol and a dataset.
    class Data:
        class_names = ["a", "b", "c"]
        image_ids = [5, 9]

        def get_ground_truth(self, i):
            return dict(ground_truth[i], image_id=self.image_ids[i])

    for metric, expected in (("voc_area", 0.75), ("voc07_11pt", 8.5 / 11)):
        ev = build_evaluator(metric, Data())
        ev.process([{"image_id": 9}], [detections[1]])
        ev.process([{"image_id": torch.tensor(5)}], [detections[0]])
        metrics = ev.evaluate()
        assert metrics["bbox/AP50"] == pytest.approx((expected + 1.0) / 2)
        assert metrics["bbox/AP50-a"] == pytest.approx(expected) and metrics["bbox/AP50-b"] == pytest.approx(1.0)
        assert "bbox/AP50-c" not in metrics


def test_iou_threshold_is_inclusive_and_no_detections_is_zero():
    ground_truth = [gt([[0, 0, 10, 10]], [1])]
    exactly_half = [det([[0, 0, 10, 5]], [0.5], [1])]  # IoU = 50 / 100 = 0.5
    assert voc_evaluate(exactly_half, ground_truth, 1)[0] == 1.0
    below = [det([[0, 0, 10, 4.9]], [0.5], [1])]
    assert voc_evaluate(below, ground_truth, 1)[0] == 0.0
    assert voc_evaluate([det([], [], [])], ground_truth, 1)[0] == 0.0


def test_eleven_point_thresholds_are_exact_tenths():
    # Recall reaches exactly 0.3 = 3/10: the threshold t = 0.3 counts it (4 of 11 points).
    assert voc_ap(np.array([1, 2, 3]) / 10, np.ones(3), use_07_metric=True) == pytest.approx(4 / 11)
    assert voc_ap(np.array([1, 2, 3]) / 10, np.ones(3), use_07_metric=False) == pytest.approx(0.3)
    assert voc_ap(np.zeros(0), np.zeros(0), use_07_metric=True) == 0.0


def devkit_reference(detections, ground_truths, num_classes, threshold, use_07_metric):
    """A line-by-line port of VOCevaldet.m + VOCap (continuous coordinates, no +1)."""
    aps = []
    for c in range(1, num_classes + 1):
        gts = []
        npos = 0
        for g in ground_truths:
            keep = (g["labels"] == c).numpy()
            gts.append({"boxes": g["boxes"].numpy()[keep], "diff": g["difficult"].numpy()[keep],
                        "det": np.zeros(keep.sum(), dtype=bool)})
            npos += int((~gts[-1]["diff"]).sum())
        ids, confidence, boxes = [], [], []
        for i, d in enumerate(detections):
            keep = (d["labels"] == c).numpy()
            ids += [i] * int(keep.sum())
            confidence += d["scores"].numpy()[keep].tolist()
            boxes += d["boxes"].numpy()[keep].tolist()
        order = sorted(range(len(ids)), key=lambda k: -confidence[k])  # stable, like MATLAB sort
        tp, fp = np.zeros(len(order)), np.zeros(len(order))
        for d, k in enumerate(order):
            bb, g = boxes[k], gts[ids[k]]
            ovmax, jmax = -np.inf, -1
            for j, bbgt in enumerate(g["boxes"]):
                iw = min(bb[2], bbgt[2]) - max(bb[0], bbgt[0])
                ih = min(bb[3], bbgt[3]) - max(bb[1], bbgt[1])
                if iw > 0 and ih > 0:
                    ua = (bb[2] - bb[0]) * (bb[3] - bb[1]) + (bbgt[2] - bbgt[0]) * (bbgt[3] - bbgt[1]) - iw * ih
                    ov = iw * ih / ua
                    if ov > ovmax:
                        ovmax, jmax = ov, j
            if ovmax >= threshold:
                if not g["diff"][jmax]:
                    if not g["det"][jmax]:
                        tp[d] = 1
                        g["det"][jmax] = True
                    else:
                        fp[d] = 1
            else:
                fp[d] = 1
        if npos == 0:
            aps.append(np.nan)
            continue
        fp, tp = np.cumsum(fp), np.cumsum(tp)
        rec = tp / npos
        with np.errstate(invalid="ignore"):
            prec = tp / (fp + tp)  # 0/0 = NaN before the first counted detection, as in MATLAB
        if use_07_metric:
            ap = 0.0
            for tt in np.arange(11) / 10:
                p = prec[rec >= tt]
                p = p[~np.isnan(p)]  # MATLAB's max ignores NaN
                ap += (p.max() if p.size else 0.0) / 11
        else:
            mrec = np.concatenate([[0], rec, [1]])
            mpre = np.concatenate([[0], prec, [0]])
            for i in range(len(mpre) - 2, -1, -1):
                mpre[i] = np.fmax(mpre[i], mpre[i + 1])
            i = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
            ap = float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))
        aps.append(ap)
    return np.array(aps)


def random_case(seed, num_classes=4, score_levels=None):
    """Seeded random images: ground truth with some difficult boxes; detections that are
    jittered copies of it (duplicates, wrong classes) plus clutter. Scores are continuous,
    or with ``score_levels`` one of that many values, so that many detections tie."""
    rng = np.random.default_rng(seed)
    detections, ground_truths = [], []
    for _ in range(12):
        n_gt = int(rng.integers(0, 6))
        xy = rng.uniform(0, 80, size=(n_gt, 2))
        gt_boxes = np.concatenate([xy, xy + rng.uniform(5, 40, size=(n_gt, 2))], axis=1)
        gt_labels = rng.integers(1, num_classes + 1, size=n_gt)
        ground_truths.append(gt(gt_boxes.tolist(), gt_labels.tolist(), (rng.random(n_gt) < 0.2).tolist()))
        # Detections: several jittered copies per box (duplicates), plus clutter.
        copies = np.repeat(np.arange(n_gt), rng.integers(0, 4, size=n_gt))
        boxes = gt_boxes[copies] + rng.normal(0, 4, size=(len(copies), 4))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = np.where(rng.random(len(copies)) < 0.85, gt_labels[copies], rng.integers(1, num_classes + 1, len(copies)))
        n_clutter = int(rng.integers(0, 4))
        cxy = rng.uniform(0, 80, size=(n_clutter, 2))
        boxes = np.concatenate([boxes, np.concatenate([cxy, cxy + 10], axis=1)])
        labels = np.concatenate([labels, rng.integers(1, num_classes + 1, n_clutter)])
        scores = rng.random(len(labels))
        if score_levels is not None:
            scores = np.ceil(scores * score_levels) / score_levels
        detections.append({"boxes": torch.tensor(boxes, dtype=torch.float64), "labels": torch.tensor(labels),
                           "scores": torch.tensor(scores, dtype=torch.float64)})
    return detections, ground_truths


def assert_equals_devkit(detections, ground_truths, num_classes, threshold, use_07):
    """Our per-class AP equals the devkit port's (to 1e-12: the port sums the area in another
    order), on a case where at least 3 classes have an AP strictly between 0 and 1."""
    ours = voc_evaluate(detections, ground_truths, num_classes, threshold, use_07)
    reference = devkit_reference(detections, ground_truths, num_classes, threshold, use_07)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)
    assert np.isfinite(ours).sum() >= 3 and 0 < np.nanmean(ours) < 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sequential_devkit_port(seed):
    num_classes = 4
    detections, ground_truths = random_case(seed, num_classes)
    for use_07 in (False, True):
        for threshold in (0.5, 0.7):
            assert_equals_devkit(detections, ground_truths, num_classes, threshold, use_07)


def test_tied_scores_keep_their_input_order_as_the_devkit():
    # Class 1: box A in image 0, box B in image 1. Three detections tie at 0.8; the devkit's
    # stable sort(-confidence) keeps them in input order (images in order, then detections
    # in order): image 0's false positive F, then A, then B; last B's duplicate at 0.6.
    #   F A B D: TP 0 1 1 0, 2 positives -> recall 0 .5 1 1, precision 0 .5 2/3 .5
    #   area: envelope 2/3 up to recall 1 -> 2/3; 11-point: 2/3 at every threshold -> 2/3
    # With A listed before F in image 0: A F B D -> recall .5 .5 1 1, precision 1 .5 2/3 .5
    #   area: .5 * 1 + .5 * 2/3 = 5/6; 11-point: (6 * 1 + 5 * 2/3) / 11 = 28/33
    ground_truth = [gt([[0, 0, 10, 10]], [1]), gt([[20, 20, 30, 30]], [1])]
    f_first = [det([[50, 50, 60, 60], [0, 0, 10, 10]], [0.8, 0.8], [1, 1]),
               det([[20, 20, 30, 30], [21, 20, 30, 30]], [0.8, 0.6], [1, 1])]
    a_first = [det([[0, 0, 10, 10], [50, 50, 60, 60]], [0.8, 0.8], [1, 1]), f_first[1]]
    for detections, area, eleven in ((f_first, 2 / 3, 2 / 3), (a_first, 5 / 6, 28 / 33)):
        for use_07, expected in ((False, area), (True, eleven)):
            ours = voc_evaluate(detections, ground_truth, 1, 0.5, use_07)
            assert ours[0] == pytest.approx(expected, abs=1e-12)
            # (equal to the last float rounding: the port sums the area in another order)
            assert ours[0] == pytest.approx(devkit_reference(detections, ground_truth, 1, 0.5, use_07)[0], abs=1e-12)

    # Through the evaluator: images are taken in image-id order whatever order they came in.
    class Dataset:
        class_names = ["thing"]
        image_ids = [7, 8]

        def get_ground_truth(self, i):
            return ground_truth[i]

    for use_07, expected in ((False, 2 / 3), (True, 2 / 3)):
        ev = VOCEvaluator(Dataset(), use_07_metric=use_07)
        ev.process([{"image_id": 8}], [f_first[1]])
        ev.process([{"image_id": 7}], [f_first[0]])
        assert ev.evaluate()["bbox/AP50-thing"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_many_tied_scores_match_the_devkit_port(seed):
    """Scores on a grid of 4 values: most detections tie with others of their class, in
    the same image and across images; the AP follows the devkit's stable order exactly."""
    num_classes = 4
    detections, ground_truths = random_case(seed, num_classes, score_levels=4)
    scores = torch.cat([d["scores"] for d in detections])
    assert scores.unique().numel() == 4 and scores.numel() > 40
    # The evaluator, fed image by image with the dataset's ids, in reverse order.
    class Dataset:
        class_names = [f"c{k}" for k in range(1, num_classes + 1)]
        image_ids = list(range(100, 100 + len(ground_truths)))

        def get_ground_truth(self, i):
            return ground_truths[i]

    for use_07 in (False, True):
        for threshold in (0.5, 0.7):
            assert_equals_devkit(detections, ground_truths, num_classes, threshold, use_07)
        ev = VOCEvaluator(Dataset(), use_07_metric=use_07)
        for image_id, output in reversed(list(zip(Dataset.image_ids, detections))):
            ev.process([{"image_id": image_id}], [output])
        metrics = ev.evaluate()
        reference = devkit_reference(detections, ground_truths, num_classes, 0.5, use_07)
        for name, value in zip(Dataset.class_names, reference):
            assert metrics.get(f"bbox/AP50-{name}", math.nan) == pytest.approx(value, abs=1e-12, nan_ok=True)
        assert metrics["bbox/AP50"] == pytest.approx(float(np.nanmean(reference)), abs=1e-12)


def test_evaluator_errors_and_crowd_as_difficult(dataset, predictions):
    ev = build_evaluator("voc_area", dataset)
    with pytest.raises(ValueError, match=r"image 11: detection label 0 is outside 1..3"):
        ev.process([{"image_id": 11}], [dict(predictions[11], labels=torch.zeros_like(predictions[11]["labels"]))])
    ev.process([{"image_id": 4242}], [predictions[11]])
    with pytest.raises(ValueError, match=r"image ids \[4242\] are not in the dataset"):
        ev.evaluate()
    # A detection exactly on a crowd box (image 11, class cat) is ignored, not a false positive.
    ev.reset()
    ev.process([{"image_id": 11}], [det([[100, 80, 190, 150]], [0.99], [1])])
    only_crowd = ev.evaluate()
    assert only_crowd["bbox/AP50-cat"] == 0.0  # no counted detections at all
    ev.reset()
    gt11 = dataset.get_ground_truth(0)
    cat_boxes = gt11["boxes"][(gt11["labels"] == 1) & ~gt11["iscrowd"]]
    assert len(cat_boxes) >= 1
    ev.process([{"image_id": 11}], [det([[100, 80, 190, 150], *cat_boxes.tolist()],
                                        [0.99] + [0.5] * len(cat_boxes), [1] * (1 + len(cat_boxes)))])
    assert ev.evaluate()["bbox/AP50-cat"] == pytest.approx(1.0)


def test_results_path_writes_coco_json(dataset, predictions, tmp_path):
    import json

    ev = build_evaluator("voc07_11pt", dataset, results_path=tmp_path / "dets.json")
    ev.process([{"image_id": 12}], [predictions[12]])
    ev.evaluate()
    saved = json.loads((tmp_path / "dets.json").read_text())
    assert len(saved) == len(predictions[12]["scores"])
    assert {r["category_id"] for r in saved} <= {3, 7, 12} and saved[0]["image_id"] == 12
