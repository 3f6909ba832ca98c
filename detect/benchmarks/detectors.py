"""Faster R-CNN speed: ours against torchvision's fasterrcnn_resnet50_fpn, same weights, one process.

    python tools/benchmark.py detector [--train] [--threads 2] [--backbones resnet50_c4 googlenet ...]

- Inference: batch 1, one 480x640 image (the first BCCD image when ``../shared/data/BCCD``
  exists, else a seeded random one) resized to 800 inside both models; torchvision's R50-FPN
  with frozen BatchNorm and seeded random weights, ours built from its state dict (so both
  compute the same function), as the plain model and after ``optimize_for_inference()``
  (and with ``--bf16`` its bfloat16 variant). Medians of ``--repeats`` interleaved runs after
  ``--warmup`` runs; ratio ours / torchvision; peak resident memory of one prediction each.
- ``--train``: one SGD step (forward, backward, update) at batch 2 for both, same weights and
  images, same targets.
- Every other variant (``--backbones``): our latency alone (torchvision has no equivalent).
- YOLOv1 at 448 x 448 (``--yolo``, on by default; torchvision has no YOLO): the paper's
  network and a ResNet-50 variant, latency at batch 1 and 8, images/s, and the achieved
  GFLOP/s (FLOPs of one forward counted by ``torch.utils.flop_counter``) as a fraction of
  this CPU's convolution throughput, measured in the same run on a large 3x3 convolution.

Nothing is asserted: the table is printed for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import ctypes
import time
from pathlib import Path

import torch

from detect.benchmarks.common import compare, machine_info, peak_rss_bytes, set_threads, table_header

VARIANTS = {
    "resnet50_c4": dict(backbone="resnet50", fpn=False),
    "dcn_resnet50_fpn": dict(backbone="dcn_resnet50", fpn=True),
    "googlenet": dict(backbone="googlenet", fpn=False),
    "googlenet_fpn": dict(backbone="googlenet", fpn=True),
    "vgg16": dict(backbone="tv:vgg16", fpn=False),
    "resnet18_fpn": dict(backbone="resnet18", fpn=True),
}
BCCD = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "BCCD"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--device", default="cpu",
                        help="cpu (default) or cuda[:N]: the GPU rows (plain, fp16 and bf16 autocast; no YOLO table)")
    parser.add_argument("--train", action="store_true", help="also time a training step at batch 2")
    parser.add_argument("--backbones", nargs="*", default=list(VARIANTS), choices=list(VARIANTS),
                        help="other variants whose latency to report (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per side (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per side first (default 2)")
    parser.add_argument("--bf16", action="store_true", help="also time the bfloat16 fast path")
    parser.add_argument("--num-classes", type=int, default=90, help="foreground classes (COCO: 90)")
    parser.add_argument("--bf16-ap", metavar="DIR", default=None,
                        help="train a small R18-FPN on the shapes set generated in DIR, then report its "
                             "COCO AP with the fp32 and the bf16 fast paths (and their latency)")
    parser.add_argument("--bf16-ap-steps", type=int, default=300, help="training steps for --bf16-ap (default 300)")
    parser.add_argument("--no-yolo", dest="yolo", action="store_false", help="skip the YOLOv1 rows")


def benchmark_image() -> torch.Tensor:
    """A 480x640 RGB image in 0..1: BCCD's first image when available, else seeded noise."""
    images = sorted((BCCD / "JPEGImages").glob("*.jpg")) if BCCD.is_dir() else []
    if images:
        from detect.data.image_io import read_image, to_tensor

        return to_tensor(read_image(images[0]))
    return torch.rand(3, 480, 640, generator=torch.Generator().manual_seed(0))


def torchvision_reference(num_classes: int):
    """torchvision's ``fasterrcnn_resnet50_fpn`` as its COCO weights run it -- frozen BatchNorm
    with eps 0, layer2-4 trainable -- with seeded random weights (no download)."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection._utils import overwrite_eps
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops import FrozenBatchNorm2d

    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d,
                                   trainable_layers=3)
    model = FasterRCNN(backbone, num_classes=num_classes + 1)
    overwrite_eps(model, 0.0)
    return model


def return_freed_memory_to_os() -> None:
    """Make the resident size track live memory (glibc only): large blocks are mapped from and
    returned to the OS instead of being cached by malloc, and the cache is trimmed now.
    Called after the timings (it would slow both sides down), before measuring peak memory;
    without it, memory freed by the previous run would be reused unseen."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD, fixed (no dynamic growth)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _mib(num_bytes: int) -> str:
    return "n/a" if num_bytes < 0 else f"{num_bytes / 2**20:.0f}"


def run(args) -> None:
    set_threads(args.threads)
    print(f"Machine: {machine_info()}")
    if args.bf16_ap:
        shapes_bf16_ap(args.bf16_ap, args.bf16_ap_steps)
        return
    if torch.device(args.device).type == "cuda":
        run_cuda(args)
        return
    run_cpu(args)


def run_cuda(args) -> None:
    """The GPU rows: ours against torchvision on one CUDA device, float32 and under autocast
    (fp16, bf16), same weights, same 800 px input; CUDA time synchronised around each call."""
    from detect import build_detector

    device = torch.device(args.device)
    if not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device}: torch sees no CUDA device here; run the CPU rows without it")
    image = benchmark_image().to(device)
    theirs = torchvision_reference(args.num_classes).eval().to(device)
    ours = build_detector("faster_rcnn", backbone="resnet50", fpn=True, num_classes=args.num_classes,
                          weights=theirs.state_dict()).eval().to(device)
    images = [image]
    rows = []
    for label, dtype in (("float32", None), ("autocast fp16", torch.float16), ("autocast bf16", torch.bfloat16)):
        def under(fn, dtype=dtype):
            def call():
                with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float16,
                                                             enabled=dtype is not None):
                    return fn(images)
            return call

        rows.append(compare(f"R50-FPN inference on {torch.cuda.get_device_name(device)}, {label}",
                            under(ours.predict), under(theirs), args.warmup, args.repeats, device=device))
    print(table_header("Faster R-CNN (GPU)"))
    for row in rows:
        print(row.row())
    torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        ours.predict(images)
    print(f"\nPeak CUDA memory of one float32 prediction (ours): {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")


def run_cpu(args) -> None:
    from detect import build_detector

    image = benchmark_image()
    print(f"Input: one {tuple(image.shape[1:])} image, resized to 800 inside; {args.threads} threads; "
          f"median of {args.repeats} after {args.warmup} warm-up runs\n")

    theirs = torchvision_reference(args.num_classes).eval()
    state = theirs.state_dict()
    plain = build_detector("faster_rcnn", backbone="resnet50", fpn=True, num_classes=args.num_classes, weights=state).eval()
    fast = build_detector("faster_rcnn", backbone="resnet50", fpn=True, num_classes=args.num_classes,
                          weights=state).optimize_for_inference()
    images = [image]

    def tv_predict():
        with torch.inference_mode():
            return theirs(images)

    rows = [compare("R50-FPN inference, plain", lambda: plain.predict(images), tv_predict, args.warmup, args.repeats),
            compare("R50-FPN inference, optimize_for_inference()", lambda: fast.predict(images), tv_predict,
                    args.warmup, args.repeats)]
    if args.bf16:
        bf16 = build_detector("faster_rcnn", backbone="resnet50", fpn=True, num_classes=args.num_classes,
                              weights=state).optimize_for_inference(bf16=True)
        rows.append(compare("R50-FPN inference, bf16", lambda: bf16.predict(images), tv_predict,
                            args.warmup, args.repeats))
    if args.train:
        rows.extend(_training_comparisons(theirs, state, image, args))
    print(table_header("Faster R-CNN"))
    for row in rows:
        print(row.row())

    return_freed_memory_to_os()
    memory = {}
    for name, fn in (("torchvision", tv_predict), ("ours plain", lambda: plain.predict(images)),
                     ("ours optimized", lambda: fast.predict(images))):
        return_freed_memory_to_os()
        memory[name] = peak_rss_bytes(fn)
    print("\nPeak resident memory of one prediction above the resident size before it (MiB): "
          + ", ".join(f"{k} {_mib(v)}" for k, v in memory.items()))

    if args.backbones:
        print("\n| variant (ours, optimize_for_inference) | latency (ms) |\n|---|---|")
        for name in args.backbones:
            model = build_detector("faster_rcnn", num_classes=args.num_classes, **VARIANTS[name]).optimize_for_inference()
            for _ in range(args.warmup):
                model.predict(images)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                model.predict(images)
                times.append(time.perf_counter() - start)
            times.sort()
            print(f"| {name} | {times[len(times) // 2] * 1e3:.1f} |")
    if args.yolo:
        yolo_table(args.num_classes, args.warmup, args.repeats)


def median_seconds(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def forward_flops(module: torch.nn.Module, *inputs) -> int:
    """FLOPs (2 per multiply-add) of one call, counted by ``torch.utils.flop_counter``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(*inputs)
    return int(counter.get_total_flops())


def conv_throughput(warmup: int = 2, repeats: int = 5) -> float:
    """FLOP/s of one large 3x3 convolution (256 -> 256 channels, 56 x 56, batch 8, channels-last):
    what this CPU's oneDNN kernels sustain on the operation a detector spends its time in."""
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).eval().to(memory_format=torch.channels_last)
    x = torch.rand(8, 256, 56, 56).contiguous(memory_format=torch.channels_last)
    flops = forward_flops(conv, x)

    def run_conv():
        with torch.inference_mode():
            conv(x)

    return flops / median_seconds(run_conv, warmup, repeats)


YOLO_VARIANTS = {"YOLOv1 (paper net)": dict(backbone="yolov1"), "YOLOv1 ResNet-50": dict(backbone="resnet50")}


def yolo_table(num_classes: int, warmup: int, repeats: int) -> None:
    """The YOLOv1 rows: latency at batch 1 and 8, images/s, GFLOP/s against the CPU's conv peak."""
    from detect import build_detector

    peak = conv_throughput(warmup, repeats)
    print(f"\nYOLOv1 at 448 x 448, {num_classes} classes; this CPU's 3x3 convolution throughput: {peak / 1e9:.0f} GFLOP/s")
    print("| model | GFLOPs / image | batch 1 (ms) | batch 8 (ms) | images/s (batch 8) | GFLOP/s (batch 8) | of conv peak |")
    print("|---|---|---|---|---|---|---|")
    generator = torch.Generator().manual_seed(0)
    for name, options in YOLO_VARIANTS.items():
        torch.manual_seed(0)
        model = build_detector("yolov1", num_classes=num_classes, **options).eval()
        if hasattr(model, "optimize_for_inference"):
            model.optimize_for_inference()
        single = [torch.rand(3, 448, 448, generator=generator)]
        batch = [torch.rand(3, 448, 448, generator=generator) for _ in range(8)]
        flops = forward_flops(lambda images: model.predict(images), single)
        t1 = median_seconds(lambda: model.predict(single), warmup, repeats)
        t8 = median_seconds(lambda: model.predict(batch), warmup, max(repeats // 2, 1))
        achieved = 8 * flops / t8
        print(f"| {name} | {flops / 1e9:.1f} | {t1 * 1e3:.1f} | {t8 * 1e3:.1f} | {8 / t8:.1f} | "
              f"{achieved / 1e9:.0f} | {achieved / peak:.0%} |")


def _training_comparisons(theirs, state, image, args):
    """One SGD step at batch 2 (the image and its mirror), same weights and targets: ours as
    built by default (NCHW, like torchvision) and with ``channels_last=True``."""
    from detect import build_detector

    images = [image, image.flip(-1)]
    boxes = torch.tensor([[100.0, 120.0, 260.0, 300.0], [350.0, 50.0, 600.0, 400.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 2])},
               {"boxes": boxes[:1].clone(), "labels": torch.tensor([3])}]
    tv_model = torchvision_reference(args.num_classes)
    tv_model.load_state_dict(theirs.state_dict())
    tv_model.train()
    ours = build_detector("faster_rcnn", backbone="resnet50", fpn=True, num_classes=args.num_classes, weights=state).train()
    ours_nhwc = build_detector("faster_rcnn", backbone="resnet50", fpn=True, num_classes=args.num_classes,
                               weights=state, channels_last=True).train()

    def step_fn(model):
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5, momentum=0.9)

        def step():
            optimizer.zero_grad(set_to_none=True)
            sum(model(images, targets).values()).backward()
            optimizer.step()

        return step

    warmup = max(args.warmup - 1, 1)
    return [compare("R50-FPN training step, batch 2", step_fn(ours), step_fn(tv_model), warmup, args.repeats),
            compare("R50-FPN training step, batch 2, channels_last=True", step_fn(ours_nhwc), step_fn(tv_model),
                    warmup, args.repeats)]


def shapes_bf16_ap(root: str, steps: int, batch_size: int = 4, seed: int = 0) -> dict:
    """COCO AP of a small R18-FPN trained on the shapes set, evaluated with the fp32 and the
    bf16 ``optimize_for_inference`` paths on the same weights; prints and returns the metrics."""
    import copy
    import random

    from detect import build_detector
    from detect.data.build import build_dataset
    from detect.evaluation import build_evaluator

    data = dict(format="shapes", root=root, shapes=dict(num_images=240, image_size=160, seed=seed),
                train=dict(), val=dict(), transforms=dict(train="train", val="eval"))
    train_set, val_set = build_dataset(data, "train"), build_dataset(data, "val")
    torch.manual_seed(seed)
    model = build_detector("faster_rcnn", backbone="resnet18", fpn=True, num_classes=len(train_set.class_names),
                           min_size=160, max_size=256, channels_last=True).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.02, total_steps=steps, pct_start=0.1)
    order = random.Random(seed)
    start = time.perf_counter()
    for step in range(steps):
        items = [train_set[i] for i in order.sample(range(len(train_set)), batch_size)]
        losses = model([img for img, _ in items], [{"boxes": t["boxes"], "labels": t["labels"]} for _, t in items])
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
        schedule.step()
    print(f"trained {steps} steps at batch {batch_size} in {time.perf_counter() - start:.0f} s; "
          f"last losses { {k: round(v.item(), 3) for k, v in losses.items()} }")
    model.eval()
    results = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        fast = copy.deepcopy(model).optimize_for_inference(bf16=bf16)
        evaluator = build_evaluator("coco", val_set)
        evaluator.reset()
        elapsed = 0.0
        for i in range(len(val_set)):
            image, target = val_set[i]
            begin = time.perf_counter()
            outputs = fast.predict([image])
            elapsed += time.perf_counter() - begin
            evaluator.process([target], outputs)
        metrics = evaluator.evaluate()
        results[name] = metrics
        print(f"{name}: bbox/AP {metrics['bbox/AP']:.4f}, bbox/AP50 {metrics['bbox/AP50']:.4f}, "
              f"{elapsed / len(val_set) * 1e3:.1f} ms per image ({len(val_set)} val images)")
    return results
