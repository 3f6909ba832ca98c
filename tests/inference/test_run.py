"""Sources, drawing, video in -> video out, clear errors, and tools/infer.py end to end."""
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detect import Predictor
from detect.inference import OutputError, SourceError, class_color, draw_detections, open_sources, run_inference
from detect.inference.sources import ImageFiles, VideoStream, VideoWriter
from inference_stand_in import CLASS_NAMES, ChannelMeanDetector, make_image, register, save_stand_in_checkpoint, write_png, write_video

register()
REPO = Path(__file__).resolve().parents[2]


def count_frames(path):
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    return frames, fps


@pytest.fixture
def predictor():
    return Predictor(ChannelMeanDetector(), CLASS_NAMES, batch_size=5)


def test_video_in_video_out_same_frames_and_fps(predictor, tmp_path):
    source = tmp_path / "clip.mp4"
    frames = write_video(source, num_frames=12, fps=7.0)
    result = run_inference(predictor, source, tmp_path / "out", progress=False)  # batches of 5, 5, 2
    out = tmp_path / "out" / "clip.mp4"
    assert result.videos == [out] and result.frames == 12 and result.detections == 36
    assert count_frames(out) == (12, pytest.approx(7.0))
    records = json.loads(result.json_path.read_text())
    assert [r["frame"] for r in records] == list(range(12))
    assert {r["source"] for r in records} == {str(source)} and records[0]["output"] == str(out)
    # The frames went through as RGB: the blue score follows the blue ramp written into the video.
    blue = [next(d["score"] for d in r["detections"] if d["class_name"] == "blue") for r in records]
    expected = [f[..., 2].mean() / 255 for f in frames]
    assert np.allclose(blue, expected, atol=0.03) and blue[-1] > blue[0] + 0.5


def test_images_directory_and_glob(predictor, tmp_path):
    images = tmp_path / "src" / "images"
    images.mkdir(parents=True)
    for i in range(3):
        write_png(images / f"im{i}.png", make_image(seed=i))
    (images / "notes.txt").write_text("ignored")
    write_video(images / "v.avi", num_frames=3, fourcc="MJPG")
    sources = open_sources(images)
    assert [type(s) for s in sources] == [ImageFiles, VideoStream]  # sorted: im0..2.png, notes, v.avi
    assert len(sources[0]) == 3 and sources[1].frame_count == 3
    result = run_inference(predictor, images, tmp_path / "out", progress=False)
    assert sorted(p.name for p in result.images) == ["im0.png", "im1.png", "im2.png"]
    assert result.frames == 6 and [p.name for p in result.videos] == ["v.mp4"]
    annotated = cv2.imread(str(tmp_path / "out" / "im0.png"))
    assert annotated.shape == (48, 64, 3) and not np.array_equal(annotated[..., ::-1], make_image(seed=0))
    # A glob over two folders with equal file names keeps both outputs.
    other = tmp_path / "src" / "other"
    other.mkdir()
    write_png(other / "im0.png", make_image(seed=5))
    result = run_inference(predictor, str(tmp_path / "src" / "*" / "im0.png"), tmp_path / "out2", progress=False)
    assert sorted(p.name for p in result.images) == ["im0.png", "im0_1.png"]
    records = json.loads(result.json_path.read_text())
    assert [r["frame"] for r in records] == [None, None] and records[0]["height"] == 48


def test_same_detections_through_run_inference_and_predictor(predictor, tmp_path):
    path = write_png(tmp_path / "a.png", make_image())
    result = run_inference(predictor, path, tmp_path / "out", save_images=False, progress=False)
    assert result.images == [] and result.frames == 1
    (record,) = json.loads(result.json_path.read_text())
    direct = predictor(path)
    assert [d["class_name"] for d in record["detections"]] == direct["class_names"]
    assert [d["score"] for d in record["detections"]] == pytest.approx(direct["scores"].tolist(), abs=1e-5)
    assert record["detections"][0]["box"] == pytest.approx(direct["boxes"][0].tolist(), abs=0.01)


def test_unreadable_video_and_missing_sources(predictor, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(SourceError, match=r"cannot open video .*broken.mp4: the file is missing, truncated"):
        run_inference(predictor, bad, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # failed before writing anything
    with pytest.raises(FileNotFoundError, match="is not an existing file, directory, glob pattern or webcam"):
        open_sources(tmp_path / "nothing.jpg")
    with pytest.raises(FileNotFoundError, match="no images .* or videos .* in pattern"):
        open_sources(str(tmp_path / "*.png"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="in directory"):
        open_sources(tmp_path / "empty")
    (tmp_path / "a.gifx").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown file type '.gifx'"):
        open_sources(tmp_path / "a.gifx")
    with pytest.raises(SourceError, match="cannot open webcam 9"):
        open_sources(9)


def test_unwritable_output_paths(predictor, tmp_path):
    image = write_png(tmp_path / "a.png", make_image())
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(OutputError, match=r"cannot write to output directory .*a_file/out.*choose a writable --output"):
        run_inference(predictor, image, blocker / "out", progress=False)
    with pytest.raises(OutputError, match=r"cannot write video .*missing_dir/v.mp4: no writer opened with codecs avc1, mp4v"):
        VideoWriter(tmp_path / "missing_dir" / "v.mp4", 10, (64, 48))
    with pytest.raises(OutputError, match="codecs XXXX"):
        VideoWriter(tmp_path / "v.mp4", 10, (64, 48), codecs=("XXXX",))


def test_video_writer_falls_back_to_mp4v(tmp_path):
    with VideoWriter(tmp_path / "v.mp4", 5, (32, 24), codecs=("XXXX", "mp4v")) as writer:
        assert writer.codec == "mp4v"
        for _ in range(4):
            writer.write(np.zeros((24, 32, 3), np.uint8))
        with pytest.raises(ValueError, match="frame of size 10x10, the video is 32x24"):
            writer.write(np.zeros((10, 10, 3), np.uint8))
    assert count_frames(tmp_path / "v.mp4") == (4, pytest.approx(5.0))


def test_draw_detections_colours_and_copy():
    image = np.zeros((60, 80, 3), np.uint8)
    detections = {"boxes": torch.tensor([[10.0, 30.0, 50.0, 55.0]]), "scores": torch.tensor([0.9]),
                  "labels": torch.tensor([2]), "class_names": ["green"]}
    rgb = draw_detections(image, detections, line_width=2)
    bgr = draw_detections(image, detections, color_order="BGR", line_width=2)
    assert image.max() == 0  # input untouched
    colour = class_color(2)
    assert tuple(rgb[45, 10]) == colour and tuple(bgr[45, 10]) == colour[::-1]  # left edge of the box
    assert rgb[45, 30].max() == 0  # inside the box stays clear
    assert (rgb[:30, 10:50] != 0).any()  # the label sits above the box
    assert class_color(1) != class_color(2) != class_color(3)
    with pytest.raises(ValueError, match="color_order must be 'RGB' or 'BGR'"):
        draw_detections(image, detections, color_order="HSV")


def load_tool():
    spec = importlib.util.spec_from_file_location("infer_tool", REPO / "tools" / "infer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_infer_tool_end_to_end(tmp_path, capsys):
    checkpoint = save_stand_in_checkpoint(tmp_path / "ckpt.pth", scale=1.0, box_score_thresh=0.05)
    image = write_png(tmp_path / "in.png", make_image())
    video = tmp_path / "in.mp4"
    write_video(video, num_frames=5, fps=4.0)
    tool = load_tool()
    result = tool.main(["--checkpoint", str(checkpoint), "--source", str(image), "--output", str(tmp_path / "o1"),
                        "--score-thresh", "0.3", "--quiet"])
    records = json.loads((tmp_path / "o1" / "detections.json").read_text())
    assert [d["class_name"] for d in records[0]["detections"]] == ["red", "green"]
    assert (tmp_path / "o1" / "in.png").is_file() and result.frames == 1
    result = tool.main(["--checkpoint", str(checkpoint), "--source", str(video), "--output", str(tmp_path / "o2"),
                        "--batch-size", "2", "--half", "--quiet"])
    assert count_frames(tmp_path / "o2" / "in.mp4") == (5, pytest.approx(4.0))
    assert len(json.loads((tmp_path / "o2" / "detections.json").read_text())) == 5
    assert "5 images/frames" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="error: source .*nope.png"):
        tool.main(["--checkpoint", str(checkpoint), "--source", str(tmp_path / "nope.png"), "--quiet"])
    with pytest.raises(SystemExit, match="error: checkpoint .*none.pth: no such file"):
        tool.main(["--checkpoint", str(tmp_path / "none.pth"), "--source", str(image), "--output", str(tmp_path / "o3")])


def test_output_that_is_an_input_or_its_folder_is_refused_before_any_work(predictor, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    image = write_png(src / "a.png", make_image())
    before = image.read_bytes()
    with pytest.raises(OutputError, match=rf"--output {src} is the folder of the input {image}: .*overwrite"):
        run_inference(predictor, src, src, progress=False)
    with pytest.raises(OutputError, match=rf"--output {image} is the input file {image}; --output takes a directory"):
        run_inference(predictor, str(src / "*.png"), image, progress=False)
    video = tmp_path / "clips" / "clip.mp4"
    video.parent.mkdir()
    write_video(video, num_frames=3)
    with pytest.raises(OutputError, match=rf"is the folder of the input {video}"):
        run_inference(predictor, video, video.parent, progress=False)  # clip.mp4 -> clips/clip.mp4
    assert image.read_bytes() == before and sorted(p.name for p in src.iterdir()) == ["a.png"]
    assert sorted(p.name for p in video.parent.iterdir()) == ["clip.mp4"]


def test_an_earlier_runs_outputs_are_kept_unless_exist_ok(predictor, tmp_path):
    image = write_png(tmp_path / "a.png", make_image())
    out = tmp_path / "out"
    first = run_inference(predictor, image, out, progress=False)
    first_json = (out / "detections.json").read_text()
    second = run_inference(predictor, image, out, progress=False)
    third = run_inference(predictor, image, out, progress=False)
    assert (first.output_dir, second.output_dir, third.output_dir) == (out, tmp_path / "out-2", tmp_path / "out-3")
    assert second.json_path == tmp_path / "out-2" / "detections.json" and second.images == [tmp_path / "out-2" / "a.png"]
    assert (out / "detections.json").read_text() == first_json
    (out / "detections.json").write_text("[]")
    again = run_inference(predictor, image, out, progress=False, exist_ok=True)
    assert again.output_dir == out and json.loads((out / "detections.json").read_text()) != []
    (tmp_path / "empty").mkdir()  # an existing empty folder is used as it is
    assert run_inference(predictor, image, tmp_path / "empty", progress=False).output_dir == tmp_path / "empty"


def test_infer_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        load_tool().main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "default: the model's own score_thresh" in out and "0.05 for Faster R-CNN" in out
    assert "(default: runs/infer;" in out and "--exist-ok" in out and "--debug" in out
    with pytest.raises(SystemExit) as info:  # a threshold no score can pass is refused, not run
        load_tool().main(["--checkpoint", "c.pth", "--source", "a.png", "--score-thresh", "1.5"])
    assert info.value.code == 2 and "--score-thresh: 1.5 is outside 0..1" in capsys.readouterr().err
