"""ONNX and TorchScript export with an output check (see :mod:`detect.export.exporter`).

::

    from detect.export import export_model, export_checkpoint, ExportedModel
    report = export_checkpoint("runs/demo/best.pth", format="onnx")   # writes runs/demo/best.onnx
    print(report.summary())                                           # the measured diffs
    model = ExportedModel("runs/demo/best.onnx")                      # ONNX Runtime, no model code
    out = model(image)                                                # {"boxes", "scores", "labels"}
"""
from detect.export.exporter import (
    BOX_TOLERANCE,
    CHECK_SIZES,
    SCORE_TOLERANCE,
    SEM_SEG_RELATIVE_TOLERANCE,
    TRACE_SIZE,
    ExportCheckError,
    ExportError,
    ExportGraph,
    ExportReport,
    SizeCheck,
    check_image,
    compare_detections,
    compare_sem_seg,
    default_output,
    export_checkpoint,
    export_model,
    run_check,
)
from detect.export.runtime import ExportedModel, ExportedModelError, is_exported_file

__all__ = [
    "BOX_TOLERANCE", "CHECK_SIZES", "SCORE_TOLERANCE", "SEM_SEG_RELATIVE_TOLERANCE", "TRACE_SIZE",
    "ExportCheckError", "ExportError", "ExportGraph", "ExportReport", "ExportedModel", "ExportedModelError",
    "SizeCheck", "check_image", "compare_detections", "compare_sem_seg", "default_output", "export_checkpoint",
    "export_model", "is_exported_file", "run_check",
]
