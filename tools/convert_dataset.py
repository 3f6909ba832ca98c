#!/usr/bin/env python
"""Convert VOC or YOLO-txt annotations to a COCO instances JSON.

    python tools/convert_dataset.py voc --root ../shared/data/BCCD --split train --out bccd_train.json \
        --class-names RBC WBC Platelets --check-policy drop
    python tools/convert_dataset.py yolo --image-dir data/images/train --out train.json --class-names cat dog
    python tools/convert_dataset.py --data path/to/any/dataset --out-dir coco_json/   # every split: <split>.json

The boxes written are the ones the dataset readers would train on (same parsing, same
checks; --check-policy decides what happens to bad annotations, default: stop and list them).
Read the result with detect.data.CocoDetection(image_dir, out).
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detect.cli import add_debug_argument, tool_main  # noqa: E402
from detect.data.convert import convert_split, voc_to_coco, yolo_to_coco  # noqa: E402


@tool_main(return_code=True)
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", metavar="PATH", help="any dataset folder or file (VOC, COCO, YOLO; layout detected): "
                                                       "converts its splits (--split) into --out-dir/<split>.json")
    parser.add_argument("--out-dir", help="with --data: output folder (default: the current folder)")
    parser.add_argument("--split", dest="data_splits", nargs="*", help="with --data: splits to convert (default: all)")
    parser.add_argument("--class-names", dest="data_class_names", nargs="*", help="with --data: class list "
                        "(default: derived as training derives it)")
    parser.add_argument("--check-policy", dest="data_check_policy", choices=("raise", "drop", "clip"), default="raise")
    sub = parser.add_subparsers(dest="source", required=False)
    voc = sub.add_parser("voc", help="Pascal VOC layout -> COCO JSON")
    voc.add_argument("--root", required=True)
    voc.add_argument("--split", required=True)
    yolo = sub.add_parser("yolo", help="YOLO txt -> COCO JSON")
    yolo.add_argument("--image-dir", required=True)
    yolo.add_argument("--label-dir")
    for p in (voc, yolo):
        p.add_argument("--out", required=True, help="output JSON path")
        p.add_argument("--class-names", nargs="*", help="default: derived as training derives them (VOC: the train "
                                                         "split's object names, sorted; YOLO: classes.txt / data.yaml)")
        p.add_argument("--check-policy", choices=("raise", "drop", "clip"), default="raise")
        add_debug_argument(p)
    args = parser.parse_args(argv)
    if args.data:
        return _convert_data_path(args)
    if args.source is None:
        parser.error("give --data PATH or a source (voc / yolo)")
    names = args.class_names
    if names == ["derive"]:
        names = "derive"
    # bad annotations or paths: one-line error and exit code 2 (detect.cli)
    if args.source == "voc":
        summary = voc_to_coco(args.root, args.split, args.out, class_names=names, check_policy=args.check_policy)
    else:
        summary = yolo_to_coco(args.image_dir, args.out, class_names=names, label_dir=args.label_dir,
                               check_policy=args.check_policy)
    print(f"wrote {args.out}: {json.dumps(summary)}")
    return 0


def _convert_data_path(args) -> int:
    from detect.data.sources import SPLITS, detect_layout

    # bad annotations or paths: one-line error and exit code 2 (detect.cli)
    data = detect_layout(args.data)
    if args.data_class_names:
        data["class_names"] = args.data_class_names
    splits = args.data_splits or [s for s in SPLITS if s in data]
    out_dir = Path(args.out_dir or ".")
    for split in splits:
        out = out_dir / f"{split}.json"
        summary = convert_split(data, split, out, check_policy=args.data_check_policy)
        print(f"wrote {out}: {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
