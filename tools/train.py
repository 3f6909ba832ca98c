#!/usr/bin/env python
"""Train a detector from a config file.

    python tools/train.py configs/faster_rcnn/shapes_demo.py
    python tools/train.py configs/faster_rcnn/r50_fpn_voc.py --set data.root=/data/VOCdevkit/VOC2007 train.optimizer.lr=0.01
    python tools/train.py CONFIG --resume auto                 # continue <output_dir>/last.pth
    python tools/train.py CONFIG --weights runs/coco/best.pth  # fine-tune from a model
    torchrun --nproc_per_node=4 tools/train.py CONFIG          # distributed (NCCL on GPUs, gloo on CPU)

Everything happens in detect.engine.launch.train; see its docstring for the outputs.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detect.config import ConfigError  # noqa: E402
from detect.engine.checkpoint import CheckpointError  # noqa: E402
from detect.engine.trainer import NonFiniteLossError  # noqa: E402
from detect.engine.launch import train_from_args  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file (configs/...py)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config values: train.optimizer.lr=0.01 data.batch_size=4 (+key=value adds a key)")
    parser.add_argument("--output-dir", help="run directory (default: the config's output_dir)")
    parser.add_argument("--resume", metavar="CKPT|auto", help="continue a run from a checkpoint, or 'auto' for <output_dir>/last.pth")
    parser.add_argument("--weights", metavar="CKPT", help="initialise the model only (fine-tuning)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: the config's train.device, 'auto')")
    args = parser.parse_args(argv)
    try:
        train_from_args(args)
    except (ConfigError, CheckpointError, NonFiniteLossError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
