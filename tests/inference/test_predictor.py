"""Predictor: every input kind gives the same detections; colour order is explicit and
honoured; checkpoints alone rebuild the predictor; bad inputs raise clear errors."""
import numpy as np
import pytest
import torch

from detect import Predictor
from detect.data.image_io import read_image
from inference_stand_in import CLASS_NAMES, ChannelMeanDetector, make_image, register, save_stand_in_checkpoint, write_png

register()


def same(a, b):
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
    assert torch.equal(a["labels"], b["labels"]) and a["class_names"] == b["class_names"]


@pytest.fixture
def predictor():
    return Predictor(ChannelMeanDetector(), CLASS_NAMES)


def test_every_input_kind_gives_the_same_detections(predictor, tmp_path):
    rgb = make_image()
    path = write_png(tmp_path / "a.png", rgb)
    assert np.array_equal(read_image(path), rgb)  # PNG is lossless: all inputs hold equal pixels
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    reference = predictor(str(path))
    # Expected numbers: channel means, sorted by score; boxes are fractions of 64 x 48.
    expected_scores = torch.from_numpy(rgb.reshape(-1, 3).astype(np.float64).mean(0) / 255).float()
    assert torch.allclose(reference["scores"], expected_scores, atol=1e-6)
    assert reference["labels"].tolist() == [1, 2, 3] and reference["class_names"] == ["red", "green", "blue"]
    assert reference["boxes"][0].tolist() == pytest.approx([6.4, 4.8, 32.0, 24.0])
    assert reference["boxes"].dtype == torch.float32 and reference["labels"].dtype == torch.int64

    same(predictor(path), reference)  # pathlib.Path
    same(predictor(rgb, color_order="RGB"), reference)
    same(predictor(np.ascontiguousarray(rgb[..., ::-1]), color_order="BGR"), reference)
    same(predictor(tensor), reference)
    batch = predictor([str(path), rgb, tensor, path], color_order="RGB", batch_size=3)
    assert len(batch) == 4
    for detections in batch:
        same(detections, reference)
    for detections in predictor(tensor[None].repeat(2, 1, 1, 1)):  # a stacked batch
        same(detections, reference)
    for detections in predictor(np.stack([rgb, rgb]), color_order="RGB"):
        same(detections, reference)


def test_color_order_is_required_for_arrays_and_honoured(predictor):
    rgb = make_image()
    with pytest.raises(ValueError, match="input 0: a numpy array needs color_order='RGB' or 'BGR'"):
        predictor(rgb)
    with pytest.raises(ValueError, match="color_order='RGB' or 'BGR'"):
        predictor([rgb])
    with pytest.raises(ValueError, match="color_order must be 'RGB' or 'BGR', got 'rgb'"):
        predictor(rgb, color_order="rgb")
    as_rgb = predictor(rgb, color_order="RGB")
    as_bgr = predictor(rgb, color_order="BGR")  # the same pixels read as BGR: R and B swap
    scores_rgb = dict(zip(as_rgb["class_names"], as_rgb["scores"].tolist()))
    scores_bgr = dict(zip(as_bgr["class_names"], as_bgr["scores"].tolist()))
    assert scores_bgr["red"] == pytest.approx(scores_rgb["blue"]) and scores_bgr["blue"] == pytest.approx(scores_rgb["red"])
    assert scores_rgb["red"] > 0.6 > 0.2 > scores_rgb["blue"]


def test_sorted_by_score_and_thresholded():
    predictor = Predictor(ChannelMeanDetector(), CLASS_NAMES, score_thresh=0.3)
    detections = predictor(make_image(), color_order="RGB")
    assert detections["class_names"] == ["red", "green"]  # blue (~0.16) is below 0.3
    assert detections["scores"].tolist() == sorted(detections["scores"].tolist(), reverse=True)
    bgr = predictor(make_image(), color_order="BGR")
    assert bgr["class_names"] == ["blue", "green"]


def test_from_checkpoint_alone(tmp_path):
    path = save_stand_in_checkpoint(tmp_path / "ckpt.pth", scale=0.5, box_score_thresh=0.3)
    rgb = make_image()
    means = rgb.reshape(-1, 3).astype(np.float64).mean(0) / 255
    predictor = Predictor.from_checkpoint(path, device="cpu")
    detections = predictor(rgb, color_order="RGB")
    # scale 0.5 was loaded; the model's box_score_thresh 0.3 drops green (~0.2) and blue (~0.08).
    assert detections["class_names"] == ["red"]
    assert detections["scores"].tolist() == pytest.approx([0.5 * means[0]], abs=1e-6)
    # A lower score_thresh lowers the model's own threshold, so the low scores exist.
    lower = Predictor.from_checkpoint(path, score_thresh=0.1, batch_size=2)
    assert lower.model.score_thresh == 0.1 and lower.batch_size == 2
    assert lower(rgb, color_order="RGB")["class_names"] == ["red", "green"]


def test_half_precision_on_cpu_is_bfloat16_and_close(predictor):
    rgb = make_image()
    full = predictor(rgb, color_order="RGB")
    half = Predictor(ChannelMeanDetector(), CLASS_NAMES, half=True)(rgb, color_order="RGB")
    assert half["scores"].dtype == torch.float32 and half["class_names"] == full["class_names"]
    assert torch.allclose(half["scores"], full["scores"], atol=1e-2)


def test_bad_inputs_raise_clear_errors(predictor, tmp_path):
    rgb = make_image()
    with pytest.raises(ValueError, match="expected a float tensor in 0..1, got torch.uint8; divide by 255"):
        predictor(torch.from_numpy(rgb).permute(2, 0, 1))
    with pytest.raises(ValueError, match="tensor values must lie in 0..1"):
        predictor(torch.full((3, 4, 4), 2.0))
    with pytest.raises(ValueError, match=r"expected a Tensor\[3, H, W\]"):
        predictor(torch.zeros(4, 4, 3))
    with pytest.raises(ValueError, match="expected uint8 pixels 0..255, got float64"):
        predictor(rgb / 255.0, color_order="RGB")
    with pytest.raises(ValueError, match=r"input 1: expected an \[H, W, 3\] array"):
        predictor([rgb, rgb[..., 0]], color_order="RGB")
    with pytest.raises(TypeError, match="input 0: expected a path, a numpy"):
        predictor(3.5)
    from detect.data.image_io import ImageReadError

    with pytest.raises(ImageReadError, match="missing.png"):
        predictor(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="2 class names for a model with num_classes=3"):
        Predictor(ChannelMeanDetector(), ["a", "b"])


def test_bad_checkpoints_name_the_file(tmp_path):
    from detect.engine.checkpoint import CheckpointError, save_checkpoint

    truncated = tmp_path / "truncated.pth"
    data = save_stand_in_checkpoint(tmp_path / "good.pth").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        Predictor.from_checkpoint(truncated)
    no_config = tmp_path / "no_config.pth"
    save_checkpoint(no_config, {"model": ChannelMeanDetector().state_dict(), "class_names": CLASS_NAMES})
    with pytest.raises(CheckpointError, match="no_config.pth: its config has no 'model' section"):
        Predictor.from_checkpoint(no_config)
    wrong = tmp_path / "wrong.pth"
    save_checkpoint(wrong, {"model": {"other": torch.zeros(1)}, "class_names": CLASS_NAMES,
                            "config": {"model": {"name": "test_channel_mean"}}})
    with pytest.raises(CheckpointError, match="wrong.pth: its weights do not fit the model"):
        Predictor.from_checkpoint(wrong)
