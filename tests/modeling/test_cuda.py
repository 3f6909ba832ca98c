"""CUDA: every family trains a few steps under AMP (fp16 with the gradient scaler, and bf16),
evaluates on the GPU with the outputs the CPU gives, and trains under torchrun with NCCL when
two GPUs exist. ``make test-gpu`` runs these (``pytest -m cuda``); without a GPU they skip.

CPU and GPU outputs are compared as the parity tests compare ours with torchvision: the
model is also run on the CPU in float64 (the exact value to float32's eyes); the CPU float32
run's distance from it is this computation's float32 rounding error, and the GPU float32
result (TF32 off: TF32 keeps 10 mantissa bits, not float32's 23) must lie within
``FLOAT32_ERROR_FACTOR`` times that error of the float64 value.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detect import build_detector
from detect.engine.checkpoint import load_checkpoint
from detect.engine.launch import train

from shapes_images import shapes_batch
from torchvision_reference import (
    assert_tensor_within_float32_noise,
    assert_within_float32_noise,
)

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: torch.cuda.is_available() is False")]

RECIPES = {
    "faster_rcnn": ("configs/faster_rcnn/shapes_demo.py", {"model": dict(min_size=64, max_size=64)}),
    "fast_rcnn": ("configs/fast_rcnn/shapes_cpu.py", {"model": dict(min_size=64, max_size=64, proposal_generator=None)}),
    "yolov1": ("configs/yolov1/shapes_cpu.py", {"model": dict(input_size=(64, 64), grid_size=2)}),
    "fcn": ("configs/fcn/shapes_cpu.py", {"data": dict(transforms=dict(train=dict(name="seg_shapes", crop_size=48),
                                                                      val="eval"))}),
    "rcnn": ("configs/rcnn/shapes_cpu.py", {"model": dict(crop_size=32, batch_size_per_batch=32, proposal_generator=None)}),
}
MODELS = {
    "faster_rcnn": dict(backbone="resnet18", fpn=True, fpn_channels=64, min_size=96, max_size=96,
                        rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=30, box_detections_per_img=20),
    "fast_rcnn": dict(backbone="resnet18", fpn=True, fpn_channels=64, min_size=96, max_size=96,
                      box_detections_per_img=20),
    "yolov1": dict(backbone="resnet18", head="conv", input_size=(96, 96), grid_size=3),
    "fcn": dict(backbone="resnet18", layout="skip", variant="8s"),
    "rcnn": dict(backbone="resnet18", fc_dims=None, crop_size=48, context_pad=4),
}


@pytest.fixture(autouse=True)
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def tiny_config(family: str, root: Path, out: Path, amp: str) -> dict:
    """The family's shapes recipe, shrunk to a few 64 px images and 3 iterations on CUDA."""
    from detect.config import load_config

    recipe, changes = RECIPES[family]
    config = load_config(REPO / recipe)
    for section, values in changes.items():
        config[section].update(values)
    config["data"].update(root=str(root), num_workers=0, batch_size=2)
    config["data"]["shapes"] = dict(num_images=10, image_size=64, seed=0)
    for split in ("train", "val"):
        config["data"][split].pop("proposal_file", None)
    config["train"].update(device="cuda", amp=amp, epochs=1, max_iters=3, progress_bar=False, plots=False,
                           tensorboard=False)
    config["eval"]["interval"] = 0
    config["output_dir"] = str(out)
    return config


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
@pytest.mark.parametrize("family", [f for f in RECIPES if f not in ("fast_rcnn", "rcnn")])
def test_family_trains_on_cuda_under_amp(tmp_path, family, amp):
    summary = train(tiny_config(family, tmp_path / "shapes", tmp_path / "run", amp))
    last = load_checkpoint(summary["last_checkpoint"])
    assert last["iteration"] == 3
    if amp == "fp16":
        assert last["scaler"] is not None and last["scaler"]["scale"] > 0  # the gradient scaler ran and is saved
    for name, value in last["model"].items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), name


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
@pytest.mark.parametrize("family", ["fast_rcnn", "rcnn"])
def test_proposal_families_train_on_cuda_under_amp(tmp_path, family, amp):
    """Fast R-CNN and R-CNN with proposals made on the CPU first (selective search is CPU code)."""
    proposals = tmp_path / "proposals"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    recipe, _ = RECIPES[family]
    for split in ("train", "val"):
        done = subprocess.run([sys.executable, "tools/make_proposals.py", recipe, "--split", split, "--workers", "1",
                               "--no-progress", "--output", str(proposals / f"{split}.pth"), "--set",
                               f"data.root={tmp_path / 'shapes'}", "data.shapes.num_images=10",
                               "data.shapes.image_size=64"], cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    config = tiny_config(family, tmp_path / "shapes", tmp_path / "run", amp)
    for split in ("train", "val"):
        config["data"][split]["proposal_file"] = str(proposals / f"{split}.pth")
    summary = train(config)
    best = load_checkpoint(summary["best_checkpoint"])
    for name, value in best["model"].items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), name


def seeded_model(family: str):
    torch.manual_seed(0)
    model = build_detector(family, num_classes=3, **MODELS[family]).eval()
    if model.task == "detection":
        model.score_thresh = 0.0 if family != "yolov1" else 1e-3
    return model


@pytest.mark.parametrize("family", list(MODELS))
def test_family_eval_on_cuda_equals_the_cpu(family, device="cuda"):
    images, targets = shapes_batch([0, 1], image_size=96)
    proposals = None
    model = seeded_model(family)
    if model.accepts_proposals:
        shift = torch.tensor([3.0, -2.0, 2.0, 4.0])
        background = torch.tensor([[0.0, 0.0, 30.0, 30.0], [50.0, 40.0, 95.0, 90.0]])
        proposals = [torch.cat([t["boxes"], t["boxes"] + shift, background]) for t in targets]

    def outputs(m, device, dtype):
        kwargs = {} if proposals is None else {"proposals": [p.to(device, dtype) for p in proposals]}
        with torch.no_grad():
            return m.predict([i.to(device, dtype) for i in images], **kwargs)

    cpu32 = outputs(model, "cpu", torch.float32)
    cpu64 = outputs(seeded_model(family).double(), "cpu", torch.float64)
    gpu32 = [{k: v.cpu() for k, v in o.items()} for o in outputs(seeded_model(family).to(device), device, torch.float32)]
    if model.task == "semantic_segmentation":
        for i, (a, b, exact) in enumerate(zip(gpu32, cpu32, cpu64)):
            assert_tensor_within_float32_noise(a["sem_seg"], b["sem_seg"], exact["sem_seg"], f"sem_seg of image {i}")
        return
    assert sum(len(o["boxes"]) for o in cpu32) > 0, "nothing detected: the comparison would prove nothing"
    assert_within_float32_noise(gpu32, cpu32, cpu64)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL across processes needs two GPUs")
def test_torchrun_with_nccl_on_two_gpus(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    recipe, _ = RECIPES["yolov1"]
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "tools/train.py", recipe,
         "--output-dir", str(tmp_path / "run"), "--device", "cuda", "--set", f"data.root={tmp_path / 'shapes'}",
         "data.shapes.num_images=10", "data.shapes.image_size=64", "data.num_workers=0", "data.batch_size=2",
         "train.epochs=1", "train.max_iters=2", "train.progress_bar=False", "train.amp='fp16'",
         "model.input_size=(64, 64)", "model.grid_size=2", "eval.interval=1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    last = load_checkpoint(tmp_path / "run" / "last.pth")
    assert last["iteration"] == 2 and len(last["rng_per_rank"]) == 2
