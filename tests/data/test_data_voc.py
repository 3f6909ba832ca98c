"""VOCDetection on hand-written XML: 1-based boxes, difficult, class lists, masks, errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from data_fixtures import write_image, write_voc
from detect.data import VOC_CLASSES, DatasetError, VOCDetection


def test_one_based_inclusive_boxes_become_continuous(tmp_path):
    write_voc(tmp_path, {"img1": (20, 30, [("cat", 1, 1, 10, 10, 0), ("dog", 5, 6, 30, 20, 0)])})
    ds = VOCDetection(tmp_path, "train")
    image, target = ds[0]
    assert image.shape == (3, 20, 30)
    assert target["boxes"].tolist() == [[0, 0, 10, 10], [4, 5, 30, 20]]  # 30x20 = the full width/height
    assert target["labels"].tolist() == [VOC_CLASSES.index("cat") + 1, VOC_CLASSES.index("dog") + 1]
    assert ds.class_names == list(VOC_CLASSES) and ds.label_to_category_id[8] == 8
    assert target["image_id"] == 0 and target["orig_size"].tolist() == [20, 30]


def test_difficult_objects_for_evaluation_only_unless_asked(tmp_path):
    write_voc(tmp_path, {"a": (20, 20, [("cat", 2, 2, 8, 8, 1), ("cat", 3, 3, 9, 9, 0)])})
    ds = VOCDetection(tmp_path, "train", class_names=["cat"])
    assert ds[0][1]["boxes"].tolist() == [[2, 2, 9, 9]]
    gt = ds.get_ground_truth(0)
    assert gt["boxes"].tolist() == [[1, 1, 8, 8], [2, 2, 9, 9]] and gt["difficult"].tolist() == [True, False]
    assert VOCDetection(tmp_path, "train", class_names=["cat"], use_difficult=True)[0][1]["boxes"].shape == (2, 4)
    coco = ds.to_coco()  # difficult -> ignored by COCOeval through iscrowd
    anns = coco.loadAnns(coco.getAnnIds())
    assert [(a["iscrowd"], a.get("difficult", 0), a["bbox"]) for a in anns] == [(1, 1, [1, 1, 7, 7]), (0, 0, [2, 2, 7, 7])]


def test_class_lists_given_derived_and_unknown(tmp_path):
    write_voc(tmp_path, {"a": (20, 20, [("WBC", 1, 1, 5, 5, 0), ("RBC", 2, 2, 6, 6, 0)])})
    derived = VOCDetection(tmp_path, "train", class_names="derive")
    assert derived.class_names == ["RBC", "WBC"] and derived[0][1]["labels"].tolist() == [2, 1]
    given = VOCDetection(tmp_path, "train", class_names=["WBC", "RBC"])
    assert given[0][1]["labels"].tolist() == [1, 2]
    with pytest.raises(DatasetError) as info:
        VOCDetection(tmp_path, "train")  # default: the 20 VOC classes
    message = str(info.value)
    assert "a.xml, image id 0, object 0: unknown category: class name 'WBC' is not in the class list" in message
    assert "Pass class_names=[...]" in message and "'RBC' (1 objects)" in message
    subset = VOCDetection(tmp_path, "train", class_names=["RBC"], check_policy="drop")
    assert subset[0][1]["labels"].tolist() == [1] and subset[0][1]["boxes"].tolist() == [[1, 1, 6, 6]]


def test_zero_size_point_box_and_out_of_image(tmp_path):
    write_voc(tmp_path, {"p": (20, 20, [("cat", 5, 5, 5, 9, 0), ("cat", 3, 3, 9, 9, 0), ("cat", 10, 10, 30, 15, 0),
                                        ("cat", 4, 4, 3, 8, 0)])})
    with pytest.raises(DatasetError) as info:
        VOCDetection(tmp_path, "train", class_names=["cat"])
    message = str(info.value)
    assert "p.xml, image id 0, object 0: zero-size box: bndbox (xmin, ymin, xmax, ymax) = (5, 5, 5, 9)" in message
    assert "object 2: box outside the image: bndbox (xmin, ymin, xmax, ymax) = (10, 10, 30, 15) in a 20x20" in message
    assert "object 3: inverted box" in message
    clipped = VOCDetection(tmp_path, "train", class_names=["cat"], check_policy="clip")
    assert clipped[0][1]["boxes"].tolist() == [[2, 2, 9, 9], [9, 9, 20, 15]]


def test_bad_xml_missing_size_and_missing_split(tmp_path):
    write_voc(tmp_path, {"ok": (12, 14, [("cat", 1, 1, 4, 4, 0)]), "broken": (10, 10, [])}, size=False)
    (tmp_path / "Annotations" / "broken.xml").write_text("<annotation><object>")
    with pytest.raises(DatasetError, match=r"broken\.xml, image id 1: annotation file cannot be parsed"):
        VOCDetection(tmp_path, "train", class_names=["cat"])
    ds = VOCDetection(tmp_path, "train", class_names=["cat"], check_policy="drop")
    assert len(ds) == 1 and ds.get_image_info(0)["height"] == 12 and ds.get_image_info(0)["width"] == 14  # from the header
    with pytest.raises(FileNotFoundError, match=r"val\.txt does not exist; splits there: \['train'\]"):
        VOCDetection(tmp_path, "val")


def test_malformed_object_is_reported(tmp_path):
    write_voc(tmp_path, {"m": (10, 10, [("cat", 1, 1, 4, 4, 0)])})
    xml = tmp_path / "Annotations" / "m.xml"
    xml.write_text(xml.read_text().replace("<xmax>4</xmax>", "<xmax>four</xmax>"))
    with pytest.raises(DatasetError, match=r"m\.xml, image id 0, object 0: malformed annotation: bndbox .*'four'"):
        VOCDetection(tmp_path, "train", class_names=["cat"])


def test_segmentation_masks_from_palette_png(tmp_path):
    write_voc(tmp_path, {"s": (6, 8, [("cat", 1, 1, 4, 4, 0)])})
    seg = tmp_path / "ImageSets" / "Segmentation"
    seg.mkdir(parents=True)
    (seg / "train.txt").write_text("s\n")
    indices = np.zeros((6, 8), np.uint8)
    indices[1:4, 1:4] = 1
    indices[0, :] = 255
    png = Image.fromarray(indices, mode="P")
    png.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
    (tmp_path / "SegmentationClass").mkdir()
    png.save(tmp_path / "SegmentationClass" / "s.png")
    ds = VOCDetection(tmp_path, "train", class_names=["cat"], masks=True)
    mask = ds[0][1]["masks"]
    assert mask.dtype == torch.int64 and torch.equal(mask, torch.from_numpy(indices.astype(np.int64)))


def test_missing_mask_file_is_reported(tmp_path):
    write_voc(tmp_path, {"s": (6, 8, [])})
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "train.txt").write_text("s\n")
    with pytest.raises(DatasetError, match=r"segmentation mask .*s\.png does not exist"):
        VOCDetection(tmp_path, "train", class_names="derive", masks=True)


def test_filename_from_xml_when_id_jpg_absent(tmp_path):
    write_voc(tmp_path, {"x": (10, 10, [])})
    (tmp_path / "JPEGImages" / "x.jpg").unlink()
    write_image(tmp_path / "JPEGImages" / "x.png", 10, 10)
    xml = tmp_path / "Annotations" / "x.xml"
    xml.write_text(xml.read_text().replace("x.jpg", "x.png"))
    ds = VOCDetection(tmp_path, "train", class_names=["cat"])
    assert ds.get_image_info(0)["file_name"].endswith("x.png") and ds[0][0].shape == (3, 10, 10)
