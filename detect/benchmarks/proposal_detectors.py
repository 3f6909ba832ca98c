"""R-CNN, Fast R-CNN and Faster R-CNN per-image inference, and Fast R-CNN's truncated SVD.

    python tools/benchmark.py proposals [--threads 2] [--images 9] [--size 160] [--proposals 100]
    python tools/benchmark.py proposals --svd [--rois 2000]

The three families run on the same backbone (ResNet-18, C4: ResNet's ``layer4`` is the box
head of Fast / Faster R-CNN and the tail of R-CNN's crop CNN) with seeded random weights (a
forward pass costs the same whatever the values, apart from NMS on the boxes kept) on the
same images; R-CNN and Fast R-CNN classify the same given proposals, Faster R-CNN makes its
own with its RPN. The rows are interleaved image by image, medians over the timed images
(the first is a warm-up). Proposals are random boxes of 20-``size`` px (the cost of
selective search itself is in docs/proposals.md); R-CNN crops are ``--crop-size`` px (48: the
shapes recipe; 227: the paper) with the paper's 16 px of context at 227 scaled alike.

``--svd``: the VGG-16 Fast R-CNN box head (fc6 25088 x 4096, fc7 4096 x 4096) on ``--rois``
RoIs at full rank and with the paper's truncated SVD (fc6 rank 1024, fc7 rank 256), medians
of ``--repeats``, plus the one-off cost of the factorisation and the relative change of the
output on random weights.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from detect import build_detector
from detect.benchmarks.common import machine_info, set_threads, time_once


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=9, help="images timed per family, the first a warm-up")
    parser.add_argument("--size", type=int, default=160, help="square image side in pixels")
    parser.add_argument("--proposals", type=int, default=100, help="given proposals per image")
    parser.add_argument("--crop-size", type=int, default=48, help="R-CNN's warped crop (the paper: 227)")
    parser.add_argument("--fpn", action="store_true", help="Fast / Faster R-CNN on R18-FPN (two-FC box head) instead of C4")
    parser.add_argument("--svd", action="store_true", help="time the VGG-16 head with truncated SVD instead")
    parser.add_argument("--rois", type=int, default=2000, help="--svd: RoIs through the head")
    parser.add_argument("--repeats", type=int, default=3, help="--svd: timed runs of each head")


def random_proposals(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` xyxy boxes of 20..size px inside a ``size`` x ``size`` image."""
    wh = torch.empty(count, 2).uniform_(20, size, generator=generator)
    xy = torch.rand(count, 2, generator=generator) * (size - wh)
    return torch.cat([xy, xy + wh], dim=1)


def family_models(num_classes: int, size: int, crop_size: int, fpn: bool) -> dict:
    """``{row name: (model, takes given proposals)}`` on ResNet-18 with seeded random weights."""
    common = dict(num_classes=num_classes, backbone="resnet18")
    layout = "FPN" if fpn else "C4"
    two_stage = dict(fpn=fpn, min_size=size, max_size=size)
    rows = ((f"R-CNN ({crop_size} px crops)", "rcnn", dict(crop_size=crop_size, context_pad=16.0 * crop_size / 227)),
            (f"Fast R-CNN ({layout})", "fast_rcnn", two_stage),
            (f"Faster R-CNN ({layout})", "faster_rcnn", two_stage))
    models = {}
    for name, family, options in rows:
        torch.manual_seed(0)
        models[name] = (build_detector(family, **common, **options).eval(), family != "faster_rcnn")
    return models


def run_families(args) -> None:
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, args.size, args.size, generator=generator) for _ in range(args.images)]
    proposals = [random_proposals(args.proposals, args.size, generator) for _ in images]
    models = family_models(num_classes=3, size=args.size, crop_size=args.crop_size, fpn=args.fpn)
    times = {name: [] for name in models}
    for k, (image, boxes) in enumerate(zip(images, proposals)):
        for name, (model, given) in models.items():
            kwargs = {"proposals": [boxes]} if given else {}
            seconds = time_once(lambda: model.predict([image], **kwargs))
            if k:  # the first image warms every model up
                times[name].append(seconds)
    print(f"{machine_info()}\n{args.images - 1} images of {args.size} x {args.size} px, "
          f"{args.proposals} given proposals each (R-CNN, Fast R-CNN)\n")
    print("| family | ms / image (median) | vs Faster R-CNN |\n|---|---|---|")
    faster = statistics.median(times[list(times)[-1]])
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"| {name} | {median * 1e3:.1f} | {median / faster:.2f}x |")


def run_svd(args) -> None:
    from detect.modeling.box_heads import VGGHead
    from detect.modeling.svd import use_truncated_svd_

    torch.manual_seed(0)
    head = VGGHead(512 * 7 * 7, 4096).eval()
    rois = torch.randn(args.rois, 512, 7, 7)
    with torch.no_grad():
        reference = head(rois)
        full = [time_once(lambda: head(rois)) for _ in range(args.repeats)]
        use_truncated_svd_(head, {"fc6": 1024, "fc7": 256})
        factorise = time_once(lambda: head(rois[:1]))  # the factors are computed on first use
        truncated = [time_once(lambda: head(rois)) for _ in range(args.repeats)]
        change = float((head(rois) - reference).norm() / reference.norm())
    print(f"{machine_info()}\nVGG-16 fc6 + fc7 on {args.rois} RoIs, medians of {args.repeats}\n")
    print("| head | s |\n|---|---|")
    print(f"| full rank | {statistics.median(full):.2f} |")
    print(f"| truncated SVD (fc6 1024, fc7 256) | {statistics.median(truncated):.2f} |")
    print(f"| factorisation, once | {factorise:.1f} |")
    print(f"\nspeed-up {statistics.median(full) / statistics.median(truncated):.2f}x; "
          f"relative output change on random weights {change:.4f}")


def run(args) -> None:
    set_threads(args.threads)
    (run_svd if args.svd else run_families)(args)
