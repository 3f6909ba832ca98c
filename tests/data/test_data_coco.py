"""CocoDetection on hand-written JSON: coordinates, label mapping, crowd, checks and policies."""
import logging

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from data_fixtures import write_coco, write_image
from detect.data import CocoDetection, DatasetError, ImageReadError


def test_items_convert_xywh_to_xyxy_and_keep_ids(coco_fixture):
    ds = CocoDetection(*coco_fixture)
    assert len(ds) == 2 and ds.image_ids == [0, 7]
    image, target = ds[0]
    assert image.shape == (3, 40, 60) and image.dtype == torch.float32
    # RGB (10, 20, 30) written by the fixture comes back in RGB order
    assert torch.allclose(image[:, 0, 0], torch.tensor([10, 20, 30]) / 255.0, atol=1 / 255)
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["boxes"].tolist() == [[5, 6, 15, 26], [0.5, 1.5, 30.5, 9.5]]  # crowd box left out
    assert target["labels"].tolist() == [2, 1]
    assert target["image_id"] == 0 and target["orig_size"].tolist() == [40, 60]
    _, second = ds[1]
    assert second["image_id"] == 7 and second["boxes"].tolist() == [[2, 3, 6, 8]]


def test_label_mapping_round_trip(coco_fixture):
    ds = CocoDetection(*coco_fixture)
    assert ds.class_names == ["cat", "dog"]  # categories sorted by id: 3 -> 1, 11 -> 2
    assert ds.label_to_category_id == {1: 3, 2: 11}
    assert ds.category_id_to_label == {3: 1, 11: 2}
    for label, category in ds.label_to_category_id.items():
        assert ds.category_id_to_label[category] == label
        assert ds.class_names[label - 1] == {3: "cat", 11: "dog"}[category]


def test_ground_truth_keeps_crowd_and_to_coco_uses_source_ids(coco_fixture):
    ds = CocoDetection(*coco_fixture)
    gt = ds.get_ground_truth(0)
    assert gt["image_id"] == 0
    assert gt["boxes"].tolist() == [[5, 6, 15, 26], [0.5, 1.5, 30.5, 9.5], [40, 20, 50, 30]]
    assert gt["labels"].tolist() == [2, 1, 1] and gt["iscrowd"].tolist() == [False, False, True]
    coco = ds.to_coco()
    assert sorted(coco.getImgIds()) == [0, 7] and sorted(coco.getCatIds()) == [3, 11]
    anns = {a["id"]: a for a in coco.loadAnns(coco.getAnnIds())}
    assert sorted(anns) == [1, 2, 3, 4]  # annotation ids are renumbered 1..M (source ids 1, 2, 5, 9)
    assert anns[1]["bbox"] == [5, 6, 10, 20] and anns[1]["category_id"] == 11 and anns[1]["area"] == 150.0
    assert anns[2]["bbox"] == [0.5, 1.5, 30, 8] and anns[3]["iscrowd"] == 1
    assert anns[4]["area"] == 20.0  # no area in the file: box area


def test_annotation_id_zero_and_missing_ids_evaluate_as_matches(tmp_path):
    """COCOeval takes a matched ground-truth id of 0 for "unmatched", and duplicate ids collapse in
    its index: to_coco numbers annotations 1..M, so perfect detections score AP 1.0."""
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    boxes = [[2, 3, 10, 12], [20, 5, 15, 9], [4, 25, 30, 10]]
    image_dir, ann_file = write_coco(tmp_path, [(1, "a.png", 40, 60)], [
        {"image_id": 1, "category_id": 1, "bbox": boxes[0], "iscrowd": 0},  # no id
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": boxes[1], "iscrowd": 0},
        {"id": 0, "image_id": 1, "category_id": 1, "bbox": boxes[2], "iscrowd": 0}], [(1, "x")])
    gt = CocoDetection(image_dir, ann_file).to_coco()
    assert sorted(gt.getAnnIds()) == [1, 2, 3]
    detections = [{"image_id": 1, "category_id": 1, "bbox": b, "score": 0.9} for b in boxes]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_class_names_subset_and_mismatch(coco_fixture):
    with pytest.raises(DatasetError, match=r"unknown category.*category_id 3.*annotation id 2"):
        CocoDetection(*coco_fixture, class_names=["dog"])
    ds = CocoDetection(*coco_fixture, class_names=["dog"], check_policy="drop")
    assert ds.label_to_category_id == {1: 11}
    assert ds[0][1]["boxes"].tolist() == [[5, 6, 15, 26]] and ds[0][1]["labels"].tolist() == [1]
    for policy in ("raise", "drop", "clip"):  # a configured class the file lacks is never droppable
        with pytest.raises(DatasetError, match=r"class list disagrees.*\['bird'\].*defines \['cat', 'dog'\]"):
            CocoDetection(*coco_fixture, class_names=["dog", "bird"], check_policy=policy)


def _bad_boxes(tmp_path):
    images = [(3, "a.png", 20, 30)]
    bboxes = {10: [1, 1, 0, 5], 11: [8, 8, -2, 3], 12: [float("nan"), 1, 2, 2], 13: [25, 2, 10, 5],
              14: [2, 2, 28.4, 18.3], 15: [4, 4, 6, 6]}
    annotations = [{"id": i, "image_id": 3, "category_id": 1, "bbox": b, "iscrowd": 0} for i, b in bboxes.items()]
    annotations.append({"id": 16, "image_id": 3, "category_id": 99, "bbox": [1, 1, 2, 2], "iscrowd": 0})
    return write_coco(tmp_path, images, annotations, [(1, "thing")])


def test_bad_boxes_raise_naming_file_image_and_annotation(tmp_path):
    image_dir, ann_file = _bad_boxes(tmp_path)
    with pytest.raises(DatasetError) as info:
        CocoDetection(image_dir, ann_file)
    message = str(info.value)
    assert "5 problem(s)" in message
    for index, kind in ((0, "zero-size box"), (1, "inverted box"), (2, "non-finite box"),
                        (3, "box outside the image"), (6, "unknown category")):
        assert f"instances.json, image id 3, annotation {index}: {kind}" in message
    assert "bbox [x, y, w, h] = (25, 2, 10, 5) in a 30x20 (w x h) image (annotation id 13)" in message
    assert "category_id 99" in message
    assert {p.kind for p in info.value.problems} == {
        "zero_size_box", "inverted_box", "nonfinite_box", "out_of_image_box", "unknown_category"}


def test_drop_and_clip_policies(tmp_path):
    image_dir, ann_file = _bad_boxes(tmp_path)
    dropped = CocoDetection(image_dir, ann_file, check_policy="drop")
    # the 0.4 / 0.3 px stray of annotation 14 is clipped silently; the rest dropped
    assert dropped[0][1]["boxes"].tolist() == [[2, 2, 30, 20], [4, 4, 10, 10]]
    assert dropped.check_counts["dropped_objects"] == 5 and dropped.check_counts["clipped_strays"] == 1
    assert len(dropped.problems) == 5
    clipped = CocoDetection(image_dir, ann_file, check_policy="clip")
    assert clipped[0][1]["boxes"].tolist() == [[25, 2, 30, 7], [2, 2, 30, 20], [4, 4, 10, 10]]
    assert clipped.check_counts["clipped_out_of_image"] == 1


def test_box_entirely_outside_is_dropped_even_under_clip(tmp_path):
    image_dir, ann_file = write_coco(tmp_path, [(1, "a.png", 10, 10)], [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 20, 5, 5], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3], "iscrowd": 0}], [(1, "x")])
    ds = CocoDetection(image_dir, ann_file, check_policy="clip")
    assert ds[0][1]["boxes"].tolist() == [[1, 1, 4, 4]]


def test_missing_image_and_unknown_image_id(tmp_path):
    image_dir, ann_file = write_coco(tmp_path, [(0, "a.png", 10, 10), (1, "b.png", 10, 10)], [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3], "iscrowd": 0},
        {"id": 2, "image_id": 55, "category_id": 1, "bbox": [1, 1, 3, 3], "iscrowd": 0}], [(1, "x")])
    (image_dir / "a.png").unlink()
    with pytest.raises(DatasetError) as info:
        CocoDetection(image_dir, ann_file)
    message = str(info.value)
    assert "image id 0: image file missing:" in message and "a.png does not exist" in message
    assert "image id 55, annotation 1: malformed annotation: image_id 55 is not in 'images'" in message
    ds = CocoDetection(image_dir, ann_file, check_policy="drop")
    assert ds.image_ids == [1] and ds.check_counts["dropped_images"] == 1


def test_empty_images_kept_or_filtered_with_count(tmp_path, caplog):
    image_dir, ann_file = write_coco(tmp_path, [(0, "a.png", 10, 10), (1, "b.png", 10, 10), (2, "c.png", 10, 10)], [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3], "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 3, 3], "iscrowd": 1}], [(1, "x")])
    kept = CocoDetection(image_dir, ann_file)
    assert len(kept) == 3 and kept[0][1]["boxes"].shape == (0, 4) and kept[0][1]["labels"].shape == (0,)
    with caplog.at_level(logging.INFO, logger="detect.data"):
        filtered = CocoDetection(image_dir, ann_file, filter_empty=True)
    assert filtered.image_ids == [1]  # image 2 has only a crowd box: nothing to train on
    assert "filter_empty=True removed 2 of 3 image(s)" in caplog.text


def test_dataset_empty_after_filtering_raises(tmp_path):
    image_dir, ann_file = write_coco(tmp_path, [(0, "a.png", 10, 10)], [], [(1, "x")])
    with pytest.raises(DatasetError, match=r"dataset empty: no image left after check_policy='raise' and filter_empty"):
        CocoDetection(image_dir, ann_file, filter_empty=True)


def test_unreadable_image_and_size_mismatch_raise_at_getitem(tmp_path):
    image_dir, ann_file = write_coco(tmp_path, [(4, "a.png", 10, 10), (5, "b.png", 12, 10)], [], [(1, "x")])
    (image_dir / "a.png").write_bytes(b"garbage")
    write_image(image_dir / "b.png", 10, 12)  # annotation says 12 high, 10 wide
    ds = CocoDetection(image_dir, ann_file)  # load time does not decode
    with pytest.raises(ImageReadError, match=r"a\.png \(image id 4\)"):
        ds[0]
    with pytest.raises(DatasetError, match=r"image id 5: decoded size differs.*decodes to 12x10 .* says 10x12"):
        ds[1]


def test_duplicate_image_ids_and_bad_json(tmp_path):
    image_dir, ann_file = write_coco(tmp_path, [(1, "a.png", 10, 10), (1, "b.png", 10, 10)], [], [(1, "x")])
    with pytest.raises(ValueError, match=r"image ids \[1\] appear more than once"):
        CocoDetection(image_dir, ann_file)
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON"):
        CocoDetection(image_dir, tmp_path / "broken.json")


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")
def test_semantic_masks_from_polygons_and_rle(tmp_path):
    big = np.zeros((12, 16), np.uint8)
    big[2:10, 2:12] = 1
    rle = mask_utils.encode(np.asfortranarray(big))
    rle["counts"] = rle["counts"].decode("ascii")
    annotations = [
        {"id": 1, "image_id": 0, "category_id": 1, "bbox": [2, 2, 10, 8], "area": 80, "iscrowd": 0, "segmentation": rle},
        {"id": 2, "image_id": 0, "category_id": 2, "bbox": [4, 4, 4, 4], "area": 16, "iscrowd": 0,
         "segmentation": [[4, 4, 8, 4, 8, 8, 4, 8]]},
        {"id": 3, "image_id": 0, "category_id": 1, "bbox": [13, 0, 3, 3], "area": 9, "iscrowd": 1,
         "segmentation": [[13, 0, 16, 0, 16, 3, 13, 3]]},
    ]
    image_dir, ann_file = write_coco(tmp_path, [(0, "a.png", 12, 16)], annotations, [(1, "plate"), (2, "cup")])
    ds = CocoDetection(image_dir, ann_file, masks=True)
    mask = ds[0][1]["masks"]
    assert mask.dtype == torch.int64 and mask.shape == (12, 16)
    coco = ds.coco
    small = coco.annToMask(coco.anns[2]).astype(bool)
    crowd = coco.annToMask(coco.anns[3]).astype(bool)
    expected = np.zeros((12, 16), np.int64)
    expected[big.astype(bool)] = 1
    expected[small] = 2  # smaller object painted on top
    expected[crowd] = 255
    assert np.array_equal(mask.numpy(), expected)
    assert (mask == 2).sum() == small.sum() > 0
