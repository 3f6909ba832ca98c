#!/usr/bin/env python
"""Print a table of every backbone: outputs, channels, strides, parameters, forward latency.

    python tools/backbones_table.py [--names resnet50 tv:vgg16] [--size 224] [--threads 2]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detect.cli import add_debug_argument, tool_main  # noqa: E402


@tool_main
def main(argv=None):
    from backbones.summary import default_names, format_table, summarize
    from detect.benchmarks.common import machine_info, set_threads

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", nargs="+", default=None,
                        help=f"backbones to build (default: {' '.join(default_names())})")
    parser.add_argument("--size", type=int, default=224, help="square input size in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.threads is not None:
        set_threads(args.threads)
    rows = summarize(args.names, size=args.size, repeats=args.repeats)
    print(format_table(rows, size=args.size))
    print(f"\n{machine_info()}; batch 1, random weights, eval mode, median of {args.repeats}")


if __name__ == "__main__":
    main()
