"""mIoU from a confusion matrix on a hand-counted case."""
import math

import pytest
import torch

from detect.evaluation import SemSegEvaluator, build_evaluator, confusion_matrix


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
