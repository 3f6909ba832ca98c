#!/usr/bin/env python
"""Evaluate a trained model on a config's validation split.

    python tools/eval.py --checkpoint runs/shapes_demo/best.pth           # the checkpoint's own config
    python tools/eval.py configs/faster_rcnn/bccd_r50_fpn.py --checkpoint runs/bccd/best.pth --set data.val.split=test
    python tools/eval.py --checkpoint CKPT --save-results detections.json  # COCO-format results too

Everything happens in detect.engine.launch.evaluate.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detect.config import ConfigError  # noqa: E402
from detect.engine.checkpoint import CheckpointError  # noqa: E402
from detect.engine.launch import evaluate_from_args  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="config file (optional with --checkpoint, which holds its config)")
    parser.add_argument("--checkpoint", metavar="CKPT", help="checkpoint to evaluate (EMA weights when the run kept them)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="override config values")
    parser.add_argument("--save-results", metavar="PATH", help="write the detections as COCO-format results JSON")
    parser.add_argument("--split", default="val", help="data split to evaluate (default: val)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N")
    args = parser.parse_args(argv)
    if args.config is None and args.checkpoint is None:
        parser.error("give a CONFIG, a --checkpoint, or both")
    try:
        evaluate_from_args(args)
    except (ConfigError, CheckpointError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
