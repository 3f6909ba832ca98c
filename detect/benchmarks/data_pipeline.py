"""data: training-pipeline throughput (decode + augment + to tensor) against torchvision v2.

    python tools/benchmark.py data --root ../shared/data/BCCD [--num-images 64] [--threads 1]

Ours is the real training item path, ``VOCDetection(..., transforms=build_transforms("train"))[i]``:
OpenCV decode straight to RGB, albumentations horizontal flip (p=0.5), scale jitter of the
content (affine zoom 0.75-1.25, bilinear, fill 114), ColorJitter(0.2, 0.2, 0.2, 0), boxes
clipped and degenerate ones dropped, then ``to_tensor`` and the target dict.

Theirs is the same work in torchvision.transforms.v2 on the same images: ``decode_jpeg``
(libjpeg-turbo), RandomHorizontalFlip(0.5), RandomAffine(scale=(0.75, 1.25), bilinear,
fill 114), ColorJitter(0.2, 0.2, 0.2, 0), ClampBoundingBoxes, SanitizeBoundingBoxes(min_size=1),
ToDtype(float32, scale=True), with the boxes as ``tv_tensors.BoundingBoxes``.

A second row times decode + to tensor alone (the ``eval`` preset: no augmentation); both
sides produce a contiguous ``float32 [3, H, W]`` (torchvision's decoded tensor is a
channels-last view, so it gets a ``.contiguous()`` on the uint8 data; the augmented one
already is contiguous).
Both run in one process, interleaved, with the same thread count for torch and OpenCV.
Throughput is images per second over one pass through ``--num-images`` images; the table
gives the throughput ratio ours / theirs (above 1: ours is faster) and, as everywhere in
docs/benchmarks.md, the time ratio ours / theirs (below 1: ours is faster).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from detect.benchmarks.common import compare, machine_info, set_threads

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "BCCD"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="VOC-layout dataset (default ../shared/data/BCCD)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--num-images", type=int, default=64, help="images per timed pass")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads (same for both)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)


def _torchvision_pipeline():
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomAffine(degrees=0.0, scale=(0.75, 1.25), interpolation=v2.InterpolationMode.BILINEAR, fill=114),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.0),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=1.0),
        v2.ToDtype(torch.float32, scale=True),
    ])


def run(args: argparse.Namespace) -> None:
    from torchvision import tv_tensors
    from torchvision.io import decode_jpeg, read_file

    from detect.data.transforms import build_transforms
    from detect.data.voc import VOCDetection

    root = Path(args.root)
    if not (root / "ImageSets" / "Main" / f"{args.split}.txt").is_file():
        sys.exit(f"no VOC split {args.split!r} under {root}; pass --root to a VOC-layout dataset such as ../shared/data/BCCD")
    set_threads(args.threads)
    torch.manual_seed(0)
    # BCCD's two zero-size boxes are dropped by the policy; its log line is not a result.
    logging.getLogger("detect.data").setLevel(logging.ERROR)
    train_set = VOCDetection(root, args.split, class_names="derive", check_policy="drop",
                             transforms=build_transforms("train", seed=0))
    eval_set = VOCDetection(root, args.split, class_names="derive", check_policy="drop")
    count = min(args.num_images, len(train_set))
    indices = list(range(count))
    ann = train_set.annotations
    paths = [ann.file_paths[i] for i in indices]
    starts, ends = ann.object_ranges()
    boxes = [torch.from_numpy(ann.boxes[starts[i]:ends[i]].astype(np.float32)) for i in indices]
    labels = [torch.from_numpy(ann.labels[starts[i]:ends[i]]) for i in indices]
    sizes = [(int(ann.heights[i]), int(ann.widths[i])) for i in indices]
    pipeline = _torchvision_pipeline()

    def ours_train():
        for i in indices:
            train_set[i]

    def theirs_train():
        for path, b, lab, size in zip(paths, boxes, labels, sizes):
            image = tv_tensors.Image(decode_jpeg(read_file(path)))
            target = {"boxes": tv_tensors.BoundingBoxes(b, format="XYXY", canvas_size=size), "labels": lab}
            pipeline(image, target)

    def ours_decode():
        for i in indices:
            eval_set[i]

    def theirs_decode():
        for path in paths:
            # decode_jpeg returns a channels-last view; make it the contiguous [3, H, W]
            # that to_tensor returns (on the uint8 data: the cheap place to do it).
            decode_jpeg(read_file(path)).contiguous().to(torch.float32).div_(255.0)

    print(f"machine: {machine_info()}")
    print(f"command: python tools/benchmark.py data --root {args.root} --split {args.split} "
          f"--num-images {count} --threads {args.threads} --repeats {args.repeats}")
    print(f"{count} images of {root.name}/{args.split}, medians of {args.repeats} passes after {args.warmup} warm-up\n")
    print("| pipeline | ours (img/s) | torchvision v2 (img/s) | throughput ours/tv | time ratio ours/tv |")
    print("|---|---|---|---|---|")
    for name, ours, theirs in (
        ("decode + flip + scale jitter + colour jitter + to tensor", ours_train, theirs_train),
        ("decode + to tensor (eval preset)", ours_decode, theirs_decode),
    ):
        result = compare(name, ours, theirs, warmup=args.warmup, repeats=args.repeats)
        ours_rate, theirs_rate = count / result.ours_median, count / result.theirs_median
        print(f"| {name} | {ours_rate:.1f} | {theirs_rate:.1f} | {ours_rate / theirs_rate:.2f}x | {result.ratio:.2f} |",
              flush=True)
