"""Backbone forward latency against the torchvision (or timm) model computing the same features.

    python tools/benchmark.py backbones [--channels-last] [--threads 2] [--sizes 224 800x1067]
        [--names resnet50 googlenet tv:vgg16] [--fuse-norm] [--device cpu]

For each backbone and input size, ours and its torchvision counterpart run alternately in one
process on the same input, in eval mode under ``torch.no_grad``, with the same weights:

- ``resnetN``: torchvision's ``resnetN`` through ``IntermediateLayerGetter`` (layer1..layer4);
- ``googlenet``: torchvision's ``googlenet(transform_input=True)`` through
  ``create_feature_extractor`` (inception3b, 4e, 5b);
- ``tv:<name>``: ``create_feature_extractor`` on torchvision's model at the nodes our
  backbone returns (``TorchvisionBackbone.torchvision_nodes``);
- ``dcn_resnetN``: torchvision has no deformable ResNet, so the counterpart is its **plain**
  ``resnetN``: the ratio is the price of the deformable convolutions, not a like-for-like speed;
- ``seresnetN``, ``xception``: torchvision has neither, so the reference is timm's
  ``seresnetN`` / ``legacy_xception`` (``features_only=True``, taps layer1..4 / block1, block2,
  block11 and the exit flow) when timm is importable; ours is then built with
  ``stem_padding="valid"`` for Xception, timm's stem, so that both compute the same maps.
  Without timm, ``seresnetN`` falls back to torchvision's plain ``resnetN`` (the ratio is then
  the price of the SE blocks) and ``xception`` is skipped with a note.

``--channels-last`` puts both models and the input in NHWC and adds, from a second
interleaved comparison, our NCHW time and the NHWC / NCHW ratio (what the flag gives);
``--fuse-norm`` times our
backbone after ``fuse_norm_()`` (BatchNorm folded into the convolutions), an inference-only
option that torchvision's counterpart does not have. Prints a markdown table with the ratio
ours / reference (below 1.0: ours is faster); the reference is torchvision's model except
where a note says timm's.
"""
from __future__ import annotations

import argparse
import copy
import shlex
import sys

import torch
from torch import nn

from detect.benchmarks.common import compare, machine_info, set_threads, table_header

DEFAULT_NAMES = ["resnet18", "resnet50", "googlenet", "dcn_resnet50", "tv:vgg16", "tv:mobilenet_v3_large",
                 "seresnet50", "xception"]
#: Our backbone -> the timm model that computes the same features (timm's module names).
TIMM_COUNTERPARTS = {"seresnet50": "seresnet50", "seresnet101": "seresnet101", "xception": "legacy_xception"}
DEFAULT_SIZES = ["224", "800x1067"]


def parse_size(text: str) -> tuple[int, int]:
    """"224" -> (224, 224); "800x1067" -> (800, 1067) as (height, width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not N or HxW (e.g. 224 or 800x1067)")
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 32:
        raise argparse.ArgumentTypeError(f"size {text!r} is not N or HxW with sides >= 32")
    return parts[0], parts[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--names", nargs="+", default=DEFAULT_NAMES,
                        help=f"backbones to time (default: {' '.join(DEFAULT_NAMES)})")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES],
                        help="input sizes, N or HxW (default: 224 800x1067)")
    parser.add_argument("--batch", type=int, default=1, help="images per forward pass")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--channels-last", action="store_true", help="NHWC models and input on both sides")
    parser.add_argument("--fuse-norm", action="store_true", help="time ours after fuse_norm_()")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per side")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per side (median)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")


def timm_available() -> bool:
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


def our_options(name: str) -> dict:
    """Build options that make ours compute what its reference computes."""
    return {"stem_padding": "valid"} if name == "xception" and timm_available() else {}


def timm_counterpart(name: str, ours: nn.Module) -> tuple[nn.Module, str]:
    """timm's ``features_only`` model returning the same features as ``ours``, with its weights."""
    import timm

    timm_name = TIMM_COUNTERPARTS[name]
    stage_index = {"c2": 1, "c3": 2, "c4": 3, "c5": 4}
    model = timm.create_model(timm_name, pretrained=False, features_only=True,
                              out_indices=tuple(stage_index[k] for k in ours.out_channels))
    # Hook-based feature models (legacy_xception) keep the network under "body.".
    prefix = "body." if all(k.startswith("body.") for k in model.state_dict()) else ""
    own = {prefix + k: v for k, v in ours.state_dict().items()}
    missing, unexpected = model.load_state_dict(own, strict=False)
    # timm's hook-based model keeps the whole block holding its last tap (it taps the ReLU that
    # starts the next block); modules ours does not build keep their initialisation.
    built = {k[len(prefix):].split(".", 1)[0] for k in own}
    missing = [k for k in missing if k[len(prefix):].split(".", 1)[0] in built]
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise RuntimeError(f"{name}: timm counterpart weights differ: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")

    class AsDict(nn.Module):
        def __init__(self, body, names):
            super().__init__()
            self.body, self.names = body, list(names)

        def forward(self, x):
            return dict(zip(self.names, self.body(x)))

    return AsDict(model, ours.out_channels), f"reference is timm {timm.__version__}'s {timm_name} (features_only)"


def torchvision_counterpart(name: str, ours: nn.Module) -> tuple[nn.Module, str]:
    """The torchvision model returning the same features as ``ours`` (with its weights),
    and a note on what it is."""
    import torchvision
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.feature_extraction import create_feature_extractor

    layers = {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"}
    if name in TIMM_COUNTERPARTS and timm_available():
        return timm_counterpart(name, ours)
    if name.startswith(("resnet", "dcn_resnet", "seresnet")):
        depth = name.split("resnet", 1)[1]
        model = torchvision.models.get_model(f"resnet{depth}", weights=None)
        body = IntermediateLayerGetter(model, {k: v for k, v in layers.items() if v in ours.out_channels})
        note = ("plain ResNet: torchvision has no deformable ResNet" if name.startswith("dcn") else
                "plain ResNet (timm not installed): the ratio is the price of the SE blocks"
                if name.startswith("seresnet") else "")
    elif name == "googlenet":
        if ours.layout != "torchvision":
            raise ValueError("torchvision's GoogLeNet has the torchvision layout only")
        model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True,
                                             transform_input=ours.transform_input)
        nodes = {"c2": "conv3", "c3": "inception3b", "c4": "inception4e", "c5": "inception5b"}
        body = create_feature_extractor(model, {nodes[k]: k for k in ours.out_channels})
        note = ""
    elif name.startswith("tv:"):
        model = torchvision.models.get_model(name[3:], weights=None)
        body = create_feature_extractor(model, {node: k for k, node in ours.torchvision_nodes.items()})
        note = ""
    else:
        raise ValueError(f"no torchvision counterpart for {name!r}; use resnet*, dcn_resnet*, googlenet "
                         f"or tv:* (seresnet*, xception: install timm)")
    # Same weights on both sides (the counterpart lacks only our extra offset convs and SE blocks).
    own = {k: v for k, v in ours.state_dict().items() if ".conv_offset." not in k and ".se." not in k}
    missing, unexpected = body.load_state_dict(own, strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise RuntimeError(f"{name}: counterpart weights differ: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return body, note


def run(args: argparse.Namespace) -> None:
    from backbones import build_backbone

    set_threads(args.threads)
    device = torch.device(args.device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    print(f"command: python tools/benchmark.py backbones {shlex.join(sys.argv[2:])}".rstrip())
    print(f"machine: {machine_info()}")
    print(f"batch {args.batch}, {'channels_last' if args.channels_last else 'contiguous (NCHW)'}"
          f"{', ours with fuse_norm_()' if args.fuse_norm else ''}, eval, no_grad, "
          f"median of {args.repeats} after {args.warmup} warm-up calls\n")
    if args.channels_last:
        print("| backbone, input | ours NHWC (ms) | torchvision NHWC (ms) | ratio ours/tv "
              "| ours NCHW (ms) | NHWC/NCHW |\n|---|---|---|---|---|---|")
    else:
        print(table_header("backbone, input") if not any(n in TIMM_COUNTERPARTS for n in args.names)
              else "| backbone, input | ours (ms) | reference (ms) | ratio ours/ref |\n|---|---|---|---|")
    notes = []
    for name in args.names:
        if name == "xception" and not timm_available():
            notes.append("xception: skipped, torchvision has no Xception and timm is not installed")
            continue
        torch.manual_seed(0)
        ours = build_backbone(name, **our_options(name)).eval()
        theirs, note = torchvision_counterpart(name, ours)
        theirs.eval()
        if args.fuse_norm:
            ours.fuse_norm_()
        ours_nchw = copy.deepcopy(ours).to(device) if args.channels_last else None
        ours.to(device=device, memory_format=memory_format)
        theirs.to(device=device, memory_format=memory_format)
        if note:
            notes.append(f"{name}: {note}")
        for height, width in args.sizes:
            x = torch.randn(args.batch, 3, height, width, device=device).contiguous(memory_format=memory_format)

            def run_ours(model=ours, x=x):
                with torch.no_grad():
                    return model(x)

            def run_theirs(model=theirs, x=x):
                with torch.no_grad():
                    return model(x)

            result = compare(f"{name}, {height}x{width}", run_ours, run_theirs, warmup=args.warmup,
                             repeats=args.repeats, device=device)
            if ours_nchw is None:
                print(result.row(), flush=True)
                continue
            x_nchw = x.contiguous()

            def run_ours_nchw(model=ours_nchw, x=x_nchw):
                with torch.no_grad():
                    return model(x)

            layout = compare("layout", run_ours, run_ours_nchw, warmup=1, repeats=args.repeats,
                             device=device)
            print(f"{result.row()} {layout.theirs_median * 1e3:.1f} | {layout.ratio:.2f} |", flush=True)
        del ours, theirs, ours_nchw
    for note in notes:
        print(f"\n{note}")
