"""Refused options are one-line errors; a failed check leaves no file; outputs are not overwritten."""
from __future__ import annotations

import pytest
import torch

import detect.export.exporter as exporter
from detect.cli import ToolExit
from detect.export import ExportCheckError, ExportError, SizeCheck, compare_detections, compare_sem_seg, export_model

from export_fixtures import CHECK_SIZES, CLASS_NAMES, SMALL_YOLOV1, TRACE_SIZE, build, load_tool, save_small_checkpoint


@pytest.mark.parametrize("kwargs,message", [
    (dict(format="tensorrt"), "unknown export format 'tensorrt'"),
    (dict(format="onnx", opset=11), "opset 11 is too old"),
    (dict(format="torchscript", opset=17), "--opset applies to ONNX only"),
    (dict(format="onnx", dynamic_batch=True), "a batch axis (--dynamic) is not supported"),
])
def test_unsupported_options_are_one_line_errors(tmp_path, kwargs, message):
    with pytest.raises(ExportError, match=None) as info:
        export_model(build(SMALL_YOLOV1), tmp_path / "m.out", class_names=CLASS_NAMES, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "m.out").exists()


def test_the_tool_prints_one_line_and_never_overwrites(tmp_path, capsys):
    main = load_tool("export")

    checkpoint = save_small_checkpoint(tmp_path / "best.pth", SMALL_YOLOV1)
    existing = tmp_path / "best.onnx"
    existing.write_bytes(b"keep me")
    with pytest.raises(ToolExit):
        main(["--checkpoint", str(checkpoint), "--format", "onnx"])
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "already exists" in err and "\n" not in err
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(ToolExit):
        main(["--checkpoint", str(checkpoint), "--format", "onnx", "--output", str(tmp_path / "x.onnx"), "--dynamic"])
    assert "--dynamic" in capsys.readouterr().err


def test_a_failed_check_raises_with_the_diffs_and_writes_nothing(tmp_path, monkeypatch):
    def wrong(model, exported, sizes, seed=0):
        return [SizeCheck(tuple(s), 5, 5, max_box_diff=63.5) for s in sizes]

    monkeypatch.setattr(exporter, "run_check", wrong)
    path = tmp_path / "m.onnx"
    with pytest.raises(ExportCheckError, match="FAILED.*6.35e\\+01 px"):
        export_model(build(SMALL_YOLOV1), path, "onnx", CLASS_NAMES, trace_size=TRACE_SIZE, check_sizes=CHECK_SIZES)
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left behind


def test_check_sizes_must_differ_from_the_traced_one(tmp_path):
    with pytest.raises(ExportError, match="two sizes other than the traced"):
        export_model(build(SMALL_YOLOV1), tmp_path / "m.onnx", "onnx", CLASS_NAMES, trace_size=(96, 128),
                     check_sizes=((96, 128), (80, 120)))


def test_comparison_is_order_free_and_measures_the_differences():
    boxes = torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20], [1, 2, 3, 4]])
    reference = {"boxes": boxes, "scores": torch.tensor([0.5, 0.5, 0.2]), "labels": torch.tensor([1, 2, 1])}
    swapped = {"boxes": boxes[[1, 0, 2]] + torch.tensor([0.0, 0, 0, 0.004]), "scores": torch.tensor([0.5, 0.5, 0.20005]),
               "labels": torch.tensor([2, 1, 1])}
    check = compare_detections(reference, swapped, (30, 30))
    assert check.passed and check.max_box_diff == pytest.approx(0.004, abs=1e-6)
    assert check.max_score_diff == pytest.approx(5e-5, abs=1e-6)
    relabelled = dict(swapped, labels=torch.tensor([2, 1, 3]))
    assert compare_detections(reference, relabelled, (30, 30)).label_mismatches == 1
    fewer = {k: v[:2] for k, v in swapped.items()}
    assert not compare_detections(reference, fewer, (30, 30)).passed
    logits = torch.randn(4, 6, 7)
    assert compare_sem_seg({"sem_seg": logits}, {"sem_seg": logits * (1 + 5e-5)}, (6, 7)).passed
    assert not compare_sem_seg({"sem_seg": logits}, {"sem_seg": logits + 0.01 * logits.abs().max()}, (6, 7)).passed
