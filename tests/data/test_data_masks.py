"""Semantic masks through the data path: every transform preset keeps them on the image's
pixels, the segmentation presets follow torchvision's recipe, COCO's torchvision-style
masks, and bad masks raise (dataset) or are reported (doctor) naming the file and image."""
import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from data_fixtures import write_coco, write_voc
from detect.data import VOCDetection
from detect.data.checks import MaskError, mask_problems
from detect.data.coco import COCO_VOC_CATEGORY_IDS, CocoDetection
from detect.data.transforms import PRESETS, ShorterSideResize, build_transforms, shorter_side_size
from detect.errors import UserInputError

H, W = 90, 120
SQUARE = (30, 20, 62, 52)  # x1, y1, x2, y2 continuous: a 32 x 32 square


def _scene():
    image = np.full((H, W, 3), 40, np.uint8)
    x1, y1, x2, y2 = SQUARE
    image[y1:y2, x1:x2] = (250, 30, 30)
    mask = np.zeros((H, W), np.uint8)
    mask[y1:y2, x1:x2] = 1
    mask[0:5, :] = 255  # an ignore band, to see that 255 survives
    return image, mask


def _extent(flags):
    ys, xs = np.nonzero(flags)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


# Every name build_transforms accepts, with options that keep the square in view and the
# work small (the big torchvision sizes are tested separately below).
CONFIGURED = {
    "train": dict(name="train"),
    "yolo": dict(name="yolo", translate=0.0),
    "seg_train": dict(name="seg_train", base_size=90, crop_size=None),
    "seg_shapes": dict(name="seg_shapes", crop_size=None),
    "seg_eval": dict(name="seg_eval", base_size=64),
}


def test_every_preset_name_is_covered():
    assert set(CONFIGURED) | {"eval"} == set(PRESETS)
    assert build_transforms("eval") is None and build_transforms(dict(name="seg_eval", base_size=None)) is None


@pytest.mark.parametrize("name", sorted(CONFIGURED))
def test_mask_covers_exactly_the_square_after_flip_and_scale(name):
    image, mask = _scene()
    transform = build_transforms(CONFIGURED[name])
    flipped = sizes = 0
    seen_sizes = set()
    for seed in range(12):
        transform.set_seed(seed)
        out_image, boxes, labels, out_mask = transform(image, np.array([SQUARE], np.float32), np.array([1]), mask)
        assert out_mask.shape == out_image.shape[:2] and out_mask.dtype == np.uint8
        assert set(np.unique(out_mask).tolist()) <= {0, 1, 255}  # nearest neighbour: no new values
        red = (out_image[..., 0].astype(int) - out_image[..., 2].astype(int)) > 110
        square = out_mask == 1
        # The mask's square and the image's square are the same pixels to within a pixel...
        np.testing.assert_allclose(_extent(square), _extent(red), atol=1.0)
        # every mask pixel of the square is within one pixel of a red pixel, and the other way round
        kernel = np.ones((3, 3), np.uint8)
        assert not (square & ~cv2.dilate(red.astype(np.uint8), kernel).astype(bool)).any()
        assert not (red & ~cv2.dilate(square.astype(np.uint8), kernel).astype(bool)).any()
        # ...and the box follows them.
        assert boxes.shape == (1, 4) and labels.tolist() == [1]
        np.testing.assert_allclose(boxes[0], _extent(square), atol=1.0)
        flipped += bool(boxes[0, 0] + boxes[0, 2] > out_image.shape[1])  # the square's centre is left of the middle
        seen_sizes.add(out_image.shape[:2])
        sizes += 1
    if name == "seg_eval":
        # no flip; the shorter side resized to base_size 64: int(64 * 120 / 90) = 85
        assert flipped == 0
        assert seen_sizes == {(64, 85)}
    elif name in ("train", "yolo"):
        # flip about half the time; the content is scaled inside a fixed frame of the input's size
        assert 0 < flipped < sizes
        assert seen_sizes == {(H, W)}
    else:
        # seg_train / seg_shapes: flip about half the time and resize the frame itself, the shorter
        # side drawn in seg_train's randint(int(0.5 * 90), int(2 * 90)) or seg_shapes'
        # round(uniform(0.75, 1.25) * 90), the longer side following as torchvision computes it
        assert name in ("seg_train", "seg_shapes")
        assert 0 < flipped < sizes
        low, high = {"seg_train": (45, 180), "seg_shapes": (68, 112)}[name]
        assert len(seen_sizes) > 1
        for height, width in seen_sizes:
            assert low <= height <= high and (height, width) == shorter_side_size(H, W, height)


@pytest.mark.parametrize("size", [(375, 500), (500, 333), (97, 131), (64, 64)])
def test_shorter_side_size_equals_torchvision_resize(size):
    from torchvision.transforms.v2 import functional as F

    for target in (37, 260, 520):
        expected = tuple(F.resize(torch.zeros(1, *size), [target]).shape[-2:])
        assert shorter_side_size(*size, target) == expected


def test_seg_train_draws_integer_shorter_sides_in_torchvisions_range():
    image, mask = np.zeros((40, 60, 3), np.uint8), np.zeros((40, 60), np.uint8)
    transform = build_transforms(dict(name="seg_train", base_size=52, crop_size=None, flip=0.0))
    shorter = set()
    for seed in range(150):
        transform.set_seed(seed)
        out, _, _, out_mask = transform(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), mask)
        assert out_mask.shape == out.shape[:2] == shorter_side_size(40, 60, out.shape[0])
        shorter.add(out.shape[0])
    assert min(shorter) >= 26 and max(shorter) <= 104 and len(shorter) > 40  # randint(int(0.5 * 52), int(2 * 52))


def test_seg_train_pads_right_and_bottom_with_fill_and_255():
    image, mask = _scene()
    transform = build_transforms(dict(name="seg_train", base_size=None, scale=(1.0, 1.0), crop_size=128, flip=0.0))
    out_image, boxes, labels, out_mask = transform(image, np.array([SQUARE], np.float32), np.array([1]), mask)
    assert out_image.shape == (128, 128, 3) and out_mask.shape == (128, 128)
    assert np.array_equal(out_image[:H, :W], image) and np.array_equal(out_mask[:H, :W], mask)
    assert (out_image[H:] == 0).all() and (out_image[:, W:] == 0).all()  # image fill 0, as torchvision
    assert (out_mask[H:] == 255).all() and (out_mask[:, W:] == 255).all()
    np.testing.assert_allclose(boxes, [SQUARE], atol=1e-4)  # albumentations round-trips through normalised floats
    assert labels.tolist() == [1]


def test_seg_train_default_is_torchvisions_recipe():
    image, mask = _scene()
    transform = build_transforms("seg_train", seed=0)
    resize, flip, pad, crop = transform.compose.transforms
    assert isinstance(resize, ShorterSideResize) and resize.sizes == (260, 1040) and not resize.relative
    assert flip.p == 0.5 and (pad.min_height, pad.min_width, pad.fill, pad.fill_mask) == (480, 480, 0, 255)
    assert (crop.height, crop.width) == (480, 480)
    out_image, _, _, out_mask = transform(image, np.array([SQUARE], np.float32), np.array([1]), mask)
    assert out_image.shape == (480, 480, 3) and out_mask.shape == (480, 480)
    eval_image, _, _, eval_mask = build_transforms("seg_eval")(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), mask)
    assert eval_image.shape[:2] == eval_mask.shape == (520, 693)  # int(520 * 120 / 90)


def test_a_box_mostly_cropped_away_goes_with_its_label_but_its_pixels_stay_in_the_mask():
    image, mask = _scene()
    transform = build_transforms(dict(name="seg_train", base_size=None, scale=(1.0, 1.0), crop_size=40, flip=0.0))
    counts = {"kept": 0, "dropped": 0}
    for seed in range(40):
        transform.set_seed(seed)
        _, boxes, labels, out_mask = transform(image, np.array([SQUARE], np.float32), np.array([1]), mask)
        visible = (out_mask == 1).sum() / 32**2
        if boxes.shape[0]:
            assert visible >= 0.2 - 1e-6 and labels.tolist() == [1]
            counts["kept"] += 1
        else:
            assert visible < 0.2 + 1e-6 and labels.shape == (0,)
            counts["dropped"] += 1
    assert counts["kept"] and counts["dropped"]


def _voc_with_mask(tmp_path, mask: np.ndarray, image_hw=(6, 8), class_names=("cat",)):
    write_voc(tmp_path, {"s": (*image_hw, [("cat", 1, 1, 4, 4, 0)])})
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (tmp_path / "ImageSets" / "Segmentation" / "train.txt").write_text("s\n")
    (tmp_path / "SegmentationClass").mkdir(exist_ok=True)
    Image.fromarray(mask, mode="L").save(tmp_path / "SegmentationClass" / "s.png")
    return VOCDetection(tmp_path, "train", class_names=list(class_names), masks=True)


def test_voc_masks_through_seg_train_stay_aligned(tmp_path):
    mask = np.zeros((30, 40), np.uint8)
    mask[5:15, 10:20] = 1
    mask[0, :] = 255
    write_voc(tmp_path, {"s": (30, 40, [("cat", 11, 6, 20, 15, 0)])})
    red = np.zeros((30, 40, 3), np.uint8)
    red[5:15, 10:20] = (30, 30, 250)  # BGR for OpenCV: red in RGB
    cv2.imwrite(str(tmp_path / "JPEGImages" / "s.png"), red)
    (tmp_path / "JPEGImages" / "s.jpg").unlink()
    xml = tmp_path / "Annotations" / "s.xml"
    xml.write_text(xml.read_text().replace("s.jpg", "s.png"))
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "train.txt").write_text("s\n")
    (tmp_path / "SegmentationClass").mkdir()
    Image.fromarray(mask, mode="L").save(tmp_path / "SegmentationClass" / "s.png")
    ds = VOCDetection(tmp_path, "train", class_names=["cat"], masks=True,
                      transforms=build_transforms(dict(name="seg_train", base_size=30, crop_size=32)))
    torch.manual_seed(0)
    for _ in range(6):
        image, target = ds[0]
        masks = target["masks"]
        assert masks.dtype == torch.int64 and masks.shape == image.shape[1:] == (32, 32)
        assert set(masks.unique().tolist()) <= {0, 1, 255}
        square = masks == 1
        if square.any():
            is_red = (image[0] - image[2]) > 0.5
            assert (square == is_red).float().mean() > 0.97


def test_mask_values_above_k_raise_naming_the_image(tmp_path):
    mask = np.zeros((6, 8), np.uint8)
    mask[2, 2], mask[0, :] = 7, 255
    ds = _voc_with_mask(tmp_path, mask)
    with pytest.raises(MaskError, match=r"s\.png, image id 0: mask value out of range: values 7 \(1 px\) are above K=1") as info:
        ds[0]
    assert isinstance(info.value, UserInputError)


def test_mask_of_another_size_raises_naming_the_image(tmp_path):
    ds = _voc_with_mask(tmp_path, np.zeros((5, 8), np.uint8))
    with pytest.raises(UserInputError, match=r"s\.png, image id 0: mask size differs from the image: mask is 8x5 \(w x h\) "
                                             r"but its image is 8x6"):
        ds[0]


def test_255_and_values_up_to_k_are_valid(tmp_path):
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 1:3], mask[4, 4], mask[0, :] = 1, 2, 255
    ds = _voc_with_mask(tmp_path, mask, class_names=("cat", "dog"))
    assert torch.equal(ds[0][1]["masks"], torch.from_numpy(mask.astype(np.int64)))
    assert mask_problems(mask, 2, 6, 8, "f", 3) == []
    assert [p.kind for p in mask_problems(mask, 1, 6, 9, "f", 3)] == ["mask_size_mismatch", "mask_value_out_of_range"]


def test_unreadable_mask_raises_naming_the_image(tmp_path):
    ds = _voc_with_mask(tmp_path, np.zeros((6, 8), np.uint8))
    (tmp_path / "SegmentationClass" / "s.png").write_bytes(b"not a png")
    with pytest.raises(MaskError, match=r"s\.png, image id 0: mask file cannot be read"):
        ds[0]


def test_doctor_reports_mask_values_and_sizes_with_file_and_image_id(tmp_path):
    from detect.data.doctor import diagnose

    write_voc(tmp_path, {"a": (6, 8, [("cat", 1, 1, 4, 4, 0)]), "b": (6, 8, [("cat", 1, 1, 4, 4, 0)]),
                         "c": (6, 8, [("cat", 1, 1, 4, 4, 0)])})
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\nc\n")
    (tmp_path / "SegmentationClass").mkdir()
    good = np.zeros((6, 8), np.uint8)
    good[0] = 255
    bad_values = good.copy()
    bad_values[3, 3:5] = 9
    Image.fromarray(good, mode="L").save(tmp_path / "SegmentationClass" / "a.png")
    Image.fromarray(bad_values, mode="L").save(tmp_path / "SegmentationClass" / "b.png")
    Image.fromarray(np.zeros((7, 8), np.uint8), mode="L").save(tmp_path / "SegmentationClass" / "c.png")
    data = {"format": "voc", "root": str(tmp_path), "class_names": ["cat"], "masks": True, "train": {"split": "train"}}
    report = diagnose(data, ["train"], decode=True)
    problems = report.splits[0].problems
    assert sorted((p.kind, p.image_id) for p in problems) == [("mask_size_mismatch", 2), ("mask_value_out_of_range", 1)]
    text = report.format()
    assert "b.png, image id 1: mask value out of range: values 9 (2 px) are above K=1 and not 255" in text
    assert "c.png, image id 2: mask size differs from the image: mask is 8x7 (w x h) but its image is 8x6" in text
    assert report.stops_training  # these would stop training at the item, whatever the policy
    data["check_policy"] = "drop"
    assert diagnose(data, ["train"], decode=True).stops_training
    assert not diagnose(data, ["train"], decode=False).splits[0].problems  # masks are checked when decoding


# ----------------------------------------------------------------- COCO, torchvision style

def _rle(flags: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(flags.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


@pytest.fixture
def coco_voc(tmp_path):
    """Image 1 (12 x 16): a person (COCO 1 -> VOC label 15) and a car (3 -> 7) overlapping on
    two columns, a toothbrush (90, not a VOC class) over the person, a crowd of cars.
    Image 2: one aeroplane (5 -> 1) of area exactly 1000; image 3: a dog (18 -> 12) of area 1001."""
    person = np.zeros((12, 16), bool)
    person[2:8, 2:8] = True
    car = np.zeros((12, 16), bool)
    car[4:10, 6:12] = True
    brush = np.zeros((12, 16), bool)
    brush[2:4, 2:4] = True
    crowd = np.zeros((12, 16), bool)
    crowd[10:12, 12:16] = True
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 6, 6], "area": 36.0, "iscrowd": 0, "segmentation": _rle(person)},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [6, 4, 6, 6], "area": 36.0, "iscrowd": 0,
         "segmentation": [[6, 4, 12, 4, 12, 10, 6, 10]]},
        {"id": 3, "image_id": 1, "category_id": 90, "bbox": [2, 2, 2, 2], "area": 4.0, "iscrowd": 0, "segmentation": _rle(brush)},
        {"id": 4, "image_id": 1, "category_id": 3, "bbox": [12, 10, 4, 2], "area": 8.0, "iscrowd": 1, "segmentation": _rle(crowd)},
        {"id": 5, "image_id": 2, "category_id": 5, "bbox": [0, 0, 8, 8], "area": 1000.0, "iscrowd": 0},
        {"id": 6, "image_id": 3, "category_id": 18, "bbox": [0, 0, 8, 8], "area": 1001.0, "iscrowd": 0},
        {"id": 7, "image_id": 3, "category_id": 90, "bbox": [0, 0, 8, 8], "area": 5000.0, "iscrowd": 0},
    ]
    cats = [(c, f"coco{c}") for c in sorted({*COCO_VOC_CATEGORY_IDS, 90})]
    image_dir, ann_file = write_coco(tmp_path, [(1, "a.png", 12, 16), (2, "b.png", 12, 16), (3, "c.png", 12, 16)],
                                     annotations, cats)
    return image_dir, ann_file, (person, car, crowd)


def test_coco_voc_categories_map_to_voc_labels_and_others_are_left_out(coco_voc):
    from detect.data.voc import VOC_CLASSES

    image_dir, ann_file, _ = coco_voc
    ds = CocoDetection(image_dir, ann_file, category_ids="voc")
    assert ds.class_names == list(VOC_CLASSES) and ds.label_to_category_id == dict(enumerate(COCO_VOC_CATEGORY_IDS, 1))
    assert ds.annotations.num_objects == 5  # both toothbrushes gone, no problem raised
    assert ds[0][1]["labels"].tolist() == [15, 7]  # person, car (the crowd is not a training box)
    assert ds[1][1]["labels"].tolist() == [1] and ds[2][1]["labels"].tolist() == [12]
    assert VOC_CLASSES[15 - 1] == "person" and VOC_CLASSES[7 - 1] == "car" and VOC_CLASSES[12 - 1] == "dog"
    with pytest.raises(Exception, match="unknown category"):
        CocoDetection(image_dir, ann_file, class_names=["coco1", "coco3"])  # without category_ids: problems, as before


def test_coco_torchvision_masks_overlaps_are_255_and_crowds_keep_their_label(coco_voc):
    image_dir, ann_file, (person, car, crowd) = coco_voc
    ds = CocoDetection(image_dir, ann_file, category_ids="voc", masks=True, mask_style="torchvision")
    expected = np.zeros((12, 16), np.int64)
    expected[person] = 15
    expected[car] = 7
    expected[person & car] = 255
    expected[crowd] = 7  # torchvision paints crowd regions with their category
    assert torch.equal(ds[0][1]["masks"], torch.from_numpy(expected))
    detect_style = CocoDetection(image_dir, ann_file, category_ids="voc", masks=True)[0][1]["masks"].numpy()
    assert (detect_style[person & car] == 15).all() or (detect_style[person & car] == 7).all()  # painted, not ignored
    assert (detect_style[crowd] == 255).all()
    assert (ds[1][1]["masks"] == 1).sum() == 64  # a box-only annotation is painted as its box


def test_coco_min_labelled_area_keeps_only_more_than_the_threshold(coco_voc):
    image_dir, ann_file, _ = coco_voc
    ds = CocoDetection(image_dir, ann_file, category_ids="voc", min_labelled_area=1000)
    # image 1: 36 + 36 + 8 (crowd counts) = 80 <= 1000; image 2: exactly 1000 (dropped, as torchvision's
    # "> 1000"); image 3: 1001 (the toothbrush's 5000 does not count: not a VOC class)
    assert ds.image_ids == [3]
    assert CocoDetection(image_dir, ann_file, category_ids="voc", min_labelled_area=79).image_ids == [1, 2, 3]
    assert CocoDetection(image_dir, ann_file, category_ids="voc", min_labelled_area=80).image_ids == [2, 3]


def test_coco_category_options_from_a_config_and_their_errors(coco_voc):
    from detect.data.build import build_dataset
    from detect.data.sources import derive_class_names
    from detect.data.voc import VOC_CLASSES

    image_dir, ann_file, _ = coco_voc
    data = {"format": "coco", "masks": True, "category_ids": "voc", "mask_style": "torchvision",
            "train": {"image_dir": str(image_dir), "ann_file": str(ann_file), "min_labelled_area": 1000},
            "val": {"image_dir": str(image_dir), "ann_file": str(ann_file)}}
    assert derive_class_names(data) == list(VOC_CLASSES)
    train, val = build_dataset(data, "train"), build_dataset(data, "val")
    assert train.image_ids == [3] and val.image_ids == [1, 2, 3] and val.mask_style == "torchvision"
    assert derive_class_names({**data, "category_ids": [18, 1]}) == ["coco18", "coco1"]
    with pytest.raises(Exception, match=r"category_ids \[77\] are not categories of the file"):
        CocoDetection(image_dir, ann_file, category_ids=[77])
    with pytest.raises(ValueError, match="mask_style is 'pretty'"):
        CocoDetection(image_dir, ann_file, mask_style="pretty")
    with pytest.raises(ValueError, match="2 names for 1 category_ids"):
        CocoDetection(image_dir, ann_file, category_ids=[1], class_names=["a", "b"])
    assert json.loads(ann_file.read_text())["annotations"][2]["category_id"] == 90  # the file is not modified


def test_shapes_item_mask_goes_through_the_same_transform_as_its_image(shapes_root):
    from detect.data.image_io import to_tensor

    image_dir, ann_file = shapes_root / "JPEGImages", shapes_root / "annotations" / "instances_train.json"
    plain = CocoDetection(image_dir, ann_file, masks=True)
    augmented = CocoDetection(image_dir, ann_file, masks=True, transforms=build_transforms("seg_shapes"))
    index = next(i for i in range(len(plain)) if plain.annotations.object_image.tolist().count(i) >= 2)
    raw_image = plain.load_image(index)
    raw_mask = plain[index][1]["masks"].numpy().astype(np.uint8)
    assert set(np.unique(raw_mask).tolist()) <= {0, 1, 2, 3} and len(np.unique(raw_mask)) >= 2
    for seed in range(3):
        torch.manual_seed(seed)
        image, target = augmented[index]
        torch.manual_seed(seed)  # the seed the dataset drew for this item
        transform = augmented.transforms
        transform.set_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
        gt = plain.get_ground_truth(index)
        expected_image, _, _, expected_mask = transform(raw_image, gt["boxes"].numpy(), gt["labels"].numpy(), raw_mask)
        assert image.shape == (3, 128, 128) and torch.equal(image, to_tensor(expected_image))
        assert torch.equal(target["masks"], torch.from_numpy(expected_mask.astype(np.int64)))
        assert set(target["masks"].unique().tolist()) <= {0, 1, 2, 3, 255}
