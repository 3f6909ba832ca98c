"""BCCD (blood cells: RBC, WBC, Platelets; 640x480 microscope images in VOC layout), kept
beside the repository in ../shared/data/BCCD: train on train (205 images), validate on val
(87), test (72) with ``tools/eval.py --split test``. Two annotated boxes have zero size and
are dropped at load (check_policy="drop"; see docs/dataset_doctor.md)."""
import os
from pathlib import Path

BCCD = os.path.normpath(Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "BCCD")

config = dict(
    model=dict(num_classes=3),
    data=dict(
        format="voc",
        root=BCCD,
        train=dict(split="train"),
        val=dict(split="val"),
        test=dict(split="test"),
        class_names=["RBC", "WBC", "Platelets"],
        check_policy="drop",
        batch_size=4,
    ),
    eval=dict(metric="voc_area", best_metric="bbox/AP50"),
)
