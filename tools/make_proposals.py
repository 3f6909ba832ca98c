#!/usr/bin/env python
"""Make, convert or evaluate the proposal file of a dataset split (R-CNN, Fast R-CNN).

    python tools/make_proposals.py configs/_base/bccd.py --split val --output /tmp/bccd_val_ss.pth
    python tools/make_proposals.py --data /data/VOC2007 --split test --workers 4 --output voc07_test_ss.pth
    python tools/make_proposals.py --checkpoint runs/frcnn/best.pth --split val --method rpn --output val_rpn.pth
    python tools/make_proposals.py CONFIG --split val --recall --output val_ss.pth val_rpn.pth
    python tools/make_proposals.py CONFIG --split val --convert d2_proposals.pkl --allow-pickle --output val.pth

Selective search is R-CNN's fast mode (docs/proposals.md) in --workers processes with a
progress bar; partial results are saved every --save-every images and a rerun of the same
command continues where it stopped. An existing finished --output is never replaced
without --overwrite. After writing, the recall at IoU 0.5 / 0.7 and 100 / 300 / 1000 / 2000
proposals is printed. Everything happens in detect.proposals.tool.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detect.cli import add_debug_argument, tool_main  # noqa: E402


@tool_main
def main(argv=None):
    from detect.proposals.tool import add_arguments, make_proposals_from_args

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    return make_proposals_from_args(args)


if __name__ == "__main__":
    main()
