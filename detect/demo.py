"""The `make demo` job: the whole product on the built-in shapes dataset, on a CPU.

1. generate the shapes dataset (COCO JSON + JPEGs + VOC XML + masks) under ``data/shapes``;
2. train a model with a small backbone: Faster R-CNN (``configs/faster_rcnn/shapes_demo.py``,
   the default), YOLOv1 (``model="yolov1"``: ``configs/yolov1/shapes_cpu.py``) or the FCN
   segmenter (``model="fcn"``: ``configs/fcn/shapes_cpu.py``, on the shapes set's masks);
3. evaluate the best checkpoint on the held-out split (VOC mAP50, all-point; FCN: mIoU);
4. run inference on a held-out image and on a short generated video (FCN: colour
   overlays with a legend and palette label PNGs);
5. print the metric, the wall time and where every output is.

Everything goes through the same library calls as tools/train.py, tools/eval.py and
tools/infer.py, so the demo exercises the real paths.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from detect.errors import UserInputError

_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: The demo recipe of each family that has one (``tools/demo.py --model NAME``).
DEMO_CONFIGS = {
    name: path for name, path in {
        "faster_rcnn": _CONFIGS / "faster_rcnn" / "shapes_demo.py",
        "yolov1": _CONFIGS / "yolov1" / "shapes_cpu.py",
        "fcn": _CONFIGS / "fcn" / "shapes_cpu.py",
    }.items() if path.is_file()
}
DEFAULT_CONFIG = DEMO_CONFIGS["faster_rcnn"]


def demo_config(model: str) -> Path:
    """The demo recipe of a family, or ``ValueError`` listing those that have one."""
    if model not in DEMO_CONFIGS:
        raise UserInputError(f"no demo recipe for {model!r}; choose one of {sorted(DEMO_CONFIGS)}")
    return DEMO_CONFIGS[model]


def run_demo(config_path: str | Path = DEFAULT_CONFIG, output_dir: str | Path = "runs/demo",
             overrides: Sequence[str] = (), device: str = "cpu") -> dict:
    """Run the demo; returns ``{"metrics", "best_checkpoint", "outputs", "seconds"}``."""
    from detect.config import load_config
    from detect.data.build import build_dataset
    from detect.data.shapes import make_shapes_video
    from detect.engine.launch import evaluate, train
    from detect.inference import run_inference

    start = time.perf_counter()
    output_dir = Path(output_dir)
    config = load_config(config_path, list(overrides))
    config["output_dir"] = str(output_dir / "train")
    summary = train(config, device=device)
    train_seconds = time.perf_counter() - start
    checkpoint = summary["best_checkpoint"] or summary["last_checkpoint"]

    metrics = evaluate(checkpoint=checkpoint, device=device)

    val_set = build_dataset(config["data"], "val")
    held_out = Path(val_set.get_image_info(0)["file_name"])
    shapes_options = dict(config["data"].get("shapes") or {})
    video = make_shapes_video(output_dir / "shapes_video.avi", num_frames=48, fps=12,
                              image_size=shapes_options.get("image_size", 160))
    image_result = run_inference(checkpoint, held_out, output_dir / "infer_image", device=device, progress=False)
    video_result = run_inference(checkpoint, video, output_dir / "infer_video", device=device, progress=False)
    seconds = time.perf_counter() - start

    outputs = {
        "training run": summary["output_dir"],
        "checkpoint": checkpoint,
        "annotated image": str(image_result.images[0]) if image_result.images else None,
        "annotated video": str(video_result.videos[0]) if video_result.videos else None,
        f"{'detections' if video_result.task == 'detection' else 'segmentation'} JSON": str(video_result.json_path),
        "input video": str(video),
    }
    if image_result.label_maps:  # a segmentation model: the held-out image's palette label PNG
        outputs["label PNG"] = str(image_result.label_maps[0])
    # "auto" in the config: the metric training picked best.pth by (the model's default)
    metric_name = (summary.get("best") or {}).get("metric") or config["eval"]["best_metric"]
    print()
    print("=" * 72)
    print(f"demo finished in {seconds / 60:.1f} min (training {train_seconds / 60:.1f} min)")
    note = ("  (COCO-style AP@[.5:.95] is not the demo's metric; see tools/eval.py)"
            if metric_name.startswith("bbox/") else "")
    print(f"shapes val {metric_name} = {metrics.get(metric_name, float('nan')):.3f}{note}")
    for name, path in outputs.items():
        print(f"  {name:16s} {path}")
    print("=" * 72)
    return {"metrics": metrics, "best_checkpoint": checkpoint, "outputs": outputs, "seconds": seconds}
