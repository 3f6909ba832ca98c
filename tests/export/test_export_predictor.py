"""The exported Predictor equals the PyTorch Predictor on a demo-kind checkpoint; tools/infer.py serves it."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from detect.errors import UserInputError
from detect.export import check_image, compare_detections, export_checkpoint
from detect.inference.predictor import Predictor

from export_fixtures import CHECK_SIZES, CLASS_NAMES, SMALL_FASTER_RCNN, TRACE_SIZE, load_tool, save_small_checkpoint


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    checkpoint = save_small_checkpoint(folder / "best.pth", SMALL_FASTER_RCNN)
    report = export_checkpoint(checkpoint, "onnx", trace_size=TRACE_SIZE, check_sizes=CHECK_SIZES)
    assert report.passed and report.path == folder / "best.onnx"
    return checkpoint, report.path


@pytest.mark.parity
def test_exported_predictor_equals_the_pytorch_predictor(exported):
    checkpoint, onnx_path = exported
    image = (check_image(110, 140, seed=11).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    for optimize in (False, True):  # the optimized path moves boxes by float rounding only
        torch_predictor = Predictor.from_checkpoint(checkpoint, optimize=optimize)
        onnx_predictor = Predictor.from_checkpoint(onnx_path)  # dispatches to from_exported
        assert onnx_predictor.class_names == CLASS_NAMES and onnx_predictor.task == "detection"
        expected, got = torch_predictor(image, color_order="RGB"), onnx_predictor(image, color_order="RGB")
        assert len(got["scores"]) == len(expected["scores"]) > 0
        assert compare_detections(expected, got, (110, 140)).passed
        assert sorted(got["class_names"]) == sorted(expected["class_names"])
        assert got["scores"].tolist() == sorted(got["scores"].tolist(), reverse=True)
    # A batch (a list) and a threshold filter the same way.
    both = Predictor.from_exported(onnx_path, score_thresh=0.3)([image, image[:, ::-1]], color_order="RGB")
    assert len(both) == 2 and all(float(d["scores"].min()) >= 0.3 for d in both if len(d["scores"]))


def test_a_threshold_below_the_exported_one_is_refused(exported):
    with pytest.raises(UserInputError, match="below the 0.05 exported into the graph"):
        Predictor.from_exported(exported[1], score_thresh=0.01)


def test_tools_infer_serves_an_onnx_file(exported, tmp_path):
    main = load_tool("infer")

    image = (check_image(90, 120, seed=5).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image[:, :, ::-1])
    main(["--checkpoint", str(exported[1]), "--source", str(tmp_path / "a.png"), "--output", str(tmp_path / "out"),
          "--quiet"])
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "detections.json"]
    records = json.loads((out / "detections.json").read_text())
    assert len(records) == 1
    record = records[0]
    assert record["source"] == str(tmp_path / "a.png") and record["frame"] is None
    assert record["output"] == str(out / "a.png") and (record["height"], record["width"]) == (90, 120)
    # The record holds what the exported Predictor finds on that file, and it found something.
    expected = Predictor.from_exported(exported[1])(cv2.imread(str(tmp_path / "a.png")), color_order="BGR")
    assert len(record["detections"]) == len(expected["scores"]) > 0
    # (the JSON rounds boxes to 2 decimals and scores to 5)
    np.testing.assert_allclose([d["box"] for d in record["detections"]], expected["boxes"].numpy(), rtol=0, atol=0.0051)
    np.testing.assert_allclose([d["score"] for d in record["detections"]], expected["scores"].numpy(), rtol=0,
                               atol=6e-6)
    assert [d["class_name"] for d in record["detections"]] == expected["class_names"]
    assert [d["label"] for d in record["detections"]] == expected["labels"].tolist()
    # The annotated copy: the input's size, with the boxes drawn on it.
    annotated = cv2.imread(str(out / "a.png"))
    assert annotated is not None and annotated.shape == (90, 120, 3)
    assert (annotated != image[:, :, ::-1]).any()


def test_the_runtime_runs_an_exported_file_without_the_library(exported, tmp_path):
    """detect/export/runtime.py copied alone beside the file serves it: no model code imported."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import detect.export.runtime as runtime

    shutil.copy(runtime.__file__, tmp_path / "standalone_runtime.py")
    script = (
        "import sys, torch\n"
        "from standalone_runtime import ExportedModel\n"
        f"model = ExportedModel({str(exported[1])!r}, num_threads=1)\n"
        "out = model(torch.rand(3, 70, 90, generator=torch.Generator().manual_seed(0)))\n"
        "assert not any(name == 'detect' or name.startswith('detect.') for name in sys.modules), 'detect imported'\n"
        "print(model.class_names, sorted(out), tuple(out['boxes'].shape[1:]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PATH": "", "PYTHONPATH": str(tmp_path), "HOME": str(Path.home())})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"{CLASS_NAMES} ['boxes', 'labels', 'scores'] (4,)"
