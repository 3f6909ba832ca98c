"""Deployment speed: PyTorch eager, optimize_for_inference(), TorchScript and ONNX Runtime on the CPU.

    python tools/benchmark.py export [--threads 2] [--repeats 5] [--warmup 1] [--no-yolo]

- Faster R-CNN R50-FPN, batch 1, one 480x640 image (BCCD's first when ``../shared/data``
  has it, else seeded noise; resized to 800 inside every variant): torchvision's
  ``fasterrcnn_resnet50_fpn`` (weights=None, seeded, frozen BatchNorm) in its default NCHW
  layout and after ``.to(memory_format=torch.channels_last)`` (what a careful torchvision user
  runs), and ours built from the same state dict: plain eager, ``optimize_for_inference()``,
  the exported TorchScript module and the exported ONNX model on ONNX Runtime's CPU provider
  (both written by :func:`detect.export.export_model`, i.e. the plain model's graph).
  Every variant runs once per round, rounds interleaved, ``--warmup`` untimed rounds first;
  medians. Both ratios are printed: ours / torchvision NCHW and ours / torchvision
  channels-last.
- The floor: FLOPs of one forward of our model (``torch.utils.flop_counter``) over this CPU's
  measured convolution throughput (a large 3x3 channels-last convolution, same threads):
  the time the convolutions alone would take at the best rate this CPU sustains.
- YOLOv1 (the paper's network, 448x448; torchvision has none): the same four variants.

Nothing is asserted: the tables are printed for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from detect.benchmarks.common import machine_info, set_threads
from detect.benchmarks.detectors import benchmark_image, conv_throughput, forward_flops, torchvision_reference


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads, also ONNX Runtime's (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--num-classes", type=int, default=90, help="foreground classes (COCO: 90)")
    parser.add_argument("--no-yolo", dest="yolo", action="store_false", help="skip the YOLOv1 rows")


def _exported(model, folder: Path, name: str, threads: int) -> dict:
    """TorchScript and ONNX Runtime callables of ``model``'s exported graph."""
    from detect.export import ExportedModel, export_model

    runners = {}
    for format, suffix in (("torchscript", ".torchscript"), ("onnx", ".onnx")):
        path = folder / f"{name}{suffix}"
        export_model(model, path, format, check=False)
        exported = ExportedModel(path, num_threads=threads)
        runners[f"exported {'TorchScript' if format == 'torchscript' else 'ONNX Runtime'}"] = exported
    return runners


def interleaved_medians(variants: dict, warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds of each callable, one call of each per round."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    samples = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def run(args) -> None:
    from detect import build_detector

    set_threads(args.threads)
    print(f"Machine: {machine_info()}")
    image = benchmark_image()
    print(f"Input: one {tuple(image.shape[1:])} image; batch 1; {args.threads} threads (ONNX Runtime too); "
          f"median of {args.repeats} interleaved rounds after {args.warmup} warm-up rounds\n")

    theirs = torchvision_reference(args.num_classes).eval()
    state = theirs.state_dict()
    theirs_cl = torchvision_reference(args.num_classes).eval()
    theirs_cl.load_state_dict(state)
    theirs_cl.to(memory_format=torch.channels_last)
    plain = build_detector("faster_rcnn", backbone="resnet50", fpn=True, num_classes=args.num_classes, weights=state).eval()
    fast = build_detector("faster_rcnn", backbone="resnet50", fpn=True, num_classes=args.num_classes,
                          weights=state).optimize_for_inference()
    images = [image]

    def tv(model):
        def call():
            with torch.inference_mode():
                return model(images)
        return call

    with tempfile.TemporaryDirectory(prefix="detect_export_bench_") as folder:
        started = time.perf_counter()
        exported = _exported(plain, Path(folder), "r50_fpn", args.threads)
        export_seconds = time.perf_counter() - started
        variants = {
            "torchvision NCHW": tv(theirs),
            "torchvision channels-last": tv(theirs_cl),
            "ours eager (plain)": lambda: plain.predict(images),
            "ours optimize_for_inference()": lambda: fast.predict(images),
            **{name: (lambda m=m: m(image)) for name, m in exported.items()},
        }
        medians = interleaved_medians(variants, args.warmup, args.repeats)
    nchw, cl = medians["torchvision NCHW"], medians["torchvision channels-last"]
    print(f"Faster R-CNN R50-FPN (exports written in {export_seconds:.0f} s, unchecked here; "
          "tests/export checks the graphs)\n")
    print("| variant | latency (ms) | ratio vs torchvision NCHW | ratio vs torchvision channels-last |\n|---|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds * 1e3:.0f} | {seconds / nchw:.2f} | {seconds / cl:.2f} |")

    flops = forward_flops(plain, images)
    throughput = conv_throughput()
    ours = {k: v for k, v in medians.items() if k.startswith(("ours", "exported"))}
    best_name, best = min(ours.items(), key=lambda kv: kv[1])
    floor = flops / throughput
    print(f"\nFloor: one forward is {flops / 1e9:.0f} GFLOP; this CPU's 3x3 convolution runs at "
          f"{throughput / 1e9:.0f} GFLOP/s ({args.threads} threads), so the convolutions alone need "
          f"{floor * 1e3:.0f} ms = {floor / cl:.2f}x torchvision channels-last. Fastest ours: {best_name} "
          f"{best * 1e3:.0f} ms = {best / cl:.2f}x channels-last, {flops / best / 1e9:.0f} GFLOP/s "
          f"({flops / best / throughput:.0%} of the convolution rate).")

    if args.yolo:
        yolo = build_detector("yolov1", num_classes=20).eval()
        torch.manual_seed(0)
        yolo_fast = build_detector("yolov1", num_classes=20).eval()
        yolo_fast.load_state_dict(yolo.state_dict())
        yolo_fast.optimize_for_inference()
        with tempfile.TemporaryDirectory(prefix="detect_export_bench_") as folder:
            exported = _exported(yolo, Path(folder), "yolov1", args.threads)
            variants = {
                "ours eager (plain)": lambda: yolo.predict(images),
                "ours optimize_for_inference()": lambda: yolo_fast.predict(images),
                **{name: (lambda m=m: m(image)) for name, m in exported.items()},
            }
            medians = interleaved_medians(variants, args.warmup, args.repeats)
        print("\nYOLOv1 (paper network, 448x448, 20 classes; torchvision has no YOLO)\n")
        print("| variant | latency (ms) | ratio vs eager |\n|---|---|---|")
        for name, seconds in medians.items():
            print(f"| {name} | {seconds * 1e3:.0f} | {seconds / medians['ours eager (plain)']:.2f} |")
