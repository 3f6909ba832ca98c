"""The evaluators on datasets built by the real readers through the config builder
(``detect.data.build.build_dataset``): a COCO JSON, a VOC folder of XML files and VOC
``SegmentationClass`` masks, written into tmp_path. Targets come from the real data loader;
detections are the ground truth converted by hand from the files (so the readers'
conversions are under test too) plus known wrong ones; the metrics are computed by hand
and, for COCO, equal pycocotools' COCOeval run directly on the same JSON file."""
from __future__ import annotations

import contextlib
import io
import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.data.build import build_dataloader, build_dataset
from detect.evaluation import build_evaluator
from detect.evaluation.coco import SUMMARY_NAMES
from test_voc import devkit_reference


def write_image(path, height, width):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((height, width, 3), 90, np.uint8))


def evaluate(metric, dataset, outputs_by_image_id):
    """Run ``metric``'s evaluator over the dataset through the evaluation data loader, the
    targets (their ``image_id``, ``masks``) as the loader gives them."""
    evaluator = build_evaluator(metric, dataset)
    loader = build_dataloader(dataset, batch_size=2, train=False)
    seen = []
    for _, targets in loader:
        ids = [int(t["image_id"]) for t in targets]
        seen += ids
        evaluator.process(targets, [outputs_by_image_id[i] for i in ids])
    assert sorted(seen) == sorted(outputs_by_image_id)
    return evaluator.evaluate()


def detections(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32), "labels": torch.tensor(labels, dtype=torch.int64)}


# ----------------------------------------------------------------------------------- COCO
# Category ids 11 (dog) and 3 (cat): the reader orders classes by id, so cat is label 1 and
# dog label 2, and results must go back as ids 3 and 11. Image 12 has no objects; image 5
# has a crowd region of cats. bbox is COCO's [x, y, w, h].
COCO_IMAGES = [(5, "a.png", 160, 200), (9, "b.png", 160, 200), (12, "c.png", 120, 90)]
COCO_ANNOTATIONS = [
    dict(id=1, image_id=5, category_id=3, bbox=[10, 20, 20, 20], area=400.0, iscrowd=0),       # small
    dict(id=2, image_id=5, category_id=11, bbox=[50, 40, 60, 50], area=3000.0, iscrowd=0),     # medium
    dict(id=3, image_id=9, category_id=3, bbox=[20, 10, 120, 100], area=12000.0, iscrowd=0),   # large
    dict(id=4, image_id=9, category_id=11, bbox=[150, 100, 40, 50], area=2000.0, iscrowd=0),   # medium
    dict(id=5, image_id=5, category_id=3, bbox=[100, 100, 90, 50], area=4500.0, iscrowd=1),    # crowd
]
CAT, DOG = 1, 2


@pytest.fixture
def coco_files(tmp_path):
    for _, name, height, width in COCO_IMAGES:
        write_image(tmp_path / "images" / name, height, width)
    ann_file = tmp_path / "instances_val.json"
    ann_file.write_text(json.dumps({
        "images": [dict(id=i, file_name=n, height=h, width=w) for i, n, h, w in COCO_IMAGES],
        "annotations": COCO_ANNOTATIONS,
        "categories": [dict(id=11, name="dog"), dict(id=3, name="cat")],
    }))
    return tmp_path / "images", ann_file


def test_coco_evaluator_on_the_coco_reader(coco_files):
    image_dir, ann_file = coco_files
    dataset = build_dataset(dict(format="coco", val=dict(image_dir=str(image_dir), ann_file=str(ann_file))), "val")
    assert dataset.class_names == ["cat", "dog"] and dataset.label_to_category_id == {CAT: 3, DOG: 11}
    # Every object found exactly (xyxy by hand from the JSON), a cat on the crowd region
    # (ignored), and a dog where there is none (image 12) scoring above both real dogs.
    outputs = {
        5: detections([[10, 20, 30, 40], [50, 40, 110, 90], [100, 100, 190, 150]], [0.9, 0.8, 0.99], [CAT, DOG, CAT]),
        9: detections([[20, 10, 140, 110], [150, 100, 190, 150]], [0.7, 0.6], [CAT, DOG]),
        12: detections([[5, 5, 45, 45]], [0.95], [DOG]),
    }
    metrics = evaluate("coco", dataset, outputs)
    # By hand, at every IoU threshold (the boxes are exact): cat 2 of 2, no false positive -> AP 1;
    # dog: FP, TP, TP over 2 boxes -> precision 0, 1/2, 2/3 at recall 0, 1/2, 1: the envelope
    # is 2/3 at every recall -> AP 2/3. Small: only the cat (AP 1); medium: only the dogs, the
    # 40 x 40 false dog included (2/3); large: only the cat (1). AR1: one detection per image
    # and class: image 5's top cat is the crowd one (ignored), so cat recall 1/2, dog 1.
    expected = dict(AP=5 / 6, AP50=5 / 6, AP75=5 / 6, APs=1.0, APm=2 / 3, APl=1.0, AR1=0.75, AR10=1.0, AR100=1.0,
                    ARs=1.0, ARm=1.0, ARl=1.0)
    for name, value in expected.items():
        assert metrics[f"bbox/{name}"] == pytest.approx(value, abs=1e-12), name
    assert metrics["bbox/AP-cat"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["bbox/AP-dog"] == pytest.approx(2 / 3, abs=1e-12)
    assert metrics["bbox/AP50-dog"] == pytest.approx(2 / 3, abs=1e-12)

    # pycocotools directly on the JSON file, the results written by hand in its category ids.
    results = [dict(image_id=i, category_id={CAT: 3, DOG: 11}[label], bbox=[x1, y1, x2 - x1, y2 - y1], score=score)
               for i, out in outputs.items()
               for (x1, y1, x2, y2), score, label in zip(out["boxes"].tolist(), out["scores"].tolist(),
                                                         out["labels"].tolist())]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        direct = COCOeval(gt, gt.loadRes(results), "bbox")
        direct.evaluate()
        direct.accumulate()
        direct.summarize()
    assert [metrics[f"bbox/{name}"] for name in SUMMARY_NAMES] == direct.stats.tolist()


# ------------------------------------------------------------------------------------ VOC
# VOC boxes are 1-based inclusive pixel indices: (xmin, ymin, xmax, ymax) covers the
# continuous box (xmin - 1, ymin - 1, xmax, ymax). The 2 x 2-pixel dog (5, 5, 6, 6) is
# (4, 4, 6, 6); read without the shift it would be (5, 5, 6, 6), IoU 1/4 with its detection.
VOC_IMAGES = {  # stem: (height, width, [(name, xmin, ymin, xmax, ymax, difficult)])
    "000001": (100, 120, [("cat", 11, 21, 40, 60, 0), ("dog", 5, 5, 6, 6, 0), ("dog", 70, 10, 110, 50, 1)]),
    "000002": (100, 120, [("cat", 31, 31, 90, 80, 0), ("cat", 1, 1, 20, 20, 0)]),
    "000003": (80, 60, []),
}
VOC_OBJECT = ("<object><name>{}</name><difficult>{}</difficult><bndbox><xmin>{}</xmin><ymin>{}</ymin>"
              "<xmax>{}</xmax><ymax>{}</ymax></bndbox></object>")


def write_voc(root, images, split, masks=None):
    """A VOC folder; ``masks`` ({stem: uint8 array}) adds SegmentationClass PNGs and the
    Segmentation split file."""
    for stem, (height, width, objects) in images.items():
        write_image(root / "JPEGImages" / f"{stem}.jpg", height, width)
        body = "".join(VOC_OBJECT.format(n, d, a, b, c, e) for n, a, b, c, e, d in objects)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size>{body}</annotation>")
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s in images))
    if masks is not None:
        (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{s}\n" for s in masks))
        (root / "SegmentationClass").mkdir(exist_ok=True)
        for stem, mask in masks.items():
            png = Image.fromarray(mask, mode="P")
            png.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
            png.save(root / "SegmentationClass" / f"{stem}.png")
    return root


@pytest.mark.parametrize("metric, cat_ap, dog_ap", [("voc_area", 11 / 12, 1 / 2), ("voc07_11pt", 10 / 11, 1 / 2)])
def test_voc_evaluator_on_the_voc_reader(tmp_path, metric, cat_ap, dog_ap):
    root = write_voc(tmp_path / "VOC", VOC_IMAGES, "val")
    dataset = build_dataset(dict(format="voc", root=str(root), class_names=["cat", "dog"], val=dict(split="val")),
                            "val")
    assert dataset.image_ids == [0, 1, 2]  # positions in the split file
    # cat (3 positives): 0.9 exact on image 1's cat (TP); 0.85 one pixel off image 2's big cat
    # (IoU 59/60: TP, it claims the box); 0.8 exactly on that box (duplicate: FP); 0.6 exact on
    # the small cat (TP). TP TP FP TP -> recall 1/3 2/3 2/3 1, precision 1 1 2/3 3/4:
    #   area 1/3 + 1/3 + 1/3 * 3/4 = 11/12; 11-point: 1 at t = 0..0.6 (7), 3/4 at 0.7..1 (4): 10/11.
    # dog (1 positive, the difficult one not counted): 0.95 on the difficult dog (ignored);
    # 0.8 on image 3, which has nothing (FP); 0.7 on the 2 x 2 dog (TP): FP TP -> precision
    # 0, 1/2 at recall 0, 1: AP 1/2 by both rules.
    outputs = {
        0: detections([[10, 20, 40, 60], [4, 4, 6, 6], [69, 9, 110, 50]], [0.9, 0.7, 0.95], [1, 2, 2]),
        1: detections([[30, 30, 90, 80], [0, 0, 20, 20], [31, 30, 90, 80]], [0.8, 0.6, 0.85], [1, 1, 1]),
        2: detections([[10, 10, 50, 50]], [0.8], [2]),
    }
    metrics = evaluate(metric, dataset, outputs)
    assert metrics["bbox/AP50-cat"] == pytest.approx(cat_ap, abs=1e-12)
    assert metrics["bbox/AP50-dog"] == pytest.approx(dog_ap, abs=1e-12)
    assert metrics["bbox/AP50"] == pytest.approx((cat_ap + dog_ap) / 2, abs=1e-12)
    # The devkit port on the reader's ground truth gives the same numbers.
    ground_truths = [dataset.get_ground_truth(i) for i in range(len(dataset))]
    assert [g["difficult"].tolist() for g in ground_truths] == [[False, False, True], [False, False], []]
    reference = devkit_reference([outputs[i] for i in range(3)], ground_truths, 2, 0.5, metric == "voc07_11pt")
    np.testing.assert_allclose(reference, [cat_ap, dog_ap], rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------ masks (mIoU)
def seg_masks():
    """Two masks: 0 background, 1 cat, 2 dog, 255 ignore."""
    first = np.zeros((8, 10), np.uint8)
    first[2:6, 1:5] = 1     # cat, 16 pixels
    first[0:4, 6:10] = 2    # dog, 16 pixels
    first[7, :] = 255       # ignore, 10 pixels
    second = np.zeros((6, 6), np.uint8)
    second[0:3, 0:3] = 1    # cat, 9 pixels
    second[5, 5] = 255
    return {"s1": first, "s2": second}


def test_miou_evaluator_on_voc_masks(tmp_path):
    masks = seg_masks()
    images = {"s1": (8, 10, [("cat", 2, 3, 5, 6, 0), ("dog", 7, 1, 10, 4, 0)]), "s2": (6, 6, [("cat", 1, 1, 3, 3, 0)])}
    root = write_voc(tmp_path / "VOC", images, "val", masks=masks)
    dataset = build_dataset(dict(format="voc", root=str(root), class_names=["cat", "dog"], masks=True,
                                 val=dict(split="val")), "val")
    # Predictions made from the masks as written: on s1 the cat spreads one column right
    # (4 background pixels called cat), the dog's top row is called background (4 pixels),
    # and the ignore row is called dog (not counted); on s2 the cat is missed (9 pixels) and
    # the ignore pixel is called cat. s2 comes as logits (the evaluator takes their argmax).
    first = masks["s1"].astype(np.int64)
    first[2:6, 5] = 1
    first[0, 6:10] = 0
    first[7, :] = 2
    second = np.zeros((6, 6), np.int64)
    second[5, 5] = 1
    logits = torch.nn.functional.one_hot(torch.from_numpy(second), 3).permute(2, 0, 1).float()
    outputs = {0: {"sem_seg": torch.from_numpy(first)}, 1: {"sem_seg": logits}}
    metrics = evaluate("miou", dataset, outputs)
    # Confusion matrix M[true, predicted] over the 105 counted pixels:
    #   background [60, 4, 0]; cat [9, 16, 0]; dog [4, 0, 12]
    iou = {"background": 60 / (64 + 73 - 60), "cat": 16 / (25 + 20 - 16), "dog": 12 / (16 + 12 - 12)}
    for name, value in iou.items():
        assert metrics[f"sem_seg/IoU-{name}"] == pytest.approx(value, abs=1e-12), name
    assert metrics["sem_seg/mIoU"] == pytest.approx(sum(iou.values()) / 3, abs=1e-12)
    assert metrics["sem_seg/pAcc"] == pytest.approx(88 / 105, abs=1e-12)
    assert metrics["sem_seg/mAcc"] == pytest.approx((60 / 64 + 16 / 25 + 12 / 16) / 3, abs=1e-12)
    assert metrics["sem_seg/fwIoU"] == pytest.approx((64 * iou["background"] + 25 * iou["cat"] + 16 * iou["dog"]) / 105,
                                                     abs=1e-12)
