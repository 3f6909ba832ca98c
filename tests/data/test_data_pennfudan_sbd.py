"""The PennFudan and SBD readers on tiny generated folders (and PennFudan on the real copy
when ../shared/data holds it): boxes, masks, splits, layout detection, the doctor."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_fixtures import write_image
from detect.data.build import build_dataset
from detect.data.checks import DataPathError, DatasetError, MaskError
from detect.data.doctor import diagnose, diagnose_annotations
from detect.data.pennfudan import PennFudanDataset, parse_pennfudan
from detect.data.sbd import SBDSegmentation, seg11valid_ids, write_seg11valid
from detect.data.sources import apply_data_path, detect_layout, seeded_val_split
from detect.data.voc import VOC_CLASSES
from detect.errors import UserInputError

PENNFUDAN = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "PennFudanPed"

ANNOTATION = (
    '# Compatible with PASCAL Annotation Version 1.00\r\n'
    'Image filename : "PennFudanPed/PNGImages/{stem}.png"\r\n'
    'Image size (X x Y x C) : {width} x {height} x 3\r\n'
    'Database : "The Penn-Fudan-Pedestrian Database"\r\n'
    'Objects with ground truth : {count} {{ {names} }}\r\n'
    '# Top left pixel co-ordinates : (1, 1)\r\n'
)
OBJECT = (
    '# Details for pedestrian {k} ("{name}")\r\n'
    'Original label for object {k} "{name}" : "PennFudanPed"\r\n'
    'Bounding box for object {k} "{name}" (Xmin, Ymin) - (Xmax, Ymax) : ({x1}, {y1}) - ({x2}, {y2})\r\n'
    'Pixel mask for object {k} "{name}" : "PennFudanPed/PedMasks/{stem}_mask.png"\r\n\r\n'
)


def write_pennfudan(root: Path, images: dict) -> Path:
    """images: {stem: (height, width, [(xmin, ymin, xmax, ymax) 1-based inclusive, ...])}; instance
    k's mask fills its box exactly."""
    for sub in ("PNGImages", "PedMasks", "Annotation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for stem, (height, width, boxes) in images.items():
        write_image(root / "PNGImages" / f"{stem}.png", height, width)
        instances = np.zeros((height, width), np.uint8)
        text = ANNOTATION.format(stem=stem, width=width, height=height, count=len(boxes),
                                 names=" ".join('"PASpersonWalking"' for _ in boxes))
        for k, (x1, y1, x2, y2) in enumerate(boxes, 1):
            instances[y1 - 1:y2, x1 - 1:x2] = k
            name = "PASpersonStanding" if k % 2 == 0 else "PASpersonWalking"
            text += OBJECT.format(k=k, name=name, x1=x1, y1=y1, x2=x2, y2=y2, stem=stem)
        Image.fromarray(instances, mode="L").save(root / "PedMasks" / f"{stem}_mask.png")
        (root / "Annotation" / f"{stem}.txt").write_bytes(text.encode("ascii"))
    return root


FIVE = {
    "FudanPed00001": (20, 30, [(3, 2, 10, 15), (12, 4, 20, 18)]),
    "FudanPed00002": (24, 20, [(1, 1, 20, 24)]),
    "PennPed00001": (16, 16, [(5, 5, 8, 12)]),
    "PennPed00002": (18, 22, [(2, 3, 6, 9), (8, 3, 12, 9), (14, 3, 18, 9)]),
    "PennPed00003": (10, 12, [(1, 2, 3, 4)]),
}


@pytest.fixture
def pennfudan(tmp_path):
    return write_pennfudan(tmp_path / "PennFudanPed", FIVE)


def test_pennfudan_boxes_labels_and_semantic_masks(pennfudan):
    ds = PennFudanDataset(pennfudan, "all", masks=True)
    assert len(ds) == 5 and ds.class_names == ["person"] and ds.image_ids == [0, 1, 2, 3, 4]
    image, target = ds[0]
    assert image.shape == (3, 20, 30) and target["image_id"] == 0
    # 1-based inclusive (3, 2) - (10, 15) is the continuous (2, 1, 10, 15)
    assert target["boxes"].tolist() == [[2, 1, 10, 15], [11, 3, 20, 18]] and target["labels"].tolist() == [1, 1]
    expected = np.zeros((20, 30), np.int64)
    expected[1:15, 2:10] = 1
    expected[3:18, 11:20] = 1
    assert target["masks"].dtype == torch.int64 and torch.equal(target["masks"], torch.from_numpy(expected))
    # the mask of each box's pixels is exactly the box (the instance ids become one class)
    masks = ds[3][1]["masks"]
    assert masks.sum().item() == 3 * 5 * 7 and set(masks.unique().tolist()) == {0, 1}
    assert ds.annotations.raw_categories.tolist().count("PASpersonStanding") == 2  # objects 2 of two images
    assert "masks" not in PennFudanDataset(pennfudan, "all")[0][1]  # masks only when asked


def test_pennfudan_seeded_split_is_deterministic_disjoint_and_keeps_global_ids(pennfudan):
    names = sorted(f"{s}.png" for s in FIVE)
    expected_train, expected_val = seeded_val_split(names, fraction=0.4, seed=3)
    train = PennFudanDataset(pennfudan, "train", val_fraction=0.4, split_seed=3)
    val = PennFudanDataset(pennfudan, "val", val_fraction=0.4, split_seed=3)
    assert [Path(p).name for p in train.annotations.file_paths] == expected_train
    assert [Path(p).name for p in val.annotations.file_paths] == expected_val
    assert len(val) == 2 and len(train) == 3
    assert sorted(train.image_ids + val.image_ids) == [0, 1, 2, 3, 4]  # ids index the sorted list of all images
    assert [names[i] for i in val.image_ids] == expected_val
    again = PennFudanDataset(pennfudan, "val", val_fraction=0.4, split_seed=3)
    assert again.image_ids == val.image_ids
    assert len(PennFudanDataset(pennfudan, "val")) == 1  # default 20% of 5
    with pytest.raises(ValueError, match="PennFudan split is 'test'"):
        PennFudanDataset(pennfudan, "test")
    with pytest.raises(ValueError, match="one class"):
        PennFudanDataset(pennfudan, class_names=["pedestrian", "car"])


def test_pennfudan_is_detected_and_built_from_a_data_path(pennfudan):
    assert detect_layout(pennfudan) == {"format": "pennfudan", "root": str(pennfudan), "train": {"split": "train"},
                                        "val": {"split": "val"}, "class_names": None}
    recipe = {"data": {"format": "shapes", "root": "/nowhere", "masks": True, "batch_size": 4,
                       "transforms": {"train": {"name": "seg_shapes", "crop_size": 16}, "val": "eval"}},
              "model": {"num_classes": 3}}
    config = apply_data_path(recipe, pennfudan)
    assert config["model"]["num_classes"] == 1 and config["data"]["class_names"] == ["person"]
    train, val = build_dataset(config["data"], "train"), build_dataset(config["data"], "val")
    assert isinstance(train, PennFudanDataset) and (len(train), len(val)) == (4, 1)
    torch.manual_seed(0)
    image, target = train[0]
    assert image.shape == (3, 16, 16) and target["masks"].shape == (16, 16)
    assert set(target["masks"].unique().tolist()) <= {0, 1, 255}
    config["data"]["val_fraction"] = 0.4  # a data-level option of the format
    assert len(build_dataset(config["data"], "val")) == 2


def test_pennfudan_problems_name_the_file_and_image(pennfudan):
    (pennfudan / "PedMasks" / "PennPed00003_mask.png").unlink()
    (pennfudan / "Annotation" / "PennPed00001.txt").unlink()
    with pytest.raises(DatasetError) as info:
        PennFudanDataset(pennfudan, "all", masks=True)
    problems = sorted((p.kind, p.image_id) for p in info.value.problems)
    assert problems == [("bad_annotation_file", 2), ("missing_image", 4)]
    assert "PennPed00003_mask.png does not exist" in str(info.value)
    ds = PennFudanDataset(pennfudan, "all", masks=True, check_policy="drop")
    assert ds.image_ids == [0, 1, 3]


def test_doctor_compares_pennfudan_masks_with_their_boxes(pennfudan):
    instances = np.asarray(Image.open(pennfudan / "PedMasks" / "FudanPed00001_mask.png")).copy()
    instances[1:15, 10:13] = 1  # instance 1 now reaches 3 px beyond its box (x2 10 -> 13)
    Image.fromarray(instances, mode="L").save(pennfudan / "PedMasks" / "FudanPed00001_mask.png")
    extra = np.asarray(Image.open(pennfudan / "PedMasks" / "PennPed00001_mask.png")).copy()
    extra[0, 0] = 2  # an instance id the annotation does not list
    Image.fromarray(extra, mode="L").save(pennfudan / "PedMasks" / "PennPed00001_mask.png")
    Image.fromarray(np.zeros((9, 12), np.uint8), mode="L").save(pennfudan / "PedMasks" / "PennPed00003_mask.png")
    report = diagnose_annotations(parse_pennfudan(pennfudan, "all"), name="all", decode=True)
    found = sorted((p.kind, p.image_id, p.annotation_index, p.severity) for p in report.problems)
    assert found == [("mask_box_mismatch", 0, 0, "warning"), ("mask_box_mismatch", 2, None, "warning"),
                     ("mask_size_mismatch", 4, None, "error")]
    text = report.format()
    assert ("FudanPed00001.txt, image id 0, object 0: mask and box disagree: box [2.0, 1.0, 10.0, 15.0] vs mask extent "
            "[2.0, 1.0, 13.0, 15.0] of instance 1 (continuous xyxy; 3 px apart)") in text
    assert "PennPed00001_mask.png, image id 2: mask and box disagree: instance ids [1, 2] but the annotation lists 1" in text
    assert "PennPed00003_mask.png, image id 4: mask size differs from the image: mask is 12x9 (w x h) but its image is 12x10" in text
    assert len(report.blocking) == 1  # warnings never stop training; the wrong size would
    with pytest.raises(MaskError, match=r"PennPed00003_mask\.png, image id 4: mask size differs"):
        PennFudanDataset(pennfudan, "all", masks=True)[4]


@pytest.mark.data
@pytest.mark.skipif(not (PENNFUDAN / "PNGImages").is_dir(), reason=f"PennFudanPed not found at {PENNFUDAN}")
def test_real_pennfudan_subset():
    train, val = PennFudanDataset(PENNFUDAN, "train", masks=True), PennFudanDataset(PENNFUDAN, "val", masks=True)
    assert (len(train), len(val)) == (80, 20) and not set(train.image_ids) & set(val.image_ids)
    assert train.annotations.num_objects + val.annotations.num_objects == 245  # SOURCE.md: 245 pedestrians
    report = diagnose({"format": "pennfudan", "root": str(PENNFUDAN), "all": {"split": "all"}}, ["all"], decode=True)
    problems = report.splits[0].problems
    # SOURCE.md's two loose boxes: PennPed00019 object 6 (3 px) and PennPed00027 object 1 (6 px)
    assert [(Path(p.file).name, p.annotation_index, p.kind) for p in problems] == [
        ("PennPed00019.txt", 5, "mask_box_mismatch"), ("PennPed00027.txt", 0, "mask_box_mismatch")]
    assert not report.stops_training
    image, target = val[0]
    assert target["masks"].shape == image.shape[1:] and set(target["masks"].unique().tolist()) == {0, 1}


# ----------------------------------------------------------------- SBD

def _savemat_cls(path: Path, segmentation: np.ndarray) -> None:
    from scipy.io import savemat

    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"GTcls": {"Segmentation": segmentation, "Boundaries": np.zeros(1),
                                  "CategoriesPresent": np.unique(segmentation[segmentation > 0])}})


def write_sbd(root: Path, masks: dict, splits: dict) -> Path:
    """masks: {id: uint8 [H, W]}; splits: {name: [ids]}; img/<id>.jpg of the masks' sizes."""
    for image_id, segmentation in masks.items():
        write_image(root / "img" / f"{image_id}.jpg", *segmentation.shape)
        _savemat_cls(root / "cls" / f"{image_id}.mat", segmentation)
    for name, ids in splits.items():
        (root / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def _seg(height, width, label, box):
    seg = np.zeros((height, width), np.uint8)
    y1, y2, x1, x2 = box
    seg[y1:y2, x1:x2] = label
    return seg


@pytest.fixture
def sbd(tmp_path):
    masks = {"2008_000002": _seg(12, 16, 15, (2, 8, 3, 9)), "2008_000003": _seg(10, 14, 7, (0, 5, 0, 7)),
             "2008_000007": _seg(8, 8, 20, (1, 3, 1, 3)), "2008_000009": _seg(9, 11, 1, (4, 9, 2, 11))}
    masks["2008_000003"][6:8, 8:10] = 12
    root = write_sbd(tmp_path / "benchmark_RELEASE" / "dataset", masks,
                     {"train": ["2008_000002", "2008_000003"], "val": ["2008_000007", "2008_000009"]})
    return root, masks


def test_sbd_reads_gtcls_segmentation_exactly(sbd):
    root, masks = sbd
    ds = SBDSegmentation(root, "train")
    assert ds.class_names == list(VOC_CLASSES) and len(ds) == 2 and ds.image_ids == [0, 1]
    for index, image_id in enumerate(["2008_000002", "2008_000003"]):
        image, target = ds[index]
        assert image.shape[1:] == masks[image_id].shape and target["boxes"].shape == (0, 4)
        assert target["labels"].shape == (0,) and target["masks"].dtype == torch.int64
        assert torch.equal(target["masks"], torch.from_numpy(masks[image_id].astype(np.int64)))
    assert SBDSegmentation(root, "val")[1][1]["masks"].sum().item() == 5 * 9 * 1


def test_sbd_seg11valid_from_its_file_and_computed_from_voc(sbd, tmp_path):
    root, masks = sbd
    with pytest.raises(DataPathError, match="seg11valid is computed from VOC2011 when voc_root="):
        SBDSegmentation(root, "seg11valid")
    voc = tmp_path / "VOC2011"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    # VOC2011 seg val: one SBD train image (left out), one SBD val image, one SBD lacks
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2008_000002\n2008_000007\n2007_000033\n")
    assert seg11valid_ids(voc, root) == ["2008_000007", "2007_000033"]
    for image_id, (height, width) in {"2008_000007": (8, 8), "2007_000033": (6, 5)}.items():
        write_image(voc / "JPEGImages" / f"{image_id}.jpg", height, width)
        voc_mask = np.full((height, width), 3, np.uint8)
        voc_mask[0] = 255  # VOC's border
        (voc / "SegmentationClass").mkdir(exist_ok=True)
        png = Image.fromarray(voc_mask, mode="P")
        png.putpalette(list(range(256)) * 3)  # a full palette: PNG keeps every index as written
        png.save(voc / "SegmentationClass" / f"{image_id}.png")
    from_voc = SBDSegmentation(root, "seg11valid", voc_root=voc)
    assert len(from_voc) == 2 and Path(from_voc.annotations.file_paths[1]).parent == voc / "JPEGImages"
    target = from_voc[1][1]["masks"]
    assert target.shape == (6, 5) and (target[0] == 255).all() and (target[1:] == 3).all()
    # with the FCN repository's file in the SBD folder, ids come from it, images and masks from SBD
    write_seg11valid(voc, root)
    assert (root / "seg11valid.txt").read_text() == "2008_000007\n2007_000033\n"
    (root / "seg11valid.txt").write_text("2008_000007\n")
    own = SBDSegmentation(root, "seg11valid")
    assert len(own) == 1 and torch.equal(own[0][1]["masks"], torch.from_numpy(masks["2008_000007"].astype(np.int64)))


def test_sbd_problems_and_layout(sbd):
    root, masks = sbd
    (root / "cls" / "2008_000003.mat").unlink()
    with pytest.raises(DatasetError, match=r"train\.txt, image id 1: image file missing: segmentation mask .*2008_000003\.mat"):
        SBDSegmentation(root, "train")
    assert SBDSegmentation(root, "train", check_policy="drop").image_ids == [0]
    bad = masks["2008_000007"].copy()
    bad[0, 0] = 33
    _savemat_cls(root / "cls" / "2008_000007.mat", bad)
    with pytest.raises(UserInputError, match=r"2008_000007\.mat, image id 0: mask value out of range: values 33 \(1 px\)"):
        SBDSegmentation(root, "val")[0]
    from scipy.io import savemat

    savemat(str(root / "cls" / "2008_000009.mat"), {"other": np.zeros(2)})
    with pytest.raises(MaskError, match=r"2008_000009\.mat, image id 1: mask file cannot be read: .*GTcls"):
        SBDSegmentation(root, "val")[1]
    layout = detect_layout(root.parent)  # benchmark_RELEASE: its dataset/ folder is found
    assert layout == {"format": "sbd", "root": str(root), "class_names": None, "train": {"split": "train"},
                      "val": {"split": "val"}}
    report = diagnose({**layout, "check_policy": "drop"}, ["val"], decode=True)
    assert sorted((p.kind, p.image_id) for p in report.splits[0].problems) == [
        ("mask_value_out_of_range", 0), ("unreadable_mask", 1)]
    data = {"format": "sbd", "root": str(root), "val": {"split": "val"}}
    ds = build_dataset({**data, "val": {"split": "val", "images": ["2008_000007.jpg"]}}, "val")
    assert ds.masks and len(ds) == 1  # masks default to True for SBD
    with pytest.raises(ValueError, match="filter_empty=True would remove every SBD image"):
        SBDSegmentation(root, "val", filter_empty=True)


def test_doctor_source_config_for_pennfudan_and_sbd(pennfudan, sbd):
    from detect.data.doctor import source_config

    data, splits = source_config("pennfudan", root=str(pennfudan))
    assert splits == ["train", "val"] and data["train"] == {"split": "train"}
    assert [s.counts["images"] for s in diagnose(data, splits, decode=False).splits] == [4, 1]
    root, _ = sbd
    data, splits = source_config("sbd", root=str(root))
    assert splits == ["train", "val"]
    report = diagnose(data, splits, decode=True)
    assert [s.counts["images"] for s in report.splits] == [2, 2] and not report.stops_training
    with pytest.raises(ValueError, match="--root is required for sbd"):
        source_config("sbd")
