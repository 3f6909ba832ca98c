"""`make demo`'s job end to end on a tiny shapes set: generate -> train -> checkpoint ->
evaluate -> infer on a held-out image and on a generated video."""
import json

import cv2
import pytest

import numpy as np
from PIL import Image

from detect.demo import DEMO_CONFIGS, demo_config, run_demo

# What makes each family's demo recipe tiny: 96 px images (YOLOv1: a 3 x 3 grid on ResNet-18's c5;
# FCN: the images' own size, as its shapes recipe).
TINY_MODEL = {
    "faster_rcnn": ["model.min_size=96", "model.max_size=96"],
    "yolov1": ["model.input_size=[96, 96]", "model.grid_size=3"],
    "fcn": [],
}
METRIC = {"faster_rcnn": "bbox/AP50", "yolov1": "bbox/AP50", "fcn": "sem_seg/mIoU"}


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(name for name in TINY_MODEL if name in DEMO_CONFIGS))
def test_demo_runs_every_stage_and_writes_its_outputs(tmp_path, capsys, model):
    overrides = [
        f"data.root={tmp_path / 'shapes'}",
        "data.shapes.num_images=24",
        "data.shapes.image_size=96",
        "data.num_workers=0",
        *TINY_MODEL[model],
        "train.epochs=1",
        "train.progress_bar=False",
        "train.plots=False",
        "eval.interval=1",
    ]
    result = run_demo(demo_config(model), output_dir=tmp_path / "demo", overrides=overrides)

    assert 0.0 <= result["metrics"][METRIC[model]] <= 1.0
    outputs = result["outputs"]
    assert outputs["checkpoint"].endswith(".pth")
    image = cv2.imread(outputs["annotated image"])
    assert image is not None and image.shape == (96, 96, 3)
    source, annotated = cv2.VideoCapture(outputs["input video"]), cv2.VideoCapture(outputs["annotated video"])
    assert annotated.isOpened()
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == int(source.get(cv2.CAP_PROP_FRAME_COUNT)) == 48
    assert annotated.get(cv2.CAP_PROP_FPS) == pytest.approx(source.get(cv2.CAP_PROP_FPS)) == pytest.approx(12.0)
    records = json.loads(open(outputs["segmentation JSON" if model == "fcn" else "detections JSON"]).read())
    assert isinstance(records, list) and len(records) == 48  # one record per frame
    printed = capsys.readouterr().out
    assert f"shapes val {METRIC[model]} =" in printed and outputs["annotated video"] in printed
    if model == "fcn":  # areas per frame; the held-out image's palette label PNG
        assert all(sum(r["areas"].values()) == 96 * 96 for r in records)
        labels = np.array(Image.open(outputs["label PNG"]))
        assert labels.shape == (96, 96) and labels.max() <= 3
