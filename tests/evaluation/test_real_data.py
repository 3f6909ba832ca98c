"""Evaluators on the real BCCD validation split (VOC layout, read by detect.data):
the label <-> category id mapping and original-coordinate ground truth of the real
reader, with jittered ground truth as detections."""
import contextlib
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.cocoeval import COCOeval

from detect.evaluation import build_evaluator
from test_voc import devkit_reference

BCCD = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "BCCD"
pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(not BCCD.is_dir(), reason=f"real data not found at {BCCD} (../shared/data beside the repo)"),
]


@pytest.fixture(scope="module")
def bccd():
    from detect.data import VOCDetection

    return VOCDetection(BCCD, "val", class_names=["RBC", "WBC", "Platelets"], check_policy="drop")


def jittered_detections(dataset, seed=0):
    rng = np.random.default_rng(seed)
    outputs = []
    for i in range(len(dataset)):
        gt = dataset.get_ground_truth(i)
        boxes = gt["boxes"].numpy().astype(np.float64)
        size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
        noisy = boxes + rng.normal(0, 0.08, size=boxes.shape) * size
        noisy[:, 2:] = np.maximum(noisy[:, 2:], noisy[:, :2] + 1)
        labels = gt["labels"].numpy().copy()
        confused = rng.random(len(labels)) < 0.1
        labels[confused] = rng.integers(1, 4, size=int(confused.sum()))
        keep = rng.random(len(labels)) > 0.1  # some misses
        outputs.append({"boxes": torch.tensor(noisy[keep], dtype=torch.float32),
                        "scores": torch.tensor(rng.random(int(keep.sum())), dtype=torch.float32),
                        "labels": torch.tensor(labels[keep])})
    return outputs


def test_bccd_voc_and_coco(bccd):
    outputs = jittered_detections(bccd)
    targets = [{"image_id": image_id} for image_id in bccd.image_ids]
    metrics = {}
    for metric in ("voc_area", "voc07_11pt", "coco"):
        ev = build_evaluator(metric, bccd)
        for start in range(0, len(targets), 8):
            ev.process(targets[start:start + 8], outputs[start:start + 8])
        metrics[metric] = ev.evaluate()
    ground_truths = [bccd.get_ground_truth(i) for i in range(len(bccd))]
    for metric, use_07 in (("voc_area", False), ("voc07_11pt", True)):
        reference = devkit_reference(outputs, ground_truths, 3, 0.5, use_07)
        assert metrics[metric]["bbox/AP50"] == pytest.approx(float(np.mean(reference)), abs=1e-12)
        assert metrics[metric]["bbox/AP50-WBC"] == pytest.approx(reference[1], abs=1e-12)
    # COCO numbers equal pycocotools on the dataset's own COCO view, in its category ids.
    gt = bccd.to_coco()
    results = []
    for image_id, out in zip(bccd.image_ids, outputs):
        for (x1, y1, x2, y2), score, label in zip(out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist()):
            results.append({"image_id": image_id, "category_id": bccd.label_to_category_id[label],
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert metrics["coco"]["bbox/AP"] == pytest.approx(ev.stats[0], abs=1e-12)
    assert metrics["coco"]["bbox/AP50"] == pytest.approx(ev.stats[1], abs=1e-12)
    assert 0.3 < metrics["voc_area"]["bbox/AP50"] < 0.95 and not math.isnan(metrics["coco"]["bbox/AR100"])
