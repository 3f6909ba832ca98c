#!/usr/bin/env python
"""The dataset doctor: counts, class histogram, box sizes and every problem, per split.

    python tools/check_dataset.py --data ../shared/data/BCCD          # any VOC / COCO / YOLO folder or file
    python tools/check_dataset.py --format voc --root ../shared/data/BCCD
    python tools/check_dataset.py --format coco --image-dir coco/val2017 --ann-file coco/annotations/instances_val2017.json
    python tools/check_dataset.py --format yolo --image-dir data/images/train --class-names cat dog
    python tools/check_dataset.py --config configs/faster_rcnn/r50_fpn_voc.py --split train val

Exits 1 when a problem would stop training under the check policy (default "raise"),
2 when the dataset cannot be found or read at all, else 0. Images are decoded (to find corrupt files) when a split has at most 5000 images
or with --decode; --no-decode skips that.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detect.cli import add_debug_argument, one_line, tool_main  # noqa: E402
from detect.errors import UserInputError  # noqa: E402
from detect.data.doctor import config_source, diagnose, source_config  # noqa: E402


@tool_main(return_code=True)
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", metavar="PATH", help="a dataset folder or file of any layout (VOC, COCO JSON, "
                                                       "YOLO data.yaml or images/ + labels/): detected, then checked")
    parser.add_argument("--config", help="a config file; its data section is checked")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (with --config)")
    parser.add_argument("--format", choices=("coco", "voc", "yolo", "shapes", "pennfudan", "sbd"))
    parser.add_argument("--root", help="VOC root (JPEGImages, Annotations, ImageSets) or shapes root")
    parser.add_argument("--image-dir", help="COCO / YOLO image folder")
    parser.add_argument("--ann-file", help="COCO instances JSON")
    parser.add_argument("--label-dir", help="YOLO label folder (default: images -> labels)")
    parser.add_argument("--split", nargs="*", help="splits to check (VOC default: train val test that exist)")
    parser.add_argument("--class-names", nargs="*", help="class list to check against (VOC default: derived)")
    parser.add_argument("--check-policy", choices=("raise", "drop", "clip"), help="policy the verdict assumes")
    decode = parser.add_mutually_exclusive_group()
    decode.add_argument("--decode", dest="decode", action="store_true", default=None, help="decode every image")
    decode.add_argument("--no-decode", dest="decode", action="store_false", help="never decode images")
    parser.add_argument("--workers", type=int, default=2, help="decoding threads")
    add_debug_argument(parser)
    args = parser.parse_args(argv)

    if not (args.config or args.format or args.data):
        parser.error("give --data PATH, --config or --format with the dataset's location")
    # a path or config that points nowhere: one-line error and exit code 2 (detect.cli)
    try:  # resolving the arguments into a data config: its ValueError / KeyError name what is missing
        if args.data and not args.config:
            data, splits = source_config(None, data_path=args.data, splits=args.split, class_names=args.class_names,
                                         check_policy=args.check_policy or "raise")
        elif args.config:
            data, splits = config_source(args.config, args.set, splits=args.split, check_policy=args.check_policy,
                                         data_path=args.data)
        else:
            data, splits = source_config(
                args.format, splits=args.split, root=args.root, image_dir=args.image_dir, ann_file=args.ann_file,
                label_dir=args.label_dir, class_names=args.class_names, check_policy=args.check_policy or "raise")
    except (ValueError, KeyError) as exc:
        raise UserInputError(one_line(exc)) from exc
    report = diagnose(data, splits, decode=args.decode, workers=args.workers)
    print(report.format())
    return 1 if report.stops_training else 0


if __name__ == "__main__":
    sys.exit(main())
