"""FCN speed: ours against torchvision's fcn_resnet50, same weights, one process.

    python tools/benchmark.py segmentation [--threads 2] [--size 520] [--repeats 5] [--bf16]

- Inference, batch 1: one image with a ``--size`` (520) shorter side (the first PennFudan image
  resized, when ``../shared/data/PennFudanPed`` exists, else seeded noise of 520 x 693, VOC's
  aspect). torchvision's ``fcn_resnet50`` (aux head, 21 classes, seeded random weights with
  BatchNorm statistics set from one batch) takes the normalised image; ours is built from its
  state dict (``build_fcn(layout="torchvision")``, so both compute the same function) and takes
  the 0..1 image (normalising inside, no resize). Rows: ours plain, ours after
  ``optimize_for_inference()`` (BatchNorm folded, channels-last, inference mode), and with
  ``--bf16`` its bfloat16 variant. torchvision runs under ``torch.inference_mode`` too, and,
  like ours, computes only the main output at inference (its auxiliary head is removed
  from the timed copy: it would otherwise run an extra FCNHead that ``out`` does not use).
- The largest difference between the two outputs is printed relative to the logit scale.

Medians of ``--repeats`` interleaved runs after ``--warmup`` runs; ratio ours / torchvision
(< 1 means ours is faster). Nothing is asserted: the table is printed for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from detect.benchmarks.common import calibrate_batchnorm_, compare, machine_info, set_threads, table_header

PENNFUDAN = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "PennFudanPed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--size", type=int, default=520, help="shorter side of the image (default 520)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per side (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per side first (default 2)")
    parser.add_argument("--bf16", action="store_true", help="also time the bfloat16 fast path")


def benchmark_image(size: int) -> torch.Tensor:
    """An RGB image in 0..1 with a ``size`` shorter side (see the module docstring)."""
    images = sorted((PENNFUDAN / "PNGImages").glob("*.png")) if PENNFUDAN.is_dir() else []
    if images:
        from detect.data.image_io import read_image, to_tensor

        image = to_tensor(read_image(images[0]))
    else:
        image = torch.rand(3, 375, 500, generator=torch.Generator().manual_seed(0))
    h, w = image.shape[-2:]
    scale = size / min(h, w)
    return F.interpolate(image[None], size=(round(h * scale), round(w * scale)), mode="bilinear",
                         align_corners=False)[0].clamp(0, 1)


def torchvision_reference() -> nn.Module:
    """torchvision's ``fcn_resnet50`` (21 classes, aux head) with seeded random weights and
    BatchNorm statistics from one random batch, in eval mode (no download)."""
    from torchvision.models.segmentation import fcn_resnet50

    torch.manual_seed(0)
    return calibrate_batchnorm_(fcn_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True))


def run(args) -> None:
    from detect import build_detector
    from detect.modeling.transform import IMAGENET_MEAN, IMAGENET_STD

    set_threads(args.threads)
    print(f"Machine: {machine_info()}")
    image = benchmark_image(args.size)
    print(f"Input: one {tuple(image.shape[1:])} image (batch 1); {args.threads} threads; "
          f"median of {args.repeats} after {args.warmup} warm-up runs\n")

    reference = torchvision_reference()
    state = reference.state_dict()
    plain = build_detector("fcn", num_classes=20, backbone="resnet50", layout="torchvision", weights=state).eval()
    fast = build_detector("fcn", num_classes=20, backbone="resnet50", layout="torchvision",
                          weights=state).optimize_for_inference()
    reference.aux_classifier = None  # torchvision then returns "out" only, as our predict does
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    normalised = ((image - mean) / std)[None]
    images = [image]

    def tv_predict():
        with torch.inference_mode():
            return reference(normalised)["out"]

    expected = tv_predict()[0]
    scale = float(expected.abs().max())
    for name, model in (("plain", plain), ("optimize_for_inference()", fast)):
        got = model.predict(images)[0]["sem_seg"]
        print(f"max |ours {name} - torchvision| = {float((got - expected).abs().max()):.3g} "
              f"(logit scale {scale:.3g})")
    print()

    rows = [compare("FCN-ResNet50 inference, plain", lambda: plain.predict(images), tv_predict,
                    args.warmup, args.repeats),
            compare("FCN-ResNet50 inference, optimize_for_inference()", lambda: fast.predict(images), tv_predict,
                    args.warmup, args.repeats)]
    if args.bf16:
        bf16 = build_detector("fcn", num_classes=20, backbone="resnet50", layout="torchvision",
                              weights=state).optimize_for_inference(bf16=True)
        rows.append(compare("FCN-ResNet50 inference, bf16", lambda: bf16.predict(images), tv_predict,
                            args.warmup, args.repeats))
    print(table_header("FCN"))
    for row in rows:
        print(row.row())
