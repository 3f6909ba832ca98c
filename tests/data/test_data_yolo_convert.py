"""YOLO-txt reader and the VOC / YOLO -> COCO converters (read back with CocoDetection)."""
import json

import pytest
import torch

from data_fixtures import write_image, write_voc
from detect.data import CocoDetection, DatasetError, VOCDetection, YoloDetection
from detect.data.convert import voc_to_coco, yolo_to_coco


def _yolo_set(tmp_path):
    images = tmp_path / "ds" / "images" / "train"
    labels = tmp_path / "ds" / "labels" / "train"
    write_image(images / "a.jpg", 40, 80)
    write_image(images / "b.jpg", 20, 20)
    write_image(images / "c.jpg", 10, 10)  # no label file: a background image
    labels.mkdir(parents=True)
    (labels / "a.txt").write_text("0 0.5 0.5 0.25 0.5\n1 0.125 0.25 0.25 0.5\n\n")
    (labels / "b.txt").write_text("1 0.1 0.1 0.3 0.1 0.3 0.4 0.1 0.4\n")  # a polygon line
    return images


def test_normalised_centres_become_pixel_boxes(tmp_path):
    ds = YoloDetection(_yolo_set(tmp_path), class_names=["cat", "dog"])
    assert len(ds) == 3 and ds.label_to_category_id == {1: 1, 2: 2}
    _, a = ds[0]
    assert a["boxes"].tolist() == [[30, 10, 50, 30], [0, 0, 20, 20]] and a["labels"].tolist() == [1, 2]
    _, b = ds[1]
    assert torch.allclose(b["boxes"], torch.tensor([[2.0, 2.0, 6.0, 8.0]])) and b["labels"].tolist() == [2]
    assert ds[2][1]["boxes"].shape == (0, 4)


def test_class_names_from_file_and_errors(tmp_path):
    images = _yolo_set(tmp_path)
    with pytest.raises(ValueError, match="YOLO labels hold class indices only"):
        YoloDetection(images)
    (tmp_path / "ds" / "classes.txt").write_text("cat\ndog\n")
    assert YoloDetection(images).class_names == ["cat", "dog"]
    labels = tmp_path / "ds" / "labels" / "train"
    (labels / "a.txt").write_text("5 0.5 0.5 0.2 0.2\n0 0.5 0.5\n0 x 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DatasetError) as info:
        YoloDetection(images)
    message = str(info.value)
    assert "a.txt, image id 0, line 1: label out of range: class index 5 but the dataset has 2 classes" in message
    assert "a.txt, image id 0, line 2: malformed annotation: 3 fields" in message
    assert "line 3: malformed annotation: '0 x 0.5 0.2 0.2' is not numbers" in message
    dropped = YoloDetection(images, check_policy="drop")
    assert dropped[0][1]["boxes"].tolist() == [[32, 16, 48, 24]]


def test_yolo_to_coco_round_trip(tmp_path):
    images = _yolo_set(tmp_path)
    summary = yolo_to_coco(images, tmp_path / "out.json", class_names=["cat", "dog"])
    assert summary["images"] == 3 and summary["annotations"] == 3
    coco = CocoDetection(images, tmp_path / "out.json")
    yolo = YoloDetection(images, class_names=["cat", "dog"])
    assert coco.class_names == ["cat", "dog"]
    for i in range(3):
        assert torch.allclose(coco[i][1]["boxes"], yolo[i][1]["boxes"])
        assert torch.equal(coco[i][1]["labels"], yolo[i][1]["labels"])


def test_voc_to_coco_round_trip_and_policy(tmp_path):
    write_voc(tmp_path, {"a": (20, 30, [("cat", 1, 1, 10, 10, 0), ("dog", 5, 6, 30, 20, 1)]),
                         "b": (10, 10, [("dog", 3, 3, 3, 7, 0)])})
    with pytest.raises(DatasetError, match="zero-size box"):
        voc_to_coco(tmp_path, "train", tmp_path / "voc.json", class_names="derive")
    summary = voc_to_coco(tmp_path, "train", tmp_path / "voc.json", class_names="derive", check_policy="drop")
    assert summary["annotations"] == 2 and summary["dropped_objects"] == 1
    data = json.loads((tmp_path / "voc.json").read_text())
    assert [a["bbox"] for a in data["annotations"]] == [[0, 0, 10, 10], [4, 5, 26, 15]]
    assert [im["file_name"] for im in data["images"]] == ["a.jpg", "b.jpg"]
    coco = CocoDetection(tmp_path / "JPEGImages", tmp_path / "voc.json")
    voc = VOCDetection(tmp_path, "train", class_names="derive", check_policy="drop")
    assert coco.class_names == voc.class_names == ["cat", "dog"]
    for i in range(2):
        assert torch.equal(coco[i][1]["boxes"], voc[i][1]["boxes"])  # difficult: crowd in COCO, out of training
        assert torch.equal(coco.get_ground_truth(i)["boxes"], voc.get_ground_truth(i)["boxes"])


def test_convert_tool(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    import convert_dataset

    write_voc(tmp_path, {"a": (20, 30, [("cat", 1, 1, 10, 10, 0)]), "b": (10, 10, [("dog", 3, 3, 3, 7, 0)])})
    assert convert_dataset.main(["voc", "--root", str(tmp_path), "--split", "train", "--out",
                                 str(tmp_path / "o.json"), "--class-names", "cat", "dog"]) == 2
    assert "zero-size box" in capsys.readouterr().err
    assert convert_dataset.main(["voc", "--root", str(tmp_path), "--split", "train", "--out",
                                 str(tmp_path / "o.json"), "--class-names", "cat", "dog", "--check-policy", "drop"]) == 0
    assert '"annotations": 1' in capsys.readouterr().out


def _listed_set(root):
    """``root/ds/train.txt`` lists ``images/a.jpg``; labels mirror the list's folder under ``my_labels``."""
    write_image(root / "ds" / "images" / "a.jpg", 20, 40)
    (root / "ds" / "train.txt").write_text("images/a.jpg\n")
    (root / "ds" / "my_labels" / "images").mkdir(parents=True)
    (root / "ds" / "my_labels" / "images" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")


def test_image_list_with_label_dir_under_a_relative_root(tmp_path, monkeypatch):
    _listed_set(tmp_path)
    monkeypatch.chdir(tmp_path)
    for image_dir, label_dir in (("ds/train.txt", "ds/my_labels"), (tmp_path / "ds" / "train.txt", tmp_path / "ds" / "my_labels")):
        ds = YoloDetection(image_dir, class_names=["cat"], label_dir=label_dir)
        assert ds[0][1]["boxes"].tolist() == [[10, 5, 30, 15]], image_dir  # not a background image
        assert ds.annotations.annotation_files[0] == str(tmp_path / "ds" / "my_labels" / "images" / "a.txt")
        assert ds.annotations.file_paths[0] == str(tmp_path / "ds" / "images" / "a.jpg")


def test_missing_listed_image_is_reported_once(tmp_path):
    _listed_set(tmp_path)
    (tmp_path / "ds" / "train.txt").write_text("images/a.jpg\nimages/gone.jpg\n")
    with pytest.raises(DatasetError) as info:
        YoloDetection(tmp_path / "ds" / "train.txt", class_names=["cat"], label_dir=tmp_path / "ds" / "my_labels")
    assert [p.kind for p in info.value.problems] == ["missing_image"]
    assert "gone.jpg does not exist" in str(info.value)
    ds = YoloDetection(tmp_path / "ds" / "train.txt", class_names=["cat"], label_dir=tmp_path / "ds" / "my_labels",
                       check_policy="drop")
    assert len(ds) == 1 and ds.check_counts["dropped_images"] == 1


def test_non_finite_and_huge_class_fields_are_reported(tmp_path):
    images = _yolo_set(tmp_path)
    (tmp_path / "ds" / "labels" / "train" / "a.txt").write_text(
        "nan 0.5 0.5 0.2 0.2\ninf 0.5 0.5 0.2 0.2\n-inf 0.5 0.5 0.2 0.2\n1e30 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DatasetError) as info:
        YoloDetection(images, class_names=["cat", "dog"])
    message = str(info.value)
    assert "a.txt, image id 0, line 1: malformed annotation: class index 'nan' is not an integer" in message
    assert "a.txt, image id 0, line 2: malformed annotation: class index 'inf' is not an integer" in message
    assert "a.txt, image id 0, line 3: malformed annotation: class index '-inf' is not an integer" in message
    assert "a.txt, image id 0, line 4: label out of range: class index 1000000000000000019884624838656" in message
    dropped = YoloDetection(images, class_names=["cat", "dog"], check_policy="drop")
    assert dropped[0][1]["boxes"].tolist() == [[32, 16, 48, 24]] and dropped[0][1]["labels"].tolist() == [1]
