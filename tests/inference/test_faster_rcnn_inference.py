"""The Predictor and infer.py with a real (tiny, untrained) Faster R-CNN checkpoint."""
import json

import cv2
import pytest
import torch

import detect
from detect import Predictor
from detect.data.image_io import read_image, to_tensor
from detect.engine.checkpoint import save_checkpoint
from detect.inference import run_inference
from inference_stand_in import make_image, write_png, write_video

MODEL = dict(name="faster_rcnn", backbone="resnet18", fpn=True, num_classes=2, min_size=64, max_size=96,
             fpn_channels=32, box_representation_size=64, box_score_thresh=0.2, rpn_pre_nms_top_n_test=100,
             rpn_post_nms_top_n_test=50)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = detect.build_detector(**MODEL)
    path = tmp_path_factory.mktemp("frcnn") / "tiny.pth"
    save_checkpoint(path, {"format_version": 1, "library_version": detect.__version__, "model": model.state_dict(),
                           "ema": None, "config": {"model": MODEL}, "class_names": ["cell", "blob"],
                           "color_order": "RGB", "box_format": "xyxy", "metrics": {}})
    model.eval()
    return path, model


def test_predictor_equals_the_model_on_the_same_pixels(checkpoint, tmp_path):
    path, model = checkpoint
    first = write_png(tmp_path / "a.png", make_image(48, 64, seed=1))
    second = write_png(tmp_path / "b.png", make_image(60, 40, seed=2))
    predictor = Predictor.from_checkpoint(path, score_thresh=0.1, batch_size=2, optimize=False)
    assert predictor.model.roi_heads is not None and predictor.class_names == ["cell", "blob"]
    batched = predictor([first, second])
    expected = model.predict([to_tensor(read_image(first)), to_tensor(read_image(second))])
    for ours, theirs, (height, width) in zip(batched, expected, [(48, 64), (60, 40)]):
        keep = theirs["scores"] >= 0.1
        order = torch.argsort(theirs["scores"][keep], descending=True, stable=True)
        assert len(ours["scores"]) == int(keep.sum()) > 0
        assert torch.equal(ours["scores"], theirs["scores"][keep][order])
        assert torch.equal(ours["boxes"], theirs["boxes"][keep][order])
        assert ours["class_names"] == [["cell", "blob"][k - 1] for k in ours["labels"].tolist()]
        boxes = ours["boxes"]  # in the input image's coordinates, not the resized ones
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    # A BGR array of the same file gives the same detections as the path.
    bgr = cv2.imread(str(first))
    single = predictor(bgr, color_order="BGR")
    assert torch.equal(single["boxes"], predictor(first)["boxes"])


def test_score_thresh_below_the_builders_default_returns_those_detections(tmp_path):
    """A config without box_score_thresh (the demo and BCCD recipes) builds the model with the
    builder's default 0.05; asking for 0.01 must lower the model's own threshold, not only the
    Predictor's filter, or nothing between 0.01 and 0.05 could ever come back."""
    config = {k: v for k, v in MODEL.items() if k != "box_score_thresh"}
    torch.manual_seed(0)
    model = detect.build_detector(**config)
    default = model.roi_heads.score_thresh
    assert default == 0.05
    with torch.no_grad():  # a background-leaning classifier: foreground scores around 0.04
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([3.0, 0.0, 0.0]))
    path = save_checkpoint(tmp_path / "low.pth", {"model": model.state_dict(), "config": {"model": config},
                                                   "class_names": ["cell", "blob"]})
    image = write_png(tmp_path / "a.png", make_image(48, 64, seed=1))
    low = Predictor.from_checkpoint(path, score_thresh=0.01, optimize=False)
    assert low.model.roi_heads.score_thresh == 0.01
    detections = low(image)
    assert len(detections["scores"]) > 0 and bool((detections["scores"] < default).all())
    assert bool((detections["scores"] >= 0.01).all())
    # a threshold above the model's leaves the model alone and filters its output
    high = Predictor.from_checkpoint(path, score_thresh=0.2, optimize=False)
    assert high.model.roi_heads.score_thresh == default and len(high(image)["scores"]) == 0


def test_optimized_predictor_stays_within_the_parity_tolerance(checkpoint, tmp_path):
    """The default CPU Predictor folds BatchNorm and runs channels-last: the same detections
    up to float rounding (boxes within 1e-3 px, scores within 1e-4)."""
    path, _ = checkpoint
    image = write_png(tmp_path / "a.png", make_image(48, 64, seed=1))
    plain = Predictor.from_checkpoint(path, score_thresh=0.1, optimize=False)(image)
    fast_predictor = Predictor.from_checkpoint(path, score_thresh=0.1)
    assert fast_predictor.optimized
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast_predictor.model.backbone.modules())
    fast = fast_predictor(image)
    assert len(fast["scores"]) == len(plain["scores"]) > 0
    torch.testing.assert_close(fast["scores"], plain["scores"], atol=1e-4, rtol=0)
    # Near-equal scores may swap places: match every box to its nearest counterpart.
    distance = (fast["boxes"][:, None, :] - plain["boxes"][None, :, :]).abs().amax(dim=2)
    assert float(distance.min(dim=1).values.max()) <= 1e-3


def test_infer_on_image_and_video(checkpoint, tmp_path):
    path, _ = checkpoint
    image = write_png(tmp_path / "a.png", make_image(48, 64, seed=1))
    video = tmp_path / "clip.mp4"
    write_video(video, num_frames=4, fps=6.0)
    result = run_inference(path, image, tmp_path / "out_image", progress=False)
    assert result.images == [tmp_path / "out_image" / "a.png"] and result.detections > 0
    result = run_inference(path, video, tmp_path / "out_video", batch_size=2, progress=False)
    capture = cv2.VideoCapture(str(result.videos[0]))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(6.0)
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    capture.release()
    assert len(json.loads(result.json_path.read_text())) == 4


@pytest.mark.slow
def test_infer_command_line(checkpoint, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    path, _ = checkpoint
    image = write_png(tmp_path / "a.png", make_image(48, 64, seed=1))
    repo = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, str(repo / "tools" / "infer.py"), "--checkpoint", str(path), "--source", str(image),
         "--output", str(tmp_path / "out"), "--score-thresh", "0.25", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "1 images/frames" in run.stdout and (tmp_path / "out" / "a.png").is_file()
    assert (run.stdout + run.stderr).count("images/frames") == 1  # the summary once, not also as a log line
    records = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert all(d["score"] >= 0.25 and d["class_name"] in ("cell", "blob") for d in records[0]["detections"])
