#!/usr/bin/env python
"""Train a detector from a config file.

    python tools/train.py configs/faster_rcnn/shapes_demo.py
    python tools/train.py configs/faster_rcnn/r50_fpn_voc.py --set data.root=/data/VOCdevkit/VOC2007 train.optimizer.lr=0.01
    python tools/train.py CONFIG --resume auto                 # continue <output_dir>/last.pth
    python tools/train.py CONFIG --weights runs/coco/best.pth  # fine-tune from a model
    python tools/train.py CONFIG --time-budget 20m             # fewer epochs, fitted to the measured speed
    python tools/train.py CONFIG --print-config                # the resolved config as JSON; trains nothing
    torchrun --nproc_per_node=4 tools/train.py CONFIG          # distributed (NCCL on GPUs, gloo on CPU)

Everything happens in detect.engine.launch.train; see its docstring for the outputs.
Ctrl+C writes last.pth where training stopped and exits with status 130.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detect.cli import add_debug_argument, tool_main  # noqa: E402
from detect.engine.launch import train_from_args  # noqa: E402


@tool_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file (configs/...py)")
    parser.add_argument("--data", metavar="PATH",
                        help="train on the dataset at PATH (VOC folder, COCO JSON + images, YOLO data.yaml or "
                             "images/ + labels/): its layout and class names are detected, a missing validation "
                             "split is drawn from train (seeded); --set applies on top"),
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config values: train.optimizer.lr=0.01 data.batch_size=4 (+key=value adds a key)")
    parser.add_argument("--output-dir", help="run directory (default: the config's output_dir)")
    parser.add_argument("--resume", metavar="CKPT|auto", help="continue a run from a checkpoint, or 'auto' for <output_dir>/last.pth")
    parser.add_argument("--weights", metavar="CKPT", help="initialise the model only (fine-tuning)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: the config's train.device, 'auto')")
    parser.add_argument("--time-budget", metavar="DURATION",
                        help="finish within this wall time: 90s, 20m, 1.5h or seconds (sets train.time_budget)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (after --set) as JSON and exit without training")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    train_from_args(args)


if __name__ == "__main__":
    main()
