#!/usr/bin/env python
"""Evaluate a trained model on a split of its data (default: val).

    python tools/eval.py --checkpoint runs/shapes_demo/best.pth           # the checkpoint's own config
    python tools/eval.py configs/faster_rcnn/bccd_r50_fpn.py --checkpoint runs/bccd/best.pth --split test
    python tools/eval.py --checkpoint CKPT --save-results detections.json  # COCO-format results too

Results are labelled by the split (test/bbox/AP50, test/loss). Into --output-dir (default:
eval_<split> beside the checkpoint) go <split>_metrics.json (the labelled metrics, the
confusion matrix and the per-class precision-recall points) and, for box metrics,
<split>_confusion_matrix.png and <split>_pr_curves.png. A segmentation checkpoint (FCN) is
evaluated by mIoU: <split>/sem_seg/mIoU, fwIoU, mAcc, pAcc and a per-class IoU table, with
the pixel confusion matrix in the JSON and <split>_confusion_matrix.png (--save-results is
for box detections: tools/infer.py writes label maps). Output paths are checked before
the evaluation starts. Everything happens in detect.engine.launch.evaluate.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detect.cli import add_debug_argument, tool_main  # noqa: E402


def _epilog() -> str:
    from detect.evaluation import describe_metrics

    return ("metrics (eval.metric, set with --set eval.metric=NAME) and the keys each reports, "
            "labelled by the split:\n" + describe_metrics("<split>/")
            + "\n  with eval.val_loss: <split>/loss and <split>/<loss term>")


@tool_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, epilog=_epilog(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="config file (optional with --checkpoint, which holds its config)")
    parser.add_argument("--checkpoint", metavar="CKPT", help="checkpoint to evaluate (EMA weights when the run kept them)")
    parser.add_argument("--data", metavar="PATH",
                        help="evaluate on the dataset at PATH (any layout --data of tools/train.py takes)"),
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="override config values")
    parser.add_argument("--save-results", metavar="PATH", help="write the detections as COCO-format results JSON (detectors)")
    parser.add_argument("--split", default="val", help="data split to evaluate (default: val)")
    parser.add_argument("--output-dir", default="auto", metavar="DIR",
                        help="where the metrics JSON and plots go (default: eval_<split> beside the checkpoint, "
                             "or under the config's output_dir)")
    parser.add_argument("--no-report", dest="output_dir", action="store_const", const=None,
                        help="write no metrics JSON and no plots")
    parser.add_argument("--device", help="cpu, cuda, cuda:N")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.config is None and args.checkpoint is None:
        parser.error("give a CONFIG, a --checkpoint, or both")
    from detect.engine.launch import evaluate_from_args

    return evaluate_from_args(args)


if __name__ == "__main__":
    main()
