"""Issue 8: encodings, YOLO label lookup, COCO id types, missing paths, --data layouts,
one class-name rule, seeded validation splits, recipe format switch, doctor image sizes."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from data_fixtures import needs_bccd, BCCD, write_coco, write_image, write_voc
from detect.data.checks import DataPathError, DatasetError

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- 1. encodings

def test_coco_json_not_utf8_names_file_and_offset_and_bom_is_accepted(tmp_path):
    from detect.data.coco import CocoDetection

    image_dir, ann_file = write_coco(tmp_path, [(1, "a.png", 10, 10)], [], [(1, "caf\u00e9")])
    text = json.dumps(json.loads(ann_file.read_text()), ensure_ascii=False)  # a literal é, not \\u00e9
    ann_file.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # BOM (Notepad)
    assert CocoDetection(image_dir, ann_file).class_names == ["caf\u00e9"]
    latin = text.encode("latin-1")
    ann_file.write_bytes(latin)
    with pytest.raises(DatasetError) as info:
        CocoDetection(image_dir, ann_file)
    message = str(info.value)
    offset = latin.index(bytes([0xE9]))
    assert str(ann_file) in message and f"byte offset {offset}" in message
    assert "b'\\xe9'" in message and "UTF-8" in message


def _yolo_set(root: Path, labels: dict, names=("cat",), images_folder="images") -> Path:
    """root/<images_folder>/train/<stem>.jpg + labels by the ultralytics rule; labels: stem -> text or None."""
    for stem, text in labels.items():
        write_image(root / images_folder / "train" / f"{stem}.jpg", 20, 30)
        if text is not None:
            label = root / "labels" / "train" / f"{stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_bytes(text if isinstance(text, bytes) else text.encode())
    (root / "classes.txt").write_text("\n".join(names))
    return root / images_folder / "train"


def test_yolo_label_not_utf8_is_a_problem_naming_file_offset_and_image(tmp_path):
    from detect.data.yolo_labels import YoloDetection

    images = _yolo_set(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n", "b": b"\xef\xbb\xbf0 0.5 0.5 0.4 0.4\n",
                                  "c": b"0 0.5 0.5 0.2 0.2 # \xff\n"})
    with pytest.raises(DatasetError) as info:
        YoloDetection(images)
    message = str(info.value)
    assert "c.txt, image id 2: file is not UTF-8 text: byte b'\\xff' at byte offset 20" in message
    ds = YoloDetection(images, check_policy="drop")  # the BOM file reads; the bad one's image is dropped
    assert len(ds) == 2 and ds.get_ground_truth(1)["boxes"].tolist() == [[9.0, 6.0, 21.0, 14.0]]


def test_voc_xml_not_utf8_is_a_bad_annotation_file(tmp_path):
    from detect.data.voc import VOCDetection

    write_voc(tmp_path, {"a": (10, 10, [("cat", 1, 1, 5, 5, 0)])})
    xml = tmp_path / "Annotations" / "a.xml"
    xml.write_bytes(xml.read_bytes().replace(b"cat", b"c\xe9t"))  # latin-1 without an encoding declaration
    with pytest.raises(DatasetError, match=r"a\.xml, image id 0: annotation file cannot be parsed: not well-formed"):
        VOCDetection(tmp_path, "train", class_names=["cat"])


# ---------------------------------------------------------------- 2. YOLO label lookup

def test_yolo_all_labels_missing_stops_and_names_the_folders(tmp_path):
    from detect.data.yolo_labels import YoloDetection

    images = _yolo_set(tmp_path, {"a": None, "b": None})
    with pytest.raises(DatasetError) as info:
        YoloDetection(images)
    message = str(info.value)
    assert "0 of 2 images have a label file" in message
    assert str(tmp_path / "labels" / "train") in message and str(images) in message  # both rules searched
    assert "label_dir" in message


def test_yolo_nearly_all_missing_from_ten_images_but_some_missing_is_background(tmp_path):
    from detect.data.yolo_labels import YoloDetection

    stems = {f"i{k:02d}": None for k in range(20)}
    stems["i00"] = "0 0.5 0.5 0.2 0.2\n"  # 1 of 20 = 5% < 10%
    with pytest.raises(DatasetError, match="1 of 20 images have a label file"):
        YoloDetection(_yolo_set(tmp_path / "few", stems))
    stems["i01"] = ""  # 2 of 20 = 10%: a mostly-background set, trains
    ds = YoloDetection(_yolo_set(tmp_path / "ok", stems))
    assert len(ds) == 20 and ds.get_ground_truth(0)["boxes"].shape == (1, 4)


def test_yolo_images_outside_an_images_folder_find_labels_beside_them(tmp_path):
    from detect.data.yolo_labels import YoloDetection

    pics = tmp_path / "pics"
    write_image(pics / "a.jpg", 20, 30)
    (pics / "a.txt").write_text("0 0.5 0.5 0.2 0.5\n")
    (tmp_path / "classes.txt").write_text("cat\n")
    ds = YoloDetection(pics)
    assert ds.get_ground_truth(0)["boxes"].tolist() == [[12.0, 5.0, 18.0, 15.0]]


# ---------------------------------------------------------------- 3. COCO id types

def test_coco_numeric_string_ids_are_ints_and_other_strings_are_refused(tmp_path):
    from detect.data.coco import CocoDetection

    image_dir, ann_file = write_coco(tmp_path, [(1, "a.png", 20, 20), (2, "b.png", 20, 20)], [], [(1, "cat")])
    data = json.loads(ann_file.read_text())
    data["images"][0]["id"], data["images"][1]["id"] = "1", "40"
    data["categories"][0]["id"] = "1"
    data["annotations"] = [{"id": 1, "image_id": "40", "category_id": "1", "bbox": [1, 2, 3, 4], "iscrowd": 0}]
    ann_file.write_text(json.dumps(data))
    ds = CocoDetection(image_dir, ann_file)
    assert ds.image_ids == [1, 40] and ds.get_ground_truth(1)["labels"].tolist() == [1]
    data["images"][1]["id"] = "img-40"
    ann_file.write_text(json.dumps(data))
    with pytest.raises(DatasetError) as info:
        CocoDetection(image_dir, ann_file)
    assert "image 'b.png' has id 'img-40' (a str); image ids must be integers" in str(info.value)


def test_coco_unknown_category_message_names_the_type(tmp_path):
    from detect.data.coco import CocoDetection

    image_dir, ann_file = write_coco(tmp_path, [(1, "a.png", 20, 20)], [
        {"id": 1, "image_id": 1, "category_id": "one", "bbox": [1, 2, 3, 4], "iscrowd": 0}], [(1, "cat")])
    with pytest.raises(DatasetError) as info:
        CocoDetection(image_dir, ann_file)
    assert "category_id 'one' (a str; category ids must be integers" in str(info.value)


# ---------------------------------------------------------------- 4. missing paths

@pytest.mark.parametrize("fmt", ["voc", "coco", "yolo"])
def test_missing_paths_raise_dataset_errors_saying_how_to_point_at_data(tmp_path, fmt):
    from detect.data.build import build_dataset

    gone = tmp_path / "moved"
    split = {"voc": {"split": "train"}, "coco": {"image_dir": str(tmp_path), "ann_file": str(gone / "i.json")},
             "yolo": {"image_dir": str(gone / "images")}}[fmt]
    data = {"format": fmt, "root": str(gone), "class_names": ["cat"], "train": split}
    with pytest.raises(DataPathError) as info:
        build_dataset(data, "train")
    assert isinstance(info.value, DatasetError) and isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    assert str(gone) in message and "does not exist" in message and "--data PATH" in message and "--set data." in message


# ---------------------------------------------------------------- 5. layouts, class names, splits, recipes

def _voc_train_test(root: Path) -> Path:
    write_voc(root, {f"t{k}": (20, 20, [("dog" if k % 2 else "cat", 1, 1, 8, 8, 0)]) for k in range(20)}, split="train")
    write_voc(root, {f"x{k}": (20, 20, [("bird", 2, 2, 9, 9, 0)]) for k in range(3)}, split="test")
    return root


def test_detect_layout_voc_with_only_train_and_test(tmp_path):
    from detect.data.sources import detect_layout

    root = _voc_train_test(tmp_path / "VOCdevkit" / "VOC2007")
    expected = {"format": "voc", "root": str(root), "train": {"split": "train"}, "test": {"split": "test"}}
    assert detect_layout(root) == expected
    assert detect_layout(tmp_path / "VOCdevkit") == expected  # one sub-folder holding the VOC root


def test_detect_layout_coco_json_without_split_and_pycocotools_folders(tmp_path):
    from detect.data.sources import detect_layout

    image_dir, ann_file = write_coco(tmp_path / "mine", [(1, "a.png", 20, 20)], [], [(1, "cat")], name="labels.json")
    assert detect_layout(ann_file) == {"format": "coco", "class_names": None,
                                       "train": {"image_dir": str(image_dir), "ann_file": str(ann_file)}}
    coco = tmp_path / "coco"
    write_coco(coco / "annotations", [(1, "a.png", 20, 20)], [], [(1, "cat")], name="instances_val2017.json")
    write_image(coco / "val2017" / "a.png", 20, 20)
    (coco / "annotations" / "images").rename(coco / "annotations" / "unused")
    layout = detect_layout(coco)
    assert layout["train"] == {"image_dir": str(coco / "val2017"), "ann_file": str(coco / "annotations" / "instances_val2017.json")}


def test_detect_layout_yolo_data_yaml_and_images_labels(tmp_path):
    from detect.data.sources import derive_class_names, detect_layout

    _yolo_set(tmp_path / "y", {"a": "1 0.5 0.5 0.2 0.2\n"}, names=())
    write_image(tmp_path / "y" / "images" / "val" / "v.jpg", 20, 30)
    (tmp_path / "y" / "classes.txt").unlink()
    layout = detect_layout(tmp_path / "y")
    assert layout == {"format": "yolo", "class_names": None, "train": {"image_dir": str(tmp_path / "y/images/train")},
                      "val": {"image_dir": str(tmp_path / "y/images/val")}}
    assert derive_class_names(layout) == ["class_0", "class_1"]  # no names anywhere: numbered to the largest index
    (tmp_path / "y" / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n")
    layout = detect_layout(tmp_path / "y" / "data.yaml")
    assert layout["train"] == {"image_dir": str(tmp_path / "y/images/train")} and "test" not in layout
    assert derive_class_names(layout) == ["cat", "dog"]


def test_unknown_layout_lists_what_was_looked_for(tmp_path):
    from detect.data.sources import detect_layout

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError) as info:
        detect_layout(tmp_path)
    message = str(info.value)
    assert "VOC:" in message and "YOLO:" in message and "COCO:" in message and "Annotations" in message
    with pytest.raises(DataPathError):
        detect_layout(tmp_path / "nowhere")


def test_class_names_agree_between_build_doctor_and_convert(tmp_path):
    from detect.data.build import build_dataset
    from detect.data.convert import voc_to_coco
    from detect.data.doctor import diagnose, source_config
    from detect.data.sources import derive_class_names, detect_layout

    root = _voc_train_test(tmp_path / "voc")
    data = detect_layout(root)
    derived = derive_class_names(data)
    assert derived == ["cat", "dog"]  # the train split's names; "bird" (test only) is not a class
    assert build_dataset(data, "train").class_names == derived
    doctor_data, splits = source_config("voc", root=str(root))
    report = diagnose(doctor_data, splits, decode=False)
    assert [s.class_names for s in report.splits] == [derived, derived]
    voc_to_coco(root, "test", tmp_path / "test.json", check_policy="drop")  # bird objects: unknown, dropped
    assert [c["name"] for c in json.loads((tmp_path / "test.json").read_text())["categories"]] == derived


def test_seeded_val_split_is_deterministic_disjoint_and_leaves_test_alone(tmp_path):
    from detect.data.build import build_dataset
    from detect.data.sources import apply_data_path

    root = _voc_train_test(tmp_path / "voc")
    notes = []
    config = apply_data_path({"model": {"num_classes": None}, "data": {"batch_size": 3}}, root, notes=notes)
    again = apply_data_path({"model": {"num_classes": None}, "data": {"batch_size": 3}}, root)
    data = config["data"]
    assert data == again["data"]
    train, val = data["train"]["images"], data["val"]["images"]
    assert len(val) == 2 and len(train) == 18 and not set(train) & set(val)
    assert sorted(train + val) == sorted(f"t{k}.jpg" for k in range(20))
    assert data["test"] == {"split": "test"} and data["batch_size"] == 3
    assert config["model"]["num_classes"] == 2
    assert any("2 of 20 training images (seed 0) moved to data.val.images" in n for n in notes)
    val_set = build_dataset(data, "val")
    assert len(val_set) == 2 and val_set.class_names == ["cat", "dog"]
    assert [Path(val_set.get_image_info(i)["file_name"]).name for i in range(2)] == val
    other = apply_data_path({"data": {}}, root, seed=1)["data"]["val"]["images"]
    assert other != val  # the seed matters


def test_recipe_format_switch_keeps_loading_keys_and_drops_source_keys(tmp_path):
    sys.path.insert(0, str(ROOT))
    from detect.config import load_config
    from detect.data.build import build_dataset
    from detect.data.sources import FORMAT_INDEPENDENT_KEYS, apply_data_path

    recipe = load_config(ROOT / "configs" / "faster_rcnn" / "shapes_demo.py")
    root = _voc_train_test(tmp_path / "voc")
    (root / "ImageSets" / "Main" / "val.txt").write_text("t0\nt1\n")
    notes = []
    config = apply_data_path(recipe, root, notes=notes)
    data = config["data"]
    assert recipe["data"]["format"] == "shapes"  # the input is not modified
    assert data["format"] == "voc" and data["root"] == str(root) and "shapes" not in data
    assert data["val"] == {"split": "val"} and data["class_names"] == ["cat", "dog"]
    for key in ("batch_size", "num_workers", "aspect_ratio_grouping"):
        assert key in FORMAT_INDEPENDENT_KEYS and data[key] == recipe["data"][key]
    assert config["model"]["num_classes"] == 2 and config["model"]["backbone"] == "resnet18"
    assert "'shapes'" in notes[0] and "'root'" in notes[0]
    assert len(build_dataset(data, "val")) == 2


# ---------------------------------------------------------------- 6. doctor: image sizes, grayscale

def test_doctor_reports_image_sizes_and_grayscale_images(tmp_path):
    import cv2

    from detect.data.doctor import diagnose, source_config

    write_voc(tmp_path, {"a": (10, 40, [("cat", 1, 1, 5, 5, 0)]), "b": (30, 20, []), "c": (20, 60, [])})
    cv2.imwrite(str(tmp_path / "JPEGImages" / "b.jpg"), np.full((30, 20), 128, np.uint8))  # single channel
    data, splits = source_config("voc", root=str(tmp_path))
    split = diagnose(data, splits, decode=True).splits[0]
    assert split.image_stats["width"] == [20.0, 40.0, 60.0] and split.image_stats["height"] == [10.0, 20.0, 30.0]
    assert split.image_stats["grayscale"] == [str(tmp_path / "JPEGImages" / "b.jpg")]
    text = split.format()
    assert "  width                    20     40     60" in text and "grayscale images: 1 (read as 3 identical" in text
    assert "grayscale images: not checked" in diagnose(data, splits, decode=False).splits[0].format()


def test_check_dataset_and_convert_take_data_path(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    import check_dataset
    import convert_dataset

    root = _voc_train_test(tmp_path / "voc")
    assert check_dataset.main(["--data", str(root), "--no-decode", "--check-policy", "drop"]) == 0
    out = capsys.readouterr().out
    assert "== train:" in out and "== test:" in out and "classes (2): cat, dog" in out
    assert convert_dataset.main(["--data", str(root), "--out-dir", str(tmp_path / "out"), "--split", "train"]) == 0
    written = json.loads((tmp_path / "out" / "train.json").read_text())
    assert len(written["images"]) == 20 and [c["name"] for c in written["categories"]] == ["cat", "dog"]


@needs_bccd()
def test_bccd_layout_and_derived_classes():
    from detect.data.sources import derive_class_names, detect_layout

    layout = detect_layout(BCCD)
    assert layout["format"] == "voc" and set(layout) >= {"train", "val", "test"}
    assert derive_class_names(layout) == ["Platelets", "RBC", "WBC"]


# ---------------------------------------------------------------- 7. the "yolo" augmentation preset

def test_yolo_preset_boxes_follow_a_drawn_rectangle_and_stay_inside_the_image():
    from detect.data.transforms import build_transforms

    height, width = 60, 80
    image = np.zeros((height, width, 3), np.uint8)
    image[20:40, 50:70] = (255, 0, 0)  # the box [50, 20, 70, 40] drawn in red
    t = build_transforms("yolo")
    kept = 0
    for seed in range(30):
        t.set_seed(seed)
        out, boxes, labels, _ = t(image, np.array([[50, 20, 70, 40]], np.float32), np.array([1]))
        assert out.shape == image.shape
        assert ((boxes >= 0) & (boxes <= [width, height, width, height])).all()
        red = (out[..., 0].astype(int) - out[..., 2].astype(int)) > 100
        if not boxes.shape[0]:
            assert red.sum() < 0.2 * 400 + 40  # dropped only when (nearly) out of the frame
            continue
        kept += 1
        ys, xs = np.nonzero(red)
        assert np.abs(boxes[0] - [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).max() <= 1.5
    assert kept >= 20


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
def test_seeded_split_is_honoured_by_build_dataset_for_coco_and_yolo(tmp_path, fmt):
    from detect.data.build import build_dataset
    from detect.data.sources import apply_data_path

    if fmt == "coco":
        images = [(k, f"sub/i{k}.png", 10, 10) for k in range(12)]
        anns = [{"id": k + 1, "image_id": k, "category_id": 1, "bbox": [1, 1, 4, 4], "iscrowd": 0} for k in range(12)]
        _, path = write_coco(tmp_path, images, anns, [(1, "cat")])
    else:
        _yolo_set(tmp_path, {f"i{k}": "0 0.5 0.5 0.2 0.2\n" for k in range(12)})
        path = tmp_path
    config = apply_data_path({"model": {}, "data": {}}, path)
    data = config["data"]
    assert len(data["val"]["images"]) == 1 and len(data["train"]["images"]) == 11
    train, val = build_dataset(data, "train"), build_dataset(data, "val")
    assert len(train) == 11 and len(val) == 1 and config["model"]["num_classes"] == 1
    names = {train.get_image_info(i)["file_name"] for i in range(11)}
    assert Path(val.get_image_info(0)["file_name"]).name not in {Path(n).name for n in names}
    with pytest.raises(DatasetError, match="listed image 'gone.png' is not in this split"):
        build_dataset({**data, "val": {**data["val"], "images": ["gone.png"]}}, "val")
