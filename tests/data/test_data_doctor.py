"""The dataset doctor (tools/check_dataset.py) on broken fixtures, and the BCCD checks."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data_fixtures import BCCD, needs_bccd, write_image, write_voc
from detect.data import VOCDetection
from detect.data.doctor import diagnose, source_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import check_dataset  # noqa: E402


def _broken_voc(root):
    write_voc(root, {
        "good": (20, 30, [("cat", 1, 1, 10, 10, 0), ("dog", 2, 2, 12, 18, 1)]),
        "point": (20, 20, [("cat", 5, 5, 5, 5, 0), ("cat", 3, 3, 9, 9, 0)]),
        "empty": (10, 10, []),
        "gone": (10, 10, [("dog", 1, 1, 4, 4, 0)]),
        "corrupt": (10, 10, [("bird", 1, 1, 4, 4, 0)]),
    })
    (root / "JPEGImages" / "gone.jpg").unlink()
    (root / "JPEGImages" / "corrupt.jpg").write_bytes(b"not a jpeg")
    return root


def test_report_counts_histogram_sizes_and_problems(tmp_path):
    data, splits = source_config("voc", root=str(_broken_voc(tmp_path)), class_names=["cat", "dog"])
    assert splits == ["train"]
    report = diagnose(data, splits, decode=True)
    split = report.splits[0]
    assert split.counts == {"images": 5, "boxes": 6, "crowd": 0, "difficult": 1, "empty_images": 1,
                            "missing_images": 1, "corrupt_images": 1}
    assert split.class_histogram == {"cat": 3, "dog": 2, "bird (not in class list)": 1}
    assert split.box_stats["width"][4] == 11.0 and split.box_stats["small"] == 6
    text = report.format()
    for line in (
        "images 5 | boxes 6 (crowd 0, difficult 1) | images without boxes 1 | missing 1 | corrupt 1",
        "point.xml, image id 1, object 0: zero-size box: bndbox (xmin, ymin, xmax, ymax) = (5, 5, 5, 5)",
        "gone.xml, image id 3: image file missing:",
        "corrupt.xml, image id 4, object 0: unknown category: class name 'bird'",
        "corrupt.xml, image id 4: image cannot be decoded: cannot decode image",
        "verdict: 4 problem(s) stop training under check_policy='raise'",
    ):
        assert line in text, line
    assert report.stops_training


def test_verdict_follows_the_policy_and_decoding(tmp_path):
    root = _broken_voc(tmp_path)
    (root / "JPEGImages" / "corrupt.jpg").unlink()
    write_image(root / "JPEGImages" / "corrupt.jpg", 10, 10)
    data, splits = source_config("voc", root=str(root), class_names=["cat", "dog"], check_policy="drop")
    assert not diagnose(data, splits, decode=True).stops_training  # drop handles every problem left
    write_image(root / "JPEGImages" / "corrupt.jpg", 12, 10)  # now the size disagrees with the XML
    report = diagnose(data, splits, decode=True)
    assert report.stops_training and "decoded size differs" in report.format()
    assert not diagnose(data, splits, decode=False).stops_training  # not decoded: not found
    assert "corrupt: not checked (use --decode)" in diagnose(data, splits, decode=False).format()


def test_tool_exit_codes(tmp_path, capsys):
    root = tmp_path / "clean"
    write_voc(root, {"a": (20, 20, [("cat", 1, 1, 10, 10, 0)])})
    assert check_dataset.main(["--format", "voc", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "classes (1): cat" in out and "RESULT: no problem stops training (exit code 0)" in out
    assert check_dataset.main(["--format", "voc", "--root", str(tmp_path / "nowhere")]) == 2
    assert "no ImageSets/Main/train.txt, val.txt or test.txt under" in capsys.readouterr().err
    broken = _broken_voc(tmp_path / "broken")
    assert check_dataset.main(["--format", "voc", "--root", str(broken), "--class-names", "cat", "dog"]) == 1
    assert "RESULT: problems above stop training (exit code 1)" in capsys.readouterr().out


def test_class_list_the_coco_file_lacks_is_reported(coco_fixture, capsys):
    image_dir, ann_file = coco_fixture
    code = check_dataset.main(["--format", "coco", "--image-dir", str(image_dir), "--ann-file", str(ann_file),
                               "--class-names", "cat", "cow"])
    out = capsys.readouterr().out
    assert code == 1 and "class list disagrees with the annotations: configured class names ['cow']" in out


@pytest.mark.data
@needs_bccd()
def test_bccd_split_sizes_and_box_count():
    names = ["RBC", "WBC", "Platelets"]
    sizes = {split: len(VOCDetection(BCCD, split, class_names=names, check_policy="drop"))
             for split in ("train", "val", "test")}
    assert sizes == {"train": 205, "val": 87, "test": 72}
    data, splits = source_config("voc", root=str(BCCD), class_names=names)
    report = diagnose(data, splits, decode=False)
    assert report.totals()["images"] == 364 and report.totals()["boxes"] == 4888
    histogram = {n: sum(s.class_histogram[n] for s in report.splits) for n in names}
    assert histogram == {"RBC": 4155, "WBC": 372, "Platelets": 361}
    test_set = VOCDetection(BCCD, "test", class_names=names)
    image, target = test_set[0]
    assert image.shape == (3, 480, 640) and target["boxes"].min() >= 0 and target["boxes"][:, 2].max() <= 640
    gt = test_set.get_ground_truth(0)
    assert torch.equal(gt["boxes"], target["boxes"])


@pytest.mark.data
@needs_bccd()
def test_bccd_doctor_names_the_two_zero_size_boxes(capsys):
    code = check_dataset.main(["--format", "voc", "--root", str(BCCD), "--no-decode"])
    out = capsys.readouterr().out
    assert code == 1
    assert ("BloodImage_00343.xml, image id 170, object 3: zero-size box: "
            "bndbox (xmin, ymin, xmax, ymax) = (181, 329, 181, 329)") in out
    assert ("BloodImage_00338.xml, image id 68, object 12: zero-size box: "
            "bndbox (xmin, ymin, xmax, ymax) = (504, 337, 504, 337)") in out
    assert "total over 3 splits: images 364 | boxes 4888" in out
    assert out.count("zero-size box:") == 2


def test_tool_reads_a_config_and_its_policy(tmp_path, capsys):
    root = _broken_voc(tmp_path / "voc")
    (root / "JPEGImages" / "corrupt.jpg").unlink()
    write_image(root / "JPEGImages" / "corrupt.jpg", 10, 10)
    config = tmp_path / "cfg.py"
    config.write_text(f"config = dict(data=dict(format='voc', root={str(root)!r}, train=dict(split='train'), "
                      "class_names=['cat', 'dog'], check_policy='drop'))\n")
    assert check_dataset.main(["--config", str(config)]) == 0  # drop handles the zero-size box and the rest
    assert "trainable under check_policy='drop'" in capsys.readouterr().out
    assert check_dataset.main(["--config", str(config), "--check-policy", "raise"]) == 1
    assert check_dataset.main(["--config", str(config), "--set", "data.check_policy=raise"]) == 1


def test_unreadable_yolo_header_is_dropped_by_the_policy_and_the_doctor_agrees(tmp_path):
    from detect.data import YoloDetection

    images = tmp_path / "ds" / "images" / "train"
    write_image(images / "a.jpg", 10, 10)
    (images / "b.jpg").write_bytes(b"not a jpeg")  # its header cannot be read at load time
    (tmp_path / "ds" / "labels" / "train").mkdir(parents=True)
    (tmp_path / "ds" / "labels" / "train" / "a.txt").write_text("")  # a background image (no label file at all is a path mistake)
    for policy, trainable in (("raise", False), ("drop", True), ("clip", True)):
        data, splits = source_config("yolo", image_dir=str(images), class_names=["cat"], check_policy=policy)
        report = diagnose(data, splits, decode=True)
        assert report.stops_training is not trainable, policy
        split = report.splits[0]
        assert [p.kind for p in split.problems] == ["unreadable_image"]  # once: the decoder skips it
        assert split.counts["corrupt_images"] == 1
    assert len(YoloDetection(images, class_names=["cat"], check_policy="drop")) == 1  # what training does


def test_doctor_reports_missing_segmentation_masks_and_lists_each_folder_once(tmp_path, monkeypatch):
    import os
    from collections import Counter

    from PIL import Image

    write_voc(tmp_path, {"s": (6, 8, [("cat", 1, 1, 4, 4, 0)]), "t": (6, 8, [])})
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "train.txt").write_text("s\nt\n")
    (tmp_path / "SegmentationClass").mkdir()
    Image.fromarray(np.zeros((6, 8), np.uint8), mode="P").save(tmp_path / "SegmentationClass" / "s.png")
    data = {"format": "voc", "root": str(tmp_path), "class_names": "derive", "masks": True, "train": {"split": "train"}}
    listed = Counter()
    real_scandir = os.scandir

    def counting_scandir(path="."):
        listed[os.path.basename(os.fspath(path))] += 1
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", counting_scandir)
    report = diagnose(data, ["train"], decode=False)
    assert listed["JPEGImages"] == 1 and listed["SegmentationClass"] == 1
    text = report.format()
    assert "t.xml, image id 1: image file missing: segmentation mask" in text and "t.png does not exist" in text
    assert report.stops_training
    data["check_policy"] = "drop"
    assert not diagnose(data, ["train"], decode=False).stops_training
    listed.clear()
    ds = VOCDetection(tmp_path, "train", class_names="derive", masks=True, check_policy="drop")
    assert len(ds) == 1 and listed["JPEGImages"] == 1 and listed["SegmentationClass"] == 1
