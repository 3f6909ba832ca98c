#!/usr/bin/env python
"""Export a trained model to ONNX or TorchScript, checked against PyTorch before it is kept.

    python tools/export.py --checkpoint runs/demo/best.pth --format onnx
    python tools/export.py --checkpoint best.pth --format torchscript --output model.torchscript
    python tools/infer.py --checkpoint runs/demo/best.onnx --source image.jpg   # serve it

The file takes one image [3, H, W] float32 RGB 0..1 of any height and width and returns the
fields of predict (boxes, scores, labels; or sem_seg), with pre- and post-processing inside.
After writing, ONNX Runtime (or the TorchScript module) and PyTorch run on images of two
sizes other than the traced one; the export fails unless boxes agree within 0.01 px, scores
within 1e-4, labels exactly (sem_seg within 1e-4 relative). The measured differences are
printed. An existing --output is never replaced without --overwrite.
Everything is done by detect.export.export_checkpoint.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detect.cli import add_debug_argument, fraction, tool_main  # noqa: E402


@tool_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by tools/train.py")
    parser.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    parser.add_argument("--output", default=None,
                        help="file to write (default: the checkpoint's path with .onnx / .torchscript)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 17; at least 16)")
    parser.add_argument("--dynamic", action="store_true",
                        help="a dynamic batch axis; height and width are always dynamic (no family supports a "
                             "batch axis yet: it is refused with the reason)")
    parser.add_argument("--score-thresh", type=fraction, default=None,
                        help="score threshold baked into the graph (default: the model's own)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    add_debug_argument(parser)
    args = parser.parse_args(argv)

    from detect.export import export_checkpoint

    report = export_checkpoint(args.checkpoint, args.format, args.output, opset=args.opset,
                               dynamic_batch=args.dynamic, overwrite=args.overwrite, score_thresh=args.score_thresh)
    print(report.summary())
    return report


if __name__ == "__main__":
    main()
