"""Selective search (R-CNN fast mode on cv2.ximgproc) and the contrib-build check."""
import sys
import types

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from detect.errors import UserInputError
from detect.proposals import opencv_check
from detect.proposals.opencv_check import require_selective_search
from detect.proposals.selective_search import SelectiveSearch

RED_BOX = [10.0, 20.0, 70.0, 60.0]    # x1, y1, x2, y2 (continuous pixels)
BLUE_BOX = [90.0, 50.0, 150.0, 110.0]


def _two_rectangles() -> np.ndarray:
    image = np.full((120, 160, 3), 200, np.uint8)  # RGB
    image[20:60, 10:70] = (220, 30, 30)
    image[50:110, 90:150] = (30, 30, 220)
    return image


def test_contrib_build_installed():
    # What `make test`'s install guarantees: the contrib cv2 won over the headless wheel.
    segmentation = require_selective_search()
    assert hasattr(segmentation, "createSelectiveSearchSegmentation")
    assert opencv_check.main() == 0


def test_missing_ximgproc_says_how_to_fix(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(__version__="4.99.0"))
    with pytest.raises(UserInputError, match=r"cv2.ximgproc.*4\.99\.0.*pip install .*opencv-contrib-python-headless"):
        require_selective_search()
    assert opencv_check.main() == 1
    assert "error: selective search needs OpenCV's contrib module" in capsys.readouterr().err


def test_finds_both_rectangles():
    boxes = SelectiveSearch()(_two_rectangles())
    assert boxes.dtype == torch.float32 and boxes.dim() == 2 and boxes.shape[1] == 4 and len(boxes) > 2
    best = box_iou(torch.tensor([RED_BOX, BLUE_BOX]), boxes).max(dim=1).values
    assert (best > 0.9).all(), best
    sizes = boxes[:, 2:] - boxes[:, :2]
    assert (sizes >= 20).all()
    assert len(torch.unique(boxes, dim=0)) == len(boxes)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 160).all() and (boxes[:, 3] <= 120).all()


def test_tensor_and_array_inputs_agree_and_repeat():
    image = _two_rectangles()
    search = SelectiveSearch()
    from_array = search(image)
    from_tensor = search(torch.from_numpy(image).permute(2, 0, 1).float() / 255)
    assert torch.equal(from_array, from_tensor)
    assert torch.equal(search(image), from_array)  # OpenCV's rand() is seeded per image: same order


def test_colour_conversion_matches_opencvs_bgr_pipeline():
    # OpenCV's own modes convert a BGR image with BGR2HSV / BGR2Lab; our RGB input must give the
    # same boxes in the same order as that pipeline on the BGR copy.
    rng = np.random.default_rng(0)
    image = _two_rectangles()
    image[:, :, 1] = np.clip(image[:, :, 1].astype(int) + rng.integers(-20, 20, image.shape[:2]), 0, 255)
    ours = SelectiveSearch(min_box_size=0)(image)
    seg = cv2.ximgproc.segmentation
    reference = seg.createSelectiveSearchSegmentation()
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    reference.addImage(cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV))
    reference.addImage(cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab))
    for k in (50, 100):
        reference.addGraphSegmentation(seg.createGraphSegmentation(0.8, float(k), k))
    reference.addStrategy(seg.createSelectiveSearchSegmentationStrategyMultiple(
        seg.createSelectiveSearchSegmentationStrategyColor(), seg.createSelectiveSearchSegmentationStrategyTexture(),
        seg.createSelectiveSearchSegmentationStrategySize(), seg.createSelectiveSearchSegmentationStrategyFill()))
    reference.addStrategy(seg.createSelectiveSearchSegmentationStrategyMultiple(
        seg.createSelectiveSearchSegmentationStrategyTexture(), seg.createSelectiveSearchSegmentationStrategySize(),
        seg.createSelectiveSearchSegmentationStrategyFill()))
    from detect.proposals import selective_search as module

    module._SRAND(1)
    xywh = torch.from_numpy(reference.process().astype(np.float32))
    expected = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
    assert torch.equal(ours, expected)


def test_max_proposals_and_min_size_and_params():
    image = _two_rectangles()
    every = SelectiveSearch(min_box_size=0)(image)
    assert ((every[:, 2:] - every[:, :2]) < 20).any()  # the 20 px filter has something to remove
    first = SelectiveSearch(max_proposals=3)(image)
    assert torch.equal(first, SelectiveSearch()(image)[:3])
    params = SelectiveSearch().params
    assert params["color_spaces"] == ["hsv", "lab"] and params["ks"] == [50, 100] == params["min_sizes"]
    assert params["sigma"] == 0.8 and params["strategies"] == ["color+texture+size+fill", "texture+size+fill"]


def test_im_width_scales_boxes_back():
    boxes = SelectiveSearch(im_width=80)(_two_rectangles())  # half size, boxes in the original pixels
    best = box_iou(torch.tensor([RED_BOX, BLUE_BOX]), boxes).max(dim=1).values
    assert (best > 0.85).all(), best
    assert (boxes[:, 2] <= 160).all() and len(torch.unique(boxes, dim=0)) == len(boxes)


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32),
                                 torch.zeros(1, 10, 10)])
def test_bad_images_raise(bad):
    with pytest.raises(UserInputError, match="selective search takes"):
        SelectiveSearch()(bad)


def test_bad_options_raise():
    with pytest.raises(UserInputError, match="colour space"):
        SelectiveSearch(color_spaces=("xyz",))
    with pytest.raises(UserInputError, match="strateg"):
        SelectiveSearch(strategies=("colour",))


def test_picklable_for_worker_processes():
    import pickle

    search = pickle.loads(pickle.dumps(SelectiveSearch(max_proposals=5)))
    assert torch.equal(search(_two_rectangles()), SelectiveSearch(max_proposals=5)(_two_rectangles()))


def test_on_the_fly_proposals_show_a_bar_only_when_asked(capsys):
    from detect.proposals.generators import propose_on_the_fly

    search, image = SelectiveSearch(), _two_rectangles()
    shown = search.propose([image, image], progress=True)
    err = capsys.readouterr().err
    assert "selective search:" in err and "/2 [" in err and "image/s" in err
    quiet = search.propose([image, image])  # the default: no bar
    assert capsys.readouterr().err == ""
    assert all(torch.equal(a, b) for a, b in zip(shown, quiet)) and torch.equal(shown[0], search(image))
    # None: a bar only on a terminal; pytest's captured stderr is not one
    assert len(propose_on_the_fly(search, [image], progress=None)) == 1 and capsys.readouterr().err == ""
    assert propose_on_the_fly(search, [], progress=True) == []
