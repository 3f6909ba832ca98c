"""The built-in shapes set: determinism, reuse rules, tight boxes, and COCO / VOC agreement."""
import hashlib
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from detect.data import CocoDetection, VOCDetection, make_shapes
from detect.data.shapes import draw_shapes_image


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_byte_identical_for_the_same_seed(tmp_path):
    options = dict(num_images=10, image_size=(64, 80), seed=11)
    first, second = make_shapes(tmp_path / "a", **options), make_shapes(tmp_path / "b", **options)
    assert _digest(first) == _digest(second)
    assert _digest(make_shapes(tmp_path / "c", **{**options, "seed": 12})) != _digest(first)
    files = {p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file()}
    assert {"shapes.json", "annotations/instances_train.json", "annotations/instances_val.json",
            "JPEGImages/000000.jpg", "Annotations/000009.xml", "ImageSets/Main/val.txt",
            "ImageSets/Segmentation/train.txt", "SegmentationClass/000003.png"} <= files
    assert not list(tmp_path.glob(".*tmp*"))  # the staging folder is gone


def test_reuse_same_parameters_refuse_different_ones(tmp_path):
    root = make_shapes(tmp_path / "s", num_images=4, image_size=32)
    stamp = (root / "shapes.json").stat().st_mtime_ns
    assert make_shapes(root, num_images=4, image_size=32) == root
    assert (root / "shapes.json").stat().st_mtime_ns == stamp  # reused, not regenerated
    with pytest.raises(ValueError, match=r"other parameters .*'num_images': \(4, 6\)"):
        make_shapes(root, num_images=6, image_size=32)
    make_shapes(root, num_images=6, image_size=32, overwrite=True)
    assert json.loads((root / "shapes.json").read_text())["params"]["num_images"] == 6
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not a shapes dataset"):
        make_shapes(tmp_path / "other")
    with pytest.raises(ValueError, match="unknown; choose from"):
        make_shapes(tmp_path / "z", classes=("circle", "blob"))
    with pytest.raises(TypeError, match="unknown options"):
        make_shapes(tmp_path / "z", colour="red")


def test_boxes_are_tight_around_visible_pixels_and_readers_agree(shapes_root):
    coco_train = CocoDetection(shapes_root / "JPEGImages", shapes_root / "annotations" / "instances_train.json",
                               masks=True)
    voc_train = VOCDetection(shapes_root, "train", class_names=coco_train.class_names, masks=True)
    assert coco_train.class_names == ["circle", "square", "triangle"]
    assert len(coco_train) == 18 and coco_train.image_ids == list(range(18))
    params = json.loads((shapes_root / "shapes.json").read_text())["params"]
    empty = 0
    for i in range(len(coco_train)):
        image, target = coco_train[i]
        _, voc_target = voc_train[i]
        assert torch.equal(target["boxes"], voc_target["boxes"]) and torch.equal(target["labels"], voc_target["labels"])
        assert torch.equal(target["masks"], voc_target["masks"])  # COCO RLE and VOC PNG paint the same pixels
        _, instances, classes = draw_shapes_image(i, params)
        assert classes.tolist() == target["labels"].tolist()
        empty += classes.size == 0
        for j, (x1, y1, x2, y2) in enumerate(target["boxes"].round().int().tolist()):
            ys, xs = np.nonzero(instances == j + 1)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)
            side = max(x2 - x1, y2 - y1)
            assert 0.1 * 96 <= side <= 0.46 * 96  # within the size range
    assert empty >= 1


def test_occlusion_is_limited(shapes_root):
    params = json.loads((shapes_root / "shapes.json").read_text())["params"]
    fractions = []
    for i in range(24):
        _, instances, classes, full = draw_shapes_image(i, params, with_full_areas=True)
        visible = np.bincount(instances.ravel(), minlength=classes.size + 1)[1:]
        fractions += (visible / full).tolist()
        assert (visible >= (1 - params["max_occlusion"]) * full).all()
        _, instances, classes, full = draw_shapes_image(i, {**params, "max_occlusion": 0.0}, with_full_areas=True)
        assert np.array_equal(np.bincount(instances.ravel(), minlength=classes.size + 1)[1:], full)
    assert min(fractions) < 1.0  # some objects do overlap with the defaults


def test_generation_speed_is_measured(tmp_path, capsys):
    start = time.perf_counter()
    make_shapes(tmp_path / "speed", num_images=60)
    rate = 60 / (time.perf_counter() - start)
    with capsys.disabled():
        print(f"\nshapes generation: {rate:.0f} images/s (160 px, defaults; measured, not asserted)")
    assert len(list((tmp_path / "speed" / "JPEGImages").iterdir())) == 60
    decoded = np.asarray(Image.open(tmp_path / "speed" / "JPEGImages" / "000000.jpg"))
    assert decoded.shape == (160, 160, 3)
