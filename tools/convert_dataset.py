#!/usr/bin/env python
"""Convert VOC or YOLO-txt annotations to a COCO instances JSON.

    python tools/convert_dataset.py voc --root ../shared/data/BCCD --split train --out bccd_train.json \
        --class-names RBC WBC Platelets --check-policy drop
    python tools/convert_dataset.py yolo --image-dir data/images/train --out train.json --class-names cat dog

The boxes written are the ones the dataset readers would train on (same parsing, same
checks; --check-policy decides what happens to bad annotations, default: stop and list them).
Read the result with detect.data.CocoDetection(image_dir, out).
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detect.data.checks import DatasetError  # noqa: E402
from detect.data.convert import voc_to_coco, yolo_to_coco  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="source", required=True)
    voc = sub.add_parser("voc", help="Pascal VOC layout -> COCO JSON")
    voc.add_argument("--root", required=True)
    voc.add_argument("--split", required=True)
    yolo = sub.add_parser("yolo", help="YOLO txt -> COCO JSON")
    yolo.add_argument("--image-dir", required=True)
    yolo.add_argument("--label-dir")
    for p in (voc, yolo):
        p.add_argument("--out", required=True, help="output JSON path")
        p.add_argument("--class-names", nargs="*", help="VOC: default the 20 VOC classes ('derive' to take them from "
                                                         "the annotations); YOLO: default classes.txt / data.yaml")
        p.add_argument("--check-policy", choices=("raise", "drop", "clip"), default="raise")
    args = parser.parse_args(argv)
    names = args.class_names
    if names == ["derive"]:
        names = "derive"
    try:
        if args.source == "voc":
            summary = voc_to_coco(args.root, args.split, args.out, class_names=names, check_policy=args.check_policy)
        else:
            summary = yolo_to_coco(args.image_dir, args.out, class_names=names, label_dir=args.label_dir,
                                   check_policy=args.check_policy)
    except (DatasetError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
