#!/usr/bin/env python
"""`make demo`: train, evaluate and run inference on the built-in shapes dataset.

    python tools/demo.py [--model faster_rcnn|yolov1|fcn] [--output-dir runs/demo] [--set train.epochs=4 ...] [--device cpu]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detect.cli import add_debug_argument, tool_main  # noqa: E402
from detect.demo import DEMO_CONFIGS, demo_config, run_demo  # noqa: E402


@tool_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="faster_rcnn", choices=sorted(DEMO_CONFIGS),
                        help="the family to demonstrate, with its shapes recipe (default: %(default)s)")
    parser.add_argument("--config", help="another recipe instead of the family's (configs/...py)")
    parser.add_argument("--output-dir", default="runs/demo")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--device", default="cpu")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    return run_demo(args.config or demo_config(args.model), args.output_dir, args.set, args.device)


if __name__ == "__main__":
    main()
