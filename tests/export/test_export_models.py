"""Export -> ONNX Runtime / TorchScript parity for every exportable family, at sizes other than the traced one."""
from __future__ import annotations

import json
import warnings

import onnx
import pytest
import torch

from detect.export import (
    BOX_TOLERANCE,
    SCORE_TOLERANCE,
    SEM_SEG_RELATIVE_TOLERANCE,
    ExportedModel,
    check_image,
    compare_detections,
    compare_sem_seg,
    export_model,
)
from detect.export.exporter import check_proposals

from export_fixtures import (
    CHECK_SIZES,
    CLASS_NAMES,
    SMALL_FAST_RCNN,
    SMALL_FASTER_RCNN,
    SMALL_FCN,
    SMALL_RCNN,
    SMALL_YOLOV1,
    TRACE_SIZE,
    build,
)

CASES = [("faster_rcnn", SMALL_FASTER_RCNN), ("yolov1", SMALL_YOLOV1)]
# The families given proposals (a second input) and the segmenter: ONNX here, TorchScript in the slow set.
OTHER_FAMILIES = [("fast_rcnn", SMALL_FAST_RCNN), ("rcnn", SMALL_RCNN), ("fcn", SMALL_FCN)]


@pytest.mark.parametrize("format", ["onnx", pytest.param("torchscript", marks=pytest.mark.slow)])
@pytest.mark.parametrize("family,config", CASES, ids=[c[0] for c in CASES])
def test_export_matches_pytorch_at_other_sizes(tmp_path, family, config, format):
    model = build(config)
    path = tmp_path / f"model.{format}"
    report = export_model(model, path, format, CLASS_NAMES, trace_size=TRACE_SIZE, check_sizes=CHECK_SIZES)
    assert report.passed and path.is_file()
    assert [c.size for c in report.checks] == list(CHECK_SIZES)
    for check in report.checks:
        assert check.count == check.exported_count > 0  # random K=3 models give many detections to compare
        assert check.max_box_diff <= BOX_TOLERANCE and check.max_score_diff <= SCORE_TOLERANCE
        assert check.label_mismatches == 0
    assert "max |box diff|" in report.summary()

    # A third size, through the runtime a deployment uses; and an image wider than tall.
    exported = ExportedModel(path)
    assert exported.class_names == CLASS_NAMES and exported.task == "detection" and exported.format == format
    for height, width in ((150, 90), (64, 200)):
        image = check_image(height, width, seed=7)
        reference = model.predict([image])[0]
        output = exported(image)
        assert set(output) == {"boxes", "scores", "labels"}
        assert output["labels"].dtype == torch.int64 and output["boxes"].shape[1] == 4
        check = compare_detections(reference, output, (height, width))
        # both sides find things: an export that returns nothing cannot pass
        assert check.count == check.exported_count == len(output["scores"]) > 0, check.describe()
        assert check.passed, check.describe()
        assert float(output["boxes"][:, 0::2].max()) <= width and float(output["boxes"][:, 1::2].max()) <= height


@pytest.mark.parametrize("format", ["onnx", pytest.param("torchscript", marks=pytest.mark.slow)])
@pytest.mark.parametrize("family,config", OTHER_FAMILIES, ids=[c[0] for c in OTHER_FAMILIES])
def test_proposal_families_and_the_segmenter_export(tmp_path, family, config, format):
    model = build(config)
    path = tmp_path / f"model.{format}"
    report = export_model(model, path, format, CLASS_NAMES, trace_size=TRACE_SIZE, check_sizes=CHECK_SIZES)
    assert report.passed
    exported = ExportedModel(path)
    assert exported.accepts_proposals == bool(getattr(model, "accepts_proposals", False))
    for height, width in ((150, 90), (64, 200)):
        image = check_image(height, width, seed=7)
        if exported.task == "semantic_segmentation":
            reference, output = model.predict([image])[0], exported(image)
            assert output["sem_seg"].shape == (4, height, width)
            assert float(reference["sem_seg"].abs().max()) > 0  # not a vacuous comparison
            check = compare_sem_seg(reference, output, (height, width))
            assert check.max_sem_seg_relative_diff <= SEM_SEG_RELATIVE_TOLERANCE
            continue
        proposals = check_proposals(height, width, seed=7)
        reference = model.predict([image], proposals=[proposals])[0]
        output = exported(image, proposals)
        check = compare_detections(reference, output, (height, width))
        assert check.count == check.exported_count == len(output["scores"]) > 0, check.describe()
        assert check.passed, check.describe()


def test_onnx_metadata_and_dynamic_axes(tmp_path):
    model = build(SMALL_YOLOV1)
    path = tmp_path / "yolo.onnx"
    export_model(model, path, "onnx", CLASS_NAMES, trace_size=TRACE_SIZE, check_sizes=CHECK_SIZES)
    proto = onnx.load(str(path))
    metadata = json.loads({p.key: p.value for p in proto.metadata_props}["detect"])
    assert metadata["class_names"] == CLASS_NAMES and metadata["family"] == "YOLOv1"
    assert metadata["inputs"] == ["image"] and metadata["outputs"] == ["boxes", "scores", "labels"]
    assert metadata["score_thresh"] == pytest.approx(model.score_thresh)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [3, "height", "width"]


def test_the_traced_graph_follows_the_input_size_not_the_traced_one(tmp_path):
    """The regression of issue 13: resize and clip sizes were frozen at the traced size (boxes
    63-76 px off). Upscaling by 1.6 also caught a float32 size computation (200 px -> 319)."""
    model = build(SMALL_FASTER_RCNN)
    path = tmp_path / "m.onnx"
    export_model(model, path, "onnx", CLASS_NAMES, trace_size=TRACE_SIZE, check_sizes=CHECK_SIZES)
    exported = ExportedModel(path)
    image = check_image(80, 120, seed=3)  # 128 / 80 = 1.6
    output, reference = exported(image), model.predict([image])[0]
    check = compare_detections(reference, output, (80, 120))
    assert check.count == check.exported_count == len(output["scores"]) > 0, check.describe()
    assert check.passed, check.describe()


def test_exported_resize_gives_the_eager_sizes_at_many_input_sizes(tmp_path):
    """The resized size is computed in the graph in float64, as Python does in eager mode: a
    float32 computation floors 110 px * (128 / 110) to 127 (found by this export check)."""
    import onnxruntime as ort

    from detect.modeling.transform import ImageTransform

    transform = ImageTransform(128, 192, size_divisibility=32)

    class Sizes(torch.nn.Module):
        def forward(self, image):
            batch, _ = transform([image])
            return batch.tensor, torch.stack(batch.image_sizes[0])

    with warnings.catch_warnings():  # the tracer's notes on recorded constants, as in detect.export
        warnings.simplefilter("ignore")
        torch.onnx.export(Sizes(), (torch.rand(3, 96, 128),), tmp_path / "t.onnx", dynamo=False, opset_version=17,
                          input_names=["image"], dynamic_axes={"image": {1: "h", 2: "w"}})
    session = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    sizes = [(110, 140), (55, 70), (200, 300), (1, 40), (77, 333)] + torch.randint(8, 400, (25, 2), generator=generator).tolist()
    for height, width in sizes:
        image = torch.rand(3, height, width, generator=generator)
        batch, _ = transform([image])
        padded, image_size = session.run(None, {"image": image.numpy()})
        assert tuple(image_size.tolist()) == batch.image_sizes[0], (height, width)
        assert padded.shape == tuple(batch.tensor.shape)
        assert float((torch.from_numpy(padded) - batch.tensor).abs().max()) < 1e-3
