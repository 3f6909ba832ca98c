#!/usr/bin/env python
"""Run a trained detector on images, folders, globs, videos or a webcam.

    python tools/infer.py --checkpoint runs/demo/best.pth --source image.jpg
    python tools/infer.py --checkpoint best.pth --source "photos/*.jpg" --batch-size 4
    python tools/infer.py --checkpoint best.pth --source clip.mp4 --output runs/clip
    python tools/infer.py --checkpoint best.pth --source 0            # webcam 0, Ctrl+C stops

Writes annotated images, an annotated video per video source (same fps and frame count)
and detections.json into --output. A segmentation checkpoint (FCN) writes colour overlays
with a legend (images and videos alike), labels/<stem>.png per image (Pascal VOC palette
PNGs: index = label, 0 background; --frame-labels adds one per video frame) and
segmentation.json (per image the pixels of each class). An --output that is an input, or the folder of one, is
refused; an --output that already holds files (an earlier run) is left alone and the
results go to the next free <output>-2, <output>-3, ... unless --exist-ok.
Everything is done by detect.inference.run_inference.
"""
import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detect.cli import add_debug_argument, fraction, tool_main  # noqa: E402


@tool_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by tools/train.py")
    parser.add_argument("--source", required=True, help="IMAGE | DIR | GLOB | VIDEO | WEBCAM_INDEX")
    parser.add_argument("--output", default="runs/infer",
                        help="output directory, not the inputs' folder (default: %(default)s; "
                             "the next free %(default)s-N when it holds an earlier run)")
    parser.add_argument("--exist-ok", action="store_true",
                        help="write into an existing non-empty --output, replacing files of the same names")
    parser.add_argument("--score-thresh", type=fraction, default=None,
                        help="drop detections scoring below this (default: the model's own score_thresh, "
                             "stored in the checkpoint's config; 0.05 for Faster R-CNN); detectors only")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default: %(default)s)")
    parser.add_argument("--half", action="store_true", help="float16 autocast on CUDA, bfloat16 on the CPU")
    parser.add_argument("--max-frames", type=int, default=None, help="stop each video or webcam after N frames")
    parser.add_argument("--no-save-images", action="store_true",
                        help="write only the JSON (detections.json, or segmentation.json)")
    parser.add_argument("--frame-labels", action="store_true",
                        help="segmentation: also write a label PNG per video frame (labels/<video>/<frame>.png)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_debug_argument(parser)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from detect.inference import run_inference

    # Bad paths, unreadable files and bad values end as one line naming them (detect.cli).
    result = run_inference(
        args.checkpoint,
        args.source,
        args.output,
        score_thresh=args.score_thresh,
        batch_size=args.batch_size,
        device=args.device,
        half=args.half,
        save_images=not args.no_save_images,
        max_frames=args.max_frames,
        progress=not args.quiet,
        exist_ok=args.exist_ok,
        save_frame_labels=args.frame_labels,
    )
    print(result.summary())
    return result


if __name__ == "__main__":
    main()
