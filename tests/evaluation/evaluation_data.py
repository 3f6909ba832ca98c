"""A small COCO-style ground truth with several classes, crowd boxes and box sizes in
every COCO area range, plus seeded predictions, shared by the evaluation tests.

Coordinates are multiples of 0.25 so that xyxy <-> xywh conversions are exact and our
numbers can be compared with a direct pycocotools run for equality, not closeness.
"""
import contextlib
import io

import numpy as np
import torch

CATEGORIES = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 12, "name": "bird"}]
IMAGE_IDS = [11, 12, 15, 20, 21, 30, 31]
WIDTH, HEIGHT = 200, 160


def quarter(x):
    return np.round(np.asarray(x) * 4) / 4


def make_coco_dict(seed=0):
    rng = np.random.default_rng(seed)
    images = [{"id": i, "width": WIDTH, "height": HEIGHT, "file_name": f"{i}.jpg"} for i in IMAGE_IDS]
    annotations = []
    for image_id in IMAGE_IDS[:-1]:  # the last image has no objects at all
        for _ in range(rng.integers(2, 7)):
            w, h = quarter(rng.uniform(8, 130, size=2))  # areas from small to large
            x, y = quarter(rng.uniform(0, WIDTH - w)), quarter(rng.uniform(0, HEIGHT - h))
            annotations.append(
                dict(image_id=image_id, category_id=int(rng.choice([3, 7, 12])), bbox=[x, y, w, h],
                     area=float(w * h), iscrowd=0)
            )
    # Crowd regions: detections inside them are ignored by pycocotools.
    annotations.append(dict(image_id=11, category_id=3, bbox=[100.0, 80.0, 90.0, 70.0], area=6300.0, iscrowd=1))
    annotations.append(dict(image_id=20, category_id=7, bbox=[0.0, 0.0, 60.0, 60.0], area=3600.0, iscrowd=1))
    for i, ann in enumerate(annotations):
        ann["id"] = i + 1
        ann["bbox"] = [float(v) for v in ann["bbox"]]
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


def load_coco(dataset_dict):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset_dict
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class FakeDataset:
    """The evaluation-facing surface of a detection dataset (docs/ABSTRACTIONS.md)."""

    def __init__(self, coco_dict, difficult_as_crowd=True):
        self.coco_dict = coco_dict
        self.class_names = [c["name"] for c in coco_dict["categories"]]
        self.label_to_category_id = {k + 1: c["id"] for k, c in enumerate(coco_dict["categories"])}
        self.category_id_to_label = {v: k for k, v in self.label_to_category_id.items()}
        self.image_ids = [im["id"] for im in coco_dict["images"]]

    def __len__(self):
        return len(self.image_ids)

    def to_coco(self):
        return load_coco(self.coco_dict)

    def get_ground_truth(self, i):
        image_id = self.image_ids[i]
        anns = [a for a in self.coco_dict["annotations"] if a["image_id"] == image_id]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        return {
            "boxes": boxes,
            "labels": torch.tensor([self.category_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
            "image_id": image_id,
            "iscrowd": torch.tensor([bool(a["iscrowd"]) for a in anns], dtype=torch.bool),
        }


def make_predictions(coco_dict, seed=1):
    """Per image: jittered copies of most objects (some with the wrong class), duplicates,
    and random false positives; scores distinct over all images (checked below), so that no
    result depends on how an evaluator orders tied detections (tests/evaluation/test_voc.py
    has the tie cases). Returns {image_id: output dict}."""
    rng = np.random.default_rng(seed)
    label_of = {c["id"]: k + 1 for k, c in enumerate(coco_dict["categories"])}
    outputs = {}
    for image_id in IMAGE_IDS:
        boxes, labels = [], []
        for ann in coco_dict["annotations"]:
            if ann["image_id"] != image_id or rng.random() < 0.15:
                continue
            x, y, w, h = ann["bbox"]
            for _ in range(rng.integers(1, 3)):  # sometimes a duplicate
                jitter = rng.normal(0, 0.12, size=4) * np.array([w, h, w, h])
                x1, y1 = x + jitter[0], y + jitter[1]
                x2, y2 = max(x + w + jitter[2], x1 + 1), max(y + h + jitter[3], y1 + 1)
                boxes.append([x1, y1, x2, y2])
                labels.append(label_of[ann["category_id"]] if rng.random() > 0.2 else int(rng.integers(1, 4)))
        for _ in range(rng.integers(0, 4)):
            x1, y1 = rng.uniform(0, 150), rng.uniform(0, 110)
            boxes.append([x1, y1, x1 + rng.uniform(5, 50), y1 + rng.uniform(5, 50)])
            labels.append(int(rng.integers(1, 4)))
        boxes = quarter(np.array(boxes, dtype=np.float64).reshape(-1, 4))
        outputs[image_id] = {
            "boxes": torch.tensor(boxes, dtype=torch.float32),
            # Not rounded: rounding to a grid made same-class ties (only coordinates need the 0.25 grid).
            "scores": torch.tensor(rng.uniform(0.05, 1.0, size=len(boxes)), dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64),
        }
    scores = torch.cat([out["scores"] for out in outputs.values()])
    assert scores.unique().numel() == scores.numel(), "make_predictions: tied scores"
    return outputs
