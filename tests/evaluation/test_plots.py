"""Confusion matrix and precision-recall curves on a hand-made case with known counts,
the PNG files, and results labelled by split."""
import json

import numpy as np
import pytest
import torch

from detect.evaluation import VOCEvaluator, label_metrics
from detect.evaluation.plots import (
    RECALL_POINTS,
    detection_confusion_matrix,
    evaluation_report,
    interpolated_precision,
    write_evaluation_report,
)
from detect.evaluation.voc import voc_pr_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CAT, DOG = 1, 2


def det(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32), "labels": torch.tensor(labels)}


# image 0: a cat found, a dog called a cat, a false dog, a duplicate cat, a cat missed (its
# detection scores below 0.25); image 1: a dog on a difficult box (counted nowhere).
GROUND_TRUTH = [
    {"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], float), "labels": np.array([CAT, DOG, CAT]),
     "difficult": np.array([False, False, False])},
    {"boxes": np.array([[0, 0, 10, 10]], float), "labels": np.array([DOG]), "difficult": np.array([True])},
]
DETECTIONS = [
    det([[0, 0, 10, 10], [20, 20, 30, 30], [60, 60, 70, 70], [1, 0, 11, 10], [40, 40, 50, 50]],
        [0.9, 0.8, 0.7, 0.6, 0.1], [CAT, CAT, DOG, CAT, CAT]),
    det([[0, 0, 10, 10]], [0.9], [DOG]),
]


def test_confusion_matrix_counts():
    matrix = detection_confusion_matrix(DETECTIONS, GROUND_TRUTH, 2)
    # rows predicted (cat, dog, background), columns true (cat, dog, background)
    assert matrix.tolist() == [[1, 1, 1],   # cat found; dog called cat; duplicate cat = false alarm
                               [0, 0, 1],   # a dog where there is nothing
                               [1, 0, 0]]   # the cat scored 0.1 is missed
    # all detections kept: the 0.1 cat finds its box
    assert detection_confusion_matrix(DETECTIONS, GROUND_TRUTH, 2, score_threshold=0.0)[2, 0] == 0
    # a stricter IoU: the duplicate (IoU 0.82 with the first cat) cannot match; counts unchanged
    assert detection_confusion_matrix(DETECTIONS, GROUND_TRUTH, 2, iou_threshold=0.9).tolist() == matrix.tolist()
    # a looser IoU than any overlap: everything is background both ways
    shifted = [det([[5, 0, 15, 10]], [0.9], [CAT])]
    gt = [{"boxes": np.array([[0, 0, 10, 10]], float), "labels": np.array([CAT])}]
    assert detection_confusion_matrix(shifted, gt, 1, iou_threshold=0.5).tolist() == [[0, 1], [1, 0]]
    assert detection_confusion_matrix(shifted, gt, 1, iou_threshold=0.3).tolist() == [[1, 0], [0, 0]]


def test_pr_points_and_their_interpolation():
    curves = voc_pr_curves(DETECTIONS, GROUND_TRUTH, 2)
    cat, dog = curves[CAT], curves[DOG]
    assert cat["positives"] == 2 and dog["positives"] == 1
    np.testing.assert_allclose(cat["recall"], [0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(cat["precision"], [1.0, 0.5, 1 / 3, 0.5])
    np.testing.assert_allclose(cat["scores"], [0.9, 0.8, 0.6, 0.1], rtol=1e-6)
    # dog: the 0.9 dog on image 1's difficult box is not counted; the 0.7 dog on nothing is the
    # one counted detection, a false positive
    np.testing.assert_array_equal(dog["recall"], [0.0])
    np.testing.assert_array_equal(dog["precision"], [0.0])
    np.testing.assert_allclose(dog["scores"], [0.7], rtol=1e-6)
    points = interpolated_precision(cat["recall"], cat["precision"])
    assert points[:51].tolist() == [1.0] * 51 and points[51:].tolist() == [0.5] * 50
    assert interpolated_precision(np.array([0.4]), np.array([1.0]))[41] == 0.0  # past the last recall


class Dataset:
    class_names = ["cat", "dog"]
    image_ids = [7, 8]

    def get_ground_truth(self, i):
        return GROUND_TRUTH[i]


def test_report_files_and_numbers_from_a_finished_evaluator(tmp_path):
    ev = VOCEvaluator(Dataset())
    ev.process([{"image_id": 7}, {"image_id": 8}], DETECTIONS)
    metrics = ev.evaluate()
    assert metrics["bbox/AP50-cat"] == pytest.approx(0.75) and metrics["bbox/AP50-dog"] == 0.0
    written = write_evaluation_report(ev, tmp_path / "out", split="test", metrics={**metrics, "val/loss": 1.5})
    assert sorted(written) == ["confusion_matrix", "metrics", "pr_curves"]
    for key in ("confusion_matrix", "pr_curves"):
        data = written[key].read_bytes()
        assert written[key].name == f"test_{key}.png" and data[:8] == PNG_SIGNATURE and len(data) > 5000
    payload = json.loads((tmp_path / "out" / "test_metrics.json").read_text())
    assert payload["split"] == "test"
    assert payload["metrics"] == {"test/bbox/AP50": 0.375, "test/bbox/AP50-cat": 0.75, "test/bbox/AP50-dog": 0.0,
                                  "test/loss": 1.5}
    assert payload["confusion_matrix"]["matrix"] == [[1, 1, 1], [0, 0, 1], [1, 0, 0]]
    assert payload["confusion_matrix"]["names"] == ["cat", "dog", "background"]
    assert payload["pr_curves"]["cat"]["ap"] == 0.75 and payload["pr_curves"]["cat"]["precision"][51] == 0.5
    assert payload["pr_curves"]["cat"]["recall"] == RECALL_POINTS.round(2).tolist()
    assert evaluation_report(ev, score_threshold=0.0)["confusion_matrix"]["matrix"][2] == [0, 0, 0]


def test_label_metrics_names_the_split():
    assert label_metrics({"bbox/AP50": 0.5, "bbox/AP50-a-b": 0.25, "val/loss": 2.0, "val/loss_cls": 1.0}, "test") == {
        "test/bbox/AP50": 0.5, "test/bbox/AP50-a-b": 0.25, "test/loss": 2.0, "test/loss_cls": 1.0}


def test_evaluators_without_detections_write_only_the_metrics(tmp_path):
    written = write_evaluation_report(None, tmp_path, split="val", metrics={"sem_seg/mIoU": 0.5})
    assert list(written) == ["metrics"]
    with pytest.raises(ValueError, match="run evaluate\\(\\) first"):
        evaluation_report(VOCEvaluator(Dataset()))
