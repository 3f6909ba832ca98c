"""Augmentation presets: boxes follow the pixels through flip and scale; degenerate boxes go."""
import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from data_fixtures import write_voc
from detect.data import VOCDetection
from detect.data.transforms import DetectionTransform, _hsv_scale_image, build_transforms

H, W = 60, 80
BOX = np.array([[10, 15, 30, 40]], np.float32)  # continuous xyxy of the drawn rectangle


def _scene():
    image = np.zeros((H, W, 3), np.uint8)
    image[15:40, 10:30] = (250, 40, 40)
    mask = np.zeros((H, W), np.uint8)
    mask[15:40, 10:30] = 1
    return image, mask


def _pixel_box(mask):
    ys, xs = np.nonzero(mask == 1)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def test_flip_exact():
    image, mask = _scene()
    t = build_transforms(dict(name="train", flip=1.0, scale=1.0, brightness=0, contrast=0, saturation=0), seed=0)
    out_image, boxes, labels, out_mask = t(image, BOX, np.array([3]), mask)
    assert boxes.tolist() == [[50, 15, 70, 40]] and labels.tolist() == [3]
    assert np.array_equal(out_image, image[:, ::-1]) and np.array_equal(out_mask, mask[:, ::-1])


def test_scale_about_the_centre_exact():
    image, mask = _scene()
    t = build_transforms(dict(name="train", flip=0.0, scale=(0.5, 0.5), brightness=0, contrast=0, saturation=0), seed=0)
    out_image, boxes, _, out_mask = t(image, BOX, np.array([1]), mask)
    assert out_image.shape == (H, W, 3)  # the frame keeps its size; the content shrinks
    np.testing.assert_allclose(boxes, [[25, 22.5, 35, 35]])  # 40 + (x - 40) / 2, 30 + (y - 30) / 2
    assert out_mask[0, 0] == 255 and (out_image[0, 0] == 114).all()  # border: ignore / fill


@pytest.mark.parametrize("preset", ["train", "yolo"])
def test_box_still_encloses_its_pixels_after_random_flip_and_scale(preset):
    image, mask = _scene()
    t = build_transforms(preset)
    seen_flip, scales = False, set()
    for seed in range(40):
        t.set_seed(seed)
        out_image, boxes, labels, out_mask = t(image, BOX, np.array([1]), mask)
        if not (out_mask == 1).any():
            assert boxes.shape == (0, 4)  # translated out of the frame (yolo): box dropped too
            continue
        pixels = _pixel_box(out_mask)
        assert boxes.shape == (1, 4) and labels.tolist() == [1]
        box = boxes[0]
        # encloses every pixel of the rectangle, and is tight to within a pixel
        assert box[0] <= pixels[0] + 0.5 and box[1] <= pixels[1] + 0.5
        assert box[2] >= pixels[2] - 0.5 and box[3] >= pixels[3] - 0.5
        assert np.abs(box - pixels).max() <= 1.0
        # the drawn (red) pixels moved with the mask
        red = (out_image[..., 0].astype(int) - out_image[..., 2].astype(int)) > 60
        assert red[out_mask == 1].mean() > 0.95
        seen_flip |= bool(box[0] > W / 2)
        scales.add(round(float(box[2] - box[0]) / 20, 2))
    assert seen_flip and len(scales) > 10


def test_degenerate_boxes_are_dropped_with_their_labels():
    image, mask = _scene()
    t = build_transforms(dict(name="train", flip=0.0, scale=(0.4, 0.4), brightness=0, contrast=0, saturation=0), seed=0)
    boxes = np.array([[10, 15, 30, 40], [50, 10, 52, 30]], np.float32)  # the second is 2 px wide -> 0.8 px
    _, out_boxes, labels, _ = t(image, boxes, np.array([1, 2]), mask)
    assert labels.tolist() == [1] and out_boxes.shape == (1, 4)


def test_empty_targets_pass_through():
    image, _ = _scene()
    out_image, boxes, labels, mask = build_transforms("yolo", seed=1)(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert out_image.shape == image.shape and boxes.shape == (0, 4) and labels.shape == (0,) and mask is None


def test_hsv_scale_multiplies_value_and_saturation():
    pixel = np.array([[[200, 100, 100]]], np.uint8)
    hsv = cv2.cvtColor(pixel, cv2.COLOR_RGB2HSV)[0, 0]
    assert hsv.tolist() == [0, 127, 200]
    darker = _hsv_scale_image(pixel, saturation=1.0, exposure=0.5)[0, 0]
    np.testing.assert_allclose(darker, [100, 50, 50], atol=1)
    gray = _hsv_scale_image(pixel, saturation=0.0, exposure=1.0)[0, 0]
    assert gray.tolist() == [200, 200, 200]


def test_hsv_scale_factors_stay_within_the_yolo_range():
    from detect.data.transforms import HSVScale

    t = HSVScale(saturation=1.5, exposure=1.5)
    t.set_random_seed(0)
    factors = np.array([[v for v in t.get_params().values()] for _ in range(400)])
    assert factors.min() >= 1 / 1.5 and factors.max() <= 1.5
    assert (factors < 1).mean() == pytest.approx(0.5, abs=0.1) and factors.max() > 1.45 and factors.min() < 0.69
    with pytest.raises(ValueError, match=">= 1"):
        HSVScale(saturation=0.5)


def test_preset_and_wrapper_errors():
    assert build_transforms("eval") is None and build_transforms(None) is None
    with pytest.raises(ValueError, match="unknown transforms preset 'fancy'"):
        build_transforms("fancy")
    with pytest.raises(ValueError, match=r"has no options \['rotate'\]"):
        build_transforms(dict(name="train", rotate=10))
    with pytest.raises(ValueError, match="takes no options"):
        build_transforms(dict(name="eval", flip=0.5))
    with pytest.raises(ValueError, match="label_fields=\\['labels'\\]"):
        build_transforms(A.Compose([A.HorizontalFlip(p=1)]))
    wrapped = build_transforms(A.Compose([A.HorizontalFlip(p=1)], bbox_params=A.BboxParams("pascal_voc", label_fields=["labels"])))
    assert isinstance(wrapped, DetectionTransform)
    assert wrapped(*_scene()[:1], BOX, np.array([1]))[1].tolist() == [[50, 15, 70, 40]]


def test_dataset_augmentation_follows_torch_seed(tmp_path):
    write_voc(tmp_path, {"a": (40, 50, [("cat", 5, 5, 30, 30, 0)])})
    ds = VOCDetection(tmp_path, "train", class_names=["cat"], transforms=build_transforms("train"))
    torch.manual_seed(0)
    first = ds[0]
    torch.manual_seed(0)
    again = ds[0]
    other = [ds[0] for _ in range(3)]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1]["boxes"], again[1]["boxes"])
    assert any(not torch.equal(first[1]["boxes"], o[1]["boxes"]) for o in other)
    assert first[1]["orig_size"].tolist() == [40, 50]
