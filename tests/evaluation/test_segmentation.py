"""mIoU, mean accuracy, pixel accuracy and fwIoU from hand-counted confusion matrices; the
report of a segmentation evaluation; two ranks equal one process."""
import json
import math
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from detect.evaluation import SemSegEvaluator, build_evaluator, confusion_matrix, segmentation_metrics


TRUTH = torch.tensor([[0, 0, 1], [1, 2, 255]])
PREDICTED = torch.tensor([[0, 1, 1], [1, 2, 0]])
# Non-ignored pixels (true, predicted): (0,0) (0,1) (1,1) (1,1) (2,2); the 255 pixel is skipped.
#   M = [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
#   IoU: 1/(2+1-1) = .5, 2/(2+3-2) = 2/3, 1/1 = 1 -> mIoU 13/18
#   accuracy: .5, 1, 1 -> mAcc 5/6; pixel accuracy 4/5; fwIoU .4*.5 + .4*2/3 + .2*1 = 2/3


def test_confusion_matrix_counts():
    assert confusion_matrix(TRUTH, PREDICTED, 3).tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]


def one_hot_logits(labels, num_classes):
    return torch.nn.functional.one_hot(labels.clamp(max=num_classes - 1), num_classes).permute(2, 0, 1).float() * 3 - 1


def test_miou_hand_counted_and_absent_class_left_out():
    class Data:
        class_names = ["road", "car", "tree"]  # + background = 4 classes; "tree" never appears

    ev = build_evaluator("miou", Data())
    ev.process([{"image_id": 1, "masks": TRUTH}], [{"sem_seg": one_hot_logits(PREDICTED, 4)}])
    ev.process([{"image_id": 1, "masks": TRUTH}], [{"sem_seg": PREDICTED}])  # same image again: counted once
    metrics = ev.evaluate()
    assert metrics["sem_seg/mIoU"] == pytest.approx(13 / 18)
    assert metrics["sem_seg/mAcc"] == pytest.approx(5 / 6)
    assert metrics["sem_seg/pAcc"] == pytest.approx(4 / 5)
    assert metrics["sem_seg/fwIoU"] == pytest.approx(2 / 3)
    assert metrics["sem_seg/IoU-background"] == pytest.approx(0.5)
    assert metrics["sem_seg/IoU-car"] == pytest.approx(1.0)
    assert "sem_seg/IoU-tree" not in metrics


def test_two_images_accumulate():
    ev = SemSegEvaluator(["a", "b"])
    ev.process([{"image_id": 1, "masks": TRUTH}, {"image_id": 2, "masks": torch.full((2, 2), 2)}],
               [{"sem_seg": PREDICTED}, {"sem_seg": torch.tensor([[2, 2], [2, 1]])}])
    # Image 2 adds (2,2) x3 and (2,1) x1: M = [[1,1,0],[0,2,0],[0,1,4]]
    # IoU: 1/2, 2/(2+4-2) = .5, 4/(5+4-4) = .8
    assert ev.evaluate()["sem_seg/mIoU"] == pytest.approx((0.5 + 0.5 + 0.8) / 3)


def test_bad_segmentation_inputs():
    ev = SemSegEvaluator(["a", "b"])
    with pytest.raises(ValueError, match="image 7: mask value 5 is neither a class in 0..2"):
        ev.process([{"image_id": 7, "masks": torch.tensor([[5]])}], [{"sem_seg": torch.tensor([[0]])}])
    with pytest.raises(ValueError, match=r"image 7: prediction of size \(1, 2\) for a mask of size \(1, 1\)"):
        ev.process([{"image_id": 7, "masks": torch.tensor([[0]])}], [{"sem_seg": torch.tensor([[0, 1]])}])
    with pytest.raises(ValueError, match="image 7: sem_seg has 2 channels, expected 3"):
        ev.process([{"image_id": 7, "masks": torch.tensor([[0]])}], [{"sem_seg": torch.zeros(2, 1, 1)}])
    # a label map is range-checked like the mask: 3 would count as class 0 of the next row
    # (a silent miscount) and 9 would break the matrix's reshape
    for value in (3, 9, -1):
        with pytest.raises(ValueError, match=rf"image 7: predicted class {value} is outside 0..2"):
            ev.process([{"image_id": 7, "masks": torch.tensor([[0, 1]])}], [{"sem_seg": torch.tensor([[0, value]])}])
    with pytest.raises(RuntimeError, match="no images were processed"):
        ev.evaluate()
    # a pixel whose mask is ignored is not counted, whatever was predicted there
    ev.process([{"image_id": 1, "masks": torch.tensor([[255, 255]])}], [{"sem_seg": torch.tensor([[0, 255]])}])
    assert math.isnan(ev.evaluate()["sem_seg/mIoU"])  # every pixel ignored: undefined, not 0


# A second hand-counted case, 4 classes, where a class is predicted but never true:
#   (true, predicted): (0,0) x3 (0,1) x1 | (1,1) x2 (1,2) x2 | (2,2) x1 (2,3) x1 | two ignored pixels
TRUTH_4 = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 255, 255]])
PREDICTED_4 = torch.tensor([[0, 0, 0, 1], [1, 1, 2, 2], [2, 3, 0, 3]])
MATRIX_4 = [[3, 1, 0, 0], [0, 2, 2, 0], [0, 0, 1, 1], [0, 0, 0, 0]]
# truth per class 4, 4, 2, 0 (10 pixels); predicted 3, 3, 3, 1
# IoU: 3/(4+3-3) = 3/4, 2/(4+3-2) = 2/5, 1/(2+3-1) = 1/4, 0/(0+1-0) = 0 -> mIoU 1.4/4 = 0.35
# accuracy: 3/4, 2/4, 1/2, undefined (no true pixel: left out) -> mAcc 1.75/3 = 7/12
# pixel accuracy 6/10; fwIoU .4 * 3/4 + .4 * 2/5 + .2 * 1/4 + 0 = 0.51


def test_hand_counted_matrix_with_a_class_only_predicted():
    assert confusion_matrix(TRUTH_4, PREDICTED_4, 4).tolist() == MATRIX_4
    values = segmentation_metrics(np.array(MATRIX_4))
    assert values["iou"][:3].tolist() == [0.75, 0.4, 0.25] and values["iou"][3] == 0.0
    assert values["accuracy"][:3].tolist() == [0.75, 0.5, 0.5] and math.isnan(values["accuracy"][3])
    ev = SemSegEvaluator(["a", "b", "c"])
    ev.process([{"image_id": 3, "masks": TRUTH_4}], [{"sem_seg": one_hot_logits(PREDICTED_4, 4)}])
    metrics = ev.evaluate()
    assert metrics["sem_seg/mIoU"] == pytest.approx(0.35, rel=1e-12)
    assert metrics["sem_seg/mAcc"] == pytest.approx(7 / 12, rel=1e-12)
    assert metrics["sem_seg/pAcc"] == pytest.approx(0.6, rel=1e-12)
    assert metrics["sem_seg/fwIoU"] == pytest.approx(0.51, rel=1e-12)
    assert metrics["sem_seg/IoU-c"] == 0.0  # predicted, never true: IoU 0, counted in the mean
    assert ev.last_confusion_matrix.tolist() == MATRIX_4
    assert "| c | 0.0 | - |" in ev.per_class_table and "| background | 75.0 | 75.0 |" in ev.per_class_table


def test_segmentation_report_json_and_plot_layout(tmp_path, monkeypatch):
    from detect.evaluation import plots

    ev = SemSegEvaluator(["a", "b", "c"])
    ev.process([{"image_id": 3, "masks": TRUTH_4}], [{"sem_seg": PREDICTED_4}])
    metrics = ev.evaluate()
    drawn = {}
    monkeypatch.setattr(plots, "plot_confusion_matrix",
                        lambda matrix, names, path, title="": drawn.update(matrix=matrix, names=names) or Path(path))
    written = plots.write_evaluation_report(ev, tmp_path, split="test", metrics=metrics)
    report = json.loads(written["metrics"].read_text())
    assert report["metrics"]["test/sem_seg/mIoU"] == pytest.approx(0.35)
    assert report["confusion_matrix"] == {
        "names": ["background", "a", "b", "c"], "rows": "true", "columns": "predicted", "matrix": MATRIX_4,
        "iou": [0.75, 0.4, 0.25, 0.0], "accuracy": [0.75, 0.5, 0.5, None]}
    # the plot has the detection layout: rows predicted, columns true, background last
    assert drawn["names"] == ["a", "b", "c"]
    assert drawn["matrix"].tolist() == [[2, 0, 0, 1], [2, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 3]]
    assert written["confusion_matrix"] == tmp_path / "test_confusion_matrix.png"


# Two ranks, each with its images (image 4 on both, as a padding DistributedSampler does).
RANK_IMAGES = [[1, 2, 4], [3, 4, 5]]


def segmentation_case(image_id):
    generator = torch.Generator().manual_seed(image_id)
    truth = torch.randint(0, 4, (7, 9), generator=generator)
    truth[0, :image_id] = 255
    predicted = torch.where(torch.rand(7, 9, generator=generator) < 0.7, truth.clamp(max=3),
                            torch.randint(0, 4, (7, 9), generator=generator))
    return {"image_id": image_id, "masks": truth}, {"sem_seg": one_hot_logits(predicted, 4)}


def evaluate_images(image_ids):
    ev = SemSegEvaluator(["a", "b", "c"])
    for image_id in image_ids:
        target, output = segmentation_case(image_id)
        ev.process([target], [output])
    return ev.evaluate(), ev.per_class_table


def rank_worker(rank, store, out_dir):
    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        metrics, table = evaluate_images(RANK_IMAGES[rank])
    finally:
        torch.distributed.destroy_process_group()
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump({"metrics": metrics, "table": table}, f)


def test_two_ranks_give_the_metrics_of_one_process(tmp_path):
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=rank_worker, args=(r, tmp_path / "store", tmp_path)) for r in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0]
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    single, table = evaluate_images([1, 2, 3, 4, 5])  # every image once
    assert rank1["metrics"] == {}
    assert rank0["metrics"] == single and rank0["table"] == table
    assert {"sem_seg/mIoU", "sem_seg/fwIoU", "sem_seg/mAcc", "sem_seg/pAcc", "sem_seg/IoU-c"} <= set(single)
    counted_twice, _ = evaluate_images([1, 2, 4, 3, 4, 5])  # the same image twice in one process: once
    assert counted_twice == single
