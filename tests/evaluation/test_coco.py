"""COCOEvaluator against a direct pycocotools run on the same detections."""
import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from pycocotools.cocoeval import COCOeval

from detect.evaluation import COCOEvaluator, build_evaluator, format_metrics, is_per_class_metric
from detect.evaluation.coco import SUMMARY_NAMES

from evaluation_data import IMAGE_IDS, load_coco


def direct_results(predictions, label_to_category_id, image_ids):
    """COCO results written the way a user would for pycocotools: xywh, category ids."""
    results = []
    for image_id in image_ids:
        out = predictions[image_id]
        for (x1, y1, x2, y2), score, label in zip(out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist()):
            results.append({"image_id": image_id, "category_id": label_to_category_id[label],
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    return results


def direct_stats(coco_dict, results, image_ids=None, category_ids=None):
    gt = load_coco(coco_dict)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = image_ids
        if category_ids is not None:
            ev.params.catIds = category_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def run_evaluator(evaluator, predictions, image_ids, batch_size=3):
    evaluator.reset()
    for start in range(0, len(image_ids), batch_size):
        ids = image_ids[start:start + batch_size]
        evaluator.process([{"image_id": torch.tensor(i)} for i in ids], [predictions[i] for i in ids])
    return evaluator.evaluate()


def as_pycocotools(value):
    return -1.0 if math.isnan(value) else value


def test_equals_direct_pycocotools(dataset, coco_dict, predictions):
    metrics = run_evaluator(build_evaluator("coco", dataset), predictions, IMAGE_IDS)
    stats = direct_stats(coco_dict, direct_results(predictions, dataset.label_to_category_id, IMAGE_IDS))
    ours = [as_pycocotools(metrics[f"bbox/{name}"]) for name in SUMMARY_NAMES]
    assert ours == stats.tolist()  # exact: same detections, same pycocotools
    # The data must exercise the metric: neither trivial nor perfect, all area ranges present.
    assert 0.2 < metrics["bbox/AP50"] < 0.99 and 0.05 < metrics["bbox/AP"] < metrics["bbox/AP50"]
    assert all(stat >= 0 for stat in stats), "every COCO area range should have objects"


def test_per_class_ap_equals_single_category_runs(dataset, coco_dict, predictions):
    metrics = run_evaluator(build_evaluator("coco", dataset), predictions, IMAGE_IDS)
    results = direct_results(predictions, dataset.label_to_category_id, IMAGE_IDS)
    for label, name in enumerate(dataset.class_names, start=1):
        stats = direct_stats(coco_dict, results, category_ids=[dataset.label_to_category_id[label]])
        assert metrics[f"bbox/AP-{name}"] == pytest.approx(stats[0], abs=1e-12)
        assert metrics[f"bbox/AP50-{name}"] == pytest.approx(stats[1], abs=1e-12)
    table = format_metrics(metrics)
    assert "| cat |" in table and "bbox/AP50:" in table


def test_per_class_keys_are_told_apart_one_way():
    assert is_per_class_metric("bbox/AP50-red-cell") and is_per_class_metric("sem_seg/IoU-car")
    assert not any(map(is_per_class_metric, ["bbox/AP50", "val/loss_cls", "sem_seg/mIoU"]))
    text = format_metrics({"bbox/AP50": 0.5, "bbox/AP50-red-cell": 0.25})
    assert text.splitlines()[0] == "bbox/AP50: 0.5000" and "| red-cell | 25.0 |" in text


def test_subset_of_images_equals_direct_run_on_that_subset(dataset, coco_dict, predictions):
    subset = [12, 20, 31]
    metrics = run_evaluator(build_evaluator("coco", dataset), predictions, subset)
    stats = direct_stats(coco_dict, direct_results(predictions, dataset.label_to_category_id, subset), image_ids=subset)
    assert [as_pycocotools(metrics[f"bbox/{n}"]) for n in SUMMARY_NAMES] == stats.tolist()


def test_results_json_round_trip(dataset, coco_dict, predictions, tmp_path):
    path = tmp_path / "out" / "results.json"
    evaluator = build_evaluator("coco", dataset, results_path=path)
    metrics = run_evaluator(evaluator, predictions, IMAGE_IDS)
    saved = json.loads(path.read_text())
    expected = direct_results(predictions, dataset.label_to_category_id, IMAGE_IDS)
    assert len(saved) == len(expected) == sum(len(p["scores"]) for p in predictions.values())
    assert saved == expected  # ids in the source's category ids, xywh, same values
    # Re-scoring the file (what the COCO server does) gives our numbers again.
    stats = direct_stats(coco_dict, str(path))
    assert [as_pycocotools(metrics[f"bbox/{n}"]) for n in SUMMARY_NAMES] == stats.tolist()


def test_no_detections_gives_zero_ap(dataset, predictions):
    empty = {i: {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
             for i in IMAGE_IDS}
    metrics = run_evaluator(build_evaluator("coco", dataset), empty, IMAGE_IDS)
    assert metrics["bbox/AP"] == 0.0 and metrics["bbox/AR100"] == 0.0


def test_perfect_detections_give_ap_one(dataset, coco_dict):
    outputs = {i: {"boxes": [], "scores": [], "labels": []} for i in IMAGE_IDS}
    for ann in coco_dict["annotations"]:
        if ann["iscrowd"]:
            continue
        x, y, w, h = ann["bbox"]
        out = outputs[ann["image_id"]]
        out["boxes"].append([x, y, x + w, y + h])
        out["scores"].append(0.9)
        out["labels"].append(dataset.category_id_to_label[ann["category_id"]])
    outputs = {i: {k: torch.tensor(v) for k, v in o.items()} for i, o in outputs.items()}
    metrics = run_evaluator(build_evaluator("coco", dataset), outputs, IMAGE_IDS)
    assert metrics["bbox/AP"] == pytest.approx(1.0) and metrics["bbox/AP75"] == pytest.approx(1.0)


def test_bad_inputs_raise_clear_errors(dataset, predictions):
    evaluator = build_evaluator("coco", dataset)
    with pytest.raises(RuntimeError, match="no images were processed"):
        evaluator.evaluate()
    evaluator.process([{"image_id": 999}], [predictions[11]])
    with pytest.raises(ValueError, match=r"image ids \[999\] are not in the COCO ground truth"):
        evaluator.evaluate()
    evaluator.reset()
    bad = dict(predictions[11], labels=torch.full_like(predictions[11]["labels"], 4))
    evaluator.process([{"image_id": 11}], [bad])
    with pytest.raises(ValueError, match="image 11: detection label 4 has no category id"):
        evaluator.evaluate()
    with pytest.raises(ValueError, match="target 0: evaluators need 'image_id'"):
        evaluator.process([{}], [predictions[11]])
    with pytest.raises(ValueError, match="2 targets but 1 outputs"):
        evaluator.process([{"image_id": 11}, {"image_id": 12}], [predictions[11]])
    with pytest.raises(ValueError, match="unknown evaluation metric 'voc'"):
        build_evaluator("voc", dataset)
    with pytest.raises(ValueError, match=r"category ids \[5\]"):
        COCOEvaluator(dataset.to_coco(), {1: 3, 2: 5})


def test_undefined_area_range_is_nan(coco_dict):
    # Only large objects: APs and APm are undefined (pycocotools -1) and reported as nan.
    big = dict(coco_dict, annotations=[a for a in coco_dict["annotations"] if a["area"] > 96 ** 2])
    from evaluation_data import FakeDataset

    data = FakeDataset(big)
    ann = big["annotations"][0]
    x, y, w, h = ann["bbox"]
    out = {"boxes": torch.tensor([[x, y, x + w, y + h]]), "scores": torch.tensor([0.5]),
           "labels": torch.tensor([data.category_id_to_label[ann["category_id"]]])}
    ev = build_evaluator("coco", data)
    ev.process([{"image_id": ann["image_id"]}], [out])
    metrics = ev.evaluate()
    assert math.isnan(metrics["bbox/APs"]) and math.isnan(metrics["bbox/APm"])
    assert metrics["bbox/APl"] == pytest.approx(1.0)
    assert np.isfinite(metrics["bbox/AP"])
