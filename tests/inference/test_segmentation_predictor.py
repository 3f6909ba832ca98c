"""A segmentation checkpoint through the Predictor, run_inference and tools/infer.py:
``sem_seg`` logits and a ``label_map`` with class names, colour overlays with a legend
(images and video, same frame count and fps), VOC palette label PNGs, class areas in
the JSON, and one-line refusals of the detector-only options.

The model is the real FCN family when it is registered (ResNet-18, seeded random
weights, no download), else the stand-in of ``segmentation_stand_in``; the tests that
need exact logits by hand use the stand-in's colour rule explicitly.
"""
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from detect import Predictor
from detect.data.shapes import voc_palette
from detect.engine.checkpoint import save_checkpoint
from detect.errors import UserInputError
from detect.inference import draw_segmentation, label_color, run_inference, write_label_png
from detect.modeling.registry import build_detector, list_detectors
from inference_stand_in import make_image, write_png, write_video
from segmentation_stand_in import (
    CLASS_NAMES,
    ColourSegmenter,
    checkpoint_payload,
    expected_label_map,
    make_regions_image,
    register,
    save_segmenter_checkpoint,
)

register()
REPO = Path(__file__).resolve().parents[2]
NAMES = ["background", *CLASS_NAMES]
FCN_CONFIG = {"name": "fcn", "backbone": "resnet18", "num_classes": 3, "min_size": 64, "max_size": 96}


def real_family_available() -> bool:
    return "fcn" in list_detectors()


def build_segmenter(seed=0):
    """The real FCN family on ResNet-18 with seeded random weights where it exists."""
    torch.manual_seed(seed)
    if real_family_available():
        config = dict(FCN_CONFIG)
        model = build_detector(config.pop("name"), **config)
        with torch.no_grad():  # FCN's score layers start at zero (all background): give them seeded values
            for name, parameter in model.named_parameters():
                if ".scores." in name:
                    parameter.normal_(0.0, 0.5)
        return model, FCN_CONFIG
    return ColourSegmenter(colour_init=False), {"name": "test_colour_segmenter", "num_classes": 3, "colour_init": False}


@pytest.fixture(scope="module")
def segmenter_checkpoint(tmp_path_factory):
    model, config = build_segmenter()
    path = tmp_path_factory.mktemp("ckpt") / "seg.pth"
    save_checkpoint(path, checkpoint_payload(model, CLASS_NAMES, config))
    return path, model.eval()


def count_frames(path):
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    return frames, fps


def test_predictor_gives_logits_label_map_and_class_names_by_hand():
    predictor = Predictor(ColourSegmenter(threshold=0.5), CLASS_NAMES, batch_size=2)
    assert predictor.task == "semantic_segmentation"
    small, odd = make_regions_image(40, 60), make_regions_image(37, 53)
    outputs = predictor([small, odd], color_order="RGB")
    for output, image in zip(outputs, (small, odd)):
        height, width = image.shape[:2]
        assert set(output) == {"sem_seg", "label_map", "class_names"}
        assert output["sem_seg"].shape == (4, height, width) and output["sem_seg"].dtype == torch.float32
        assert output["label_map"].shape == (height, width) and output["label_map"].dtype == torch.int64
        assert output["class_names"] == NAMES
        # logits are exactly [0.5, R, G, B] per pixel
        rgb = torch.from_numpy(image).permute(2, 0, 1).float() / 255
        assert torch.allclose(output["sem_seg"], torch.cat([torch.full((1, height, width), 0.5), rgb]), atol=1e-6)
        assert np.array_equal(output["label_map"].numpy(), expected_label_map(image))
    quarter = outputs[0]["label_map"]
    assert quarter[0, 0] == 1 and quarter[0, -1] == 2 and quarter[-1, 0] == 3 and quarter[-1, -1] == 0
    # the BGR order is honoured: red and blue swap
    swapped = predictor(small[..., ::-1].copy(), color_order="BGR")
    assert torch.equal(swapped["label_map"], outputs[0]["label_map"])


def test_from_checkpoint_on_the_segmentation_family(segmenter_checkpoint, tmp_path):
    path, model = segmenter_checkpoint
    predictor = Predictor.from_checkpoint(path)
    image = make_image(45, 67, seed=3)
    output = predictor(image, color_order="RGB")
    with torch.no_grad():
        reference = model.predict([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]["sem_seg"]
    assert output["sem_seg"].shape == (4, 45, 67) and output["class_names"] == NAMES
    assert torch.allclose(output["sem_seg"], reference, atol=1e-4 * max(1.0, float(reference.abs().max())))
    assert torch.equal(output["label_map"], output["sem_seg"].argmax(dim=0))
    assert len(output["label_map"].unique()) > 1  # not a constant map: the comparison means something


def test_score_thresholds_are_refused_for_a_segmenter(segmenter_checkpoint):
    path, model = segmenter_checkpoint
    with pytest.raises(UserInputError, match=r"score_thresh=0.3 \(--score-thresh\) filters detections, but .* is a "
                                              "semantic segmentation model that labels every pixel; leave it unset"):
        Predictor.from_checkpoint(path, score_thresh=0.3)
    with pytest.raises(UserInputError, match="score_thresh=0.5 .* labels every pixel"):
        Predictor(ColourSegmenter(), CLASS_NAMES, score_thresh=0.5)
    with pytest.raises(UserInputError, match="has no score threshold"):
        model.score_thresh = 0.5
    assert model.score_thresh is None


def test_label_png_is_voc_palette_and_round_trips(tmp_path):
    labels = torch.tensor([[0, 1, 2], [3, 255, 20]])
    path = write_label_png(tmp_path / "l.png", labels)
    png = Image.open(path)
    assert png.mode == "P"
    assert np.array_equal(np.array(png), labels.numpy())  # index = label, 255 kept
    palette = np.array(png.getpalette()).reshape(-1, 3)
    assert np.array_equal(palette[:256], voc_palette(256))
    assert palette[1].tolist() == [128, 0, 0] and palette[2].tolist() == [0, 128, 0]
    assert palette[255].tolist() == [224, 224, 192]
    assert label_color(3) == (128, 128, 0)
    with pytest.raises(ValueError, match="label values must lie in 0..255"):
        write_label_png(tmp_path / "bad.png", torch.tensor([[0, 256]]))


def test_overlay_blends_class_pixels_and_draws_a_legend():
    image = make_regions_image(120, 160)
    labels = expected_label_map(image)
    overlay = draw_segmentation(image, labels, NAMES, alpha=0.5)
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    palette = voc_palette(256).astype(np.float64)
    blended = np.round(image * 0.5 + palette[labels] * 0.5).astype(np.uint8)
    no_legend = draw_segmentation(image, labels, NAMES, legend=False)
    assert np.array_equal(no_legend[labels != 0], blended[labels != 0])
    assert np.array_equal(no_legend[labels == 0], image[labels == 0])  # background untouched
    # the legend (three classes present: three rows) sits in the top-left corner, nowhere else
    rows, cols = np.nonzero((overlay != no_legend).any(axis=2))
    assert rows.min() <= 6 and cols.min() <= 6 and rows.max() < 60 and cols.max() < 80
    assert rows.max() - rows.min() > 3 * 8  # three lines of text
    # an image with nothing but background gets no legend and is returned unchanged
    assert np.array_equal(draw_segmentation(image, np.zeros_like(labels), NAMES), image)
    with pytest.raises(ValueError, match=r"label map of shape \(2, 2\) for an image of \(120, 160\)"):
        draw_segmentation(image, np.zeros((2, 2), np.int64), NAMES)


def test_run_inference_on_images_writes_overlays_label_pngs_and_areas(tmp_path):
    predictor = Predictor(ColourSegmenter(), CLASS_NAMES)
    sources = tmp_path / "src"
    sources.mkdir()
    images = {"a.png": make_regions_image(40, 60), "b.png": make_regions_image(31, 47)}
    for name, rgb in images.items():
        write_png(sources / name, rgb)
    result = run_inference(predictor, sources, tmp_path / "out", progress=False)
    out = tmp_path / "out"
    assert result.task == "semantic_segmentation" and result.frames == 2
    assert result.json_path == out / "segmentation.json" and result.detections == 0
    assert [p.name for p in result.images] == ["a.png", "b.png"]
    assert result.label_maps == [out / "labels" / "a.png", out / "labels" / "b.png"]
    records = json.loads(result.json_path.read_text())
    for record, (name, rgb) in zip(records, images.items()):
        height, width = rgb.shape[:2]
        expected = expected_label_map(rgb)
        overlay = cv2.imread(str(out / name))
        assert overlay.shape == (height, width, 3)
        assert np.array_equal(np.array(Image.open(out / "labels" / name)), expected)
        assert record["label_png"] == str(out / "labels" / name) and record["output"] == str(out / name)
        assert (record["height"], record["width"]) == (height, width)
        assert list(record["areas"]) == NAMES
        assert sum(record["areas"].values()) == height * width
        assert list(record["areas"].values()) == np.bincount(expected.reshape(-1), minlength=4).tolist()
    assert records[0]["areas"] == {"background": 600, "red": 600, "green": 600, "blue": 600}
    assert "2 images/frames segmented" in result.summary() and "2 label PNGs" in result.summary()


def test_video_overlay_keeps_frame_count_and_fps(segmenter_checkpoint, tmp_path):
    path, _ = segmenter_checkpoint
    video = tmp_path / "clip.mp4"
    write_video(video, num_frames=6, fps=5.0, size=(48, 40))
    result = run_inference(path, video, tmp_path / "out", batch_size=4, progress=False, save_frame_labels=True)
    out_video = tmp_path / "out" / "clip.mp4"
    assert result.videos == [out_video] and result.frames == 6
    assert count_frames(out_video) == (6, pytest.approx(5.0))
    records = json.loads(result.json_path.read_text())
    assert [r["frame"] for r in records] == list(range(6))
    assert all(sum(r["areas"].values()) == 40 * 48 and list(r["areas"]) == NAMES for r in records)
    frame_labels = sorted((tmp_path / "out" / "labels" / "clip").iterdir())
    assert [p.name for p in frame_labels] == [f"{i:06d}.png" for i in range(6)]
    for record, png in zip(records, frame_labels):
        counts = np.bincount(np.array(Image.open(png)).reshape(-1), minlength=4)
        assert counts.tolist() == list(record["areas"].values()) and record["label_png"] == str(png)
    # without --frame-labels a video gets its overlay and the JSON only
    plain = run_inference(path, video, tmp_path / "plain", progress=False)
    assert plain.label_maps == [] and not (tmp_path / "plain" / "labels").exists()


def load_tool():
    spec = importlib.util.spec_from_file_location("infer_tool", REPO / "tools" / "infer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_infer_tool_on_a_segmentation_checkpoint(tmp_path, capsys):
    checkpoint = save_segmenter_checkpoint(tmp_path / "seg.pth")
    image = write_png(tmp_path / "in.png", make_regions_image(40, 60))
    tool = load_tool()
    result = tool.main(["--checkpoint", str(checkpoint), "--source", str(image), "--output", str(tmp_path / "o1"),
                        "--quiet"])
    assert result.frames == 1 and (tmp_path / "o1" / "in.png").is_file()
    assert np.array_equal(np.array(Image.open(tmp_path / "o1" / "labels" / "in.png")),
                          expected_label_map(make_regions_image(40, 60)))
    assert "1 label PNGs" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        tool.main(["--checkpoint", str(checkpoint), "--source", str(image), "--output", str(tmp_path / "o2"),
                   "--score-thresh", "0.4", "--quiet"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: score_thresh=0.4 (--score-thresh) filters detections") and "labels every pixel" in err
    result = tool.main(["--checkpoint", str(checkpoint), "--source", str(image), "--output", str(tmp_path / "o3"),
                        "--no-save-images", "--quiet"])
    assert result.images == [] and result.label_maps == [] and sorted(p.name for p in (tmp_path / "o3").iterdir()) == [
        "segmentation.json"]
