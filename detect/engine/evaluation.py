"""The validation loop: metrics through an evaluator and the validation loss.

``evaluate_model(model, loader, evaluator=..., compute_loss=True)`` runs the model over a
loader once per requested quantity, under ``torch.no_grad`` and in eval mode (the mode is
restored afterwards), and returns one flat dict:

- the evaluator's metrics (``bbox/AP50``, ...; see :mod:`detect.evaluation`), for which
  the detections are mapped from the coordinates of the transformed image back to the
  original image (``target["orig_size"]``) before ``evaluator.process``. Segmentation
  outputs (``sem_seg``) are compared with the target ``masks``, which the dataset's
  transform produced together with the image, so both are at the size of the image the
  model was given and are compared there, pixel for pixel: the logits are reduced to a
  label map (argmax, on the model's device) and are not resampled. (The evaluation
  transforms change no geometry, so that size is the original one as well.) A label map
  of another size than its mask is an error naming the image (the evaluator's check);
- ``val/loss`` and ``val/<term>``: ``model.loss`` in eval mode, averaged over images
  (each batch weighted by its image count), summed over ranks.

Under torch.distributed every rank runs its shard; the results are the same on every
rank (rank 0's metrics are broadcast). The loop runs with the RNGs seeded from ``seed``
(the samplers inside a detector's loss draw from them), so the same weights give the
same validation loss every time; the training RNG streams are put back afterwards, so
validating does not change what training does next.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable

import torch
from torch import Tensor, nn

from detect.distributed import all_reduce_sum, broadcast_object
from detect.engine.rng import preserve_rng, seed_everything


def move_to_device(images: list[Tensor], targets: list[dict] | None, device: torch.device, non_blocking: bool = False):
    images = [img.to(device, non_blocking=non_blocking) for img in images]
    if targets is not None:
        targets = [
            {k: (v.to(device, non_blocking=non_blocking) if isinstance(v, Tensor) else v) for k, v in t.items()}
            for t in targets
        ]
    return images, targets


def to_original_coordinates(outputs: list[dict], images: list[Tensor], targets: list[dict]) -> list[dict]:
    """Scale output boxes from each transformed image's size to ``target["orig_size"]`` (H, W).

    Evaluation transforms may resize but never crop or flip, so a per-axis scale maps the
    boxes back. Targets without ``orig_size`` leave the outputs as they are, and so do
    outputs without boxes: a ``sem_seg`` map stays at the transformed image's size, the
    size of the target mask it is compared with (see the module docstring).
    """
    mapped = []
    for output, image, target in zip(outputs, images, targets):
        orig = target.get("orig_size") if isinstance(target, dict) else None
        height, width = image.shape[-2:]
        if orig is None or "boxes" not in output:
            mapped.append(output)
            continue
        orig_h, orig_w = (int(v) for v in (orig.tolist() if isinstance(orig, Tensor) else orig))
        if (orig_h, orig_w) == (height, width):
            mapped.append(output)
            continue
        boxes = output["boxes"]
        scale = boxes.new_tensor([orig_w / width, orig_h / height, orig_w / width, orig_h / height])
        mapped.append({**output, "boxes": boxes * scale})
    return mapped


def _for_evaluator(output: dict) -> dict:
    """An output on the CPU in float32; ``sem_seg`` logits ``[C, H, W]`` become their label
    map ``int64 [H, W]`` first, on the model's device (moving H*W values, not C*H*W)."""
    output = dict(output)
    if "sem_seg" in output and output["sem_seg"].dim() == 3:
        output["sem_seg"] = output["sem_seg"].argmax(dim=0)
    return {k: (v.float() if v.is_floating_point() else v).cpu() for k, v in output.items()}


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader,
    *,
    evaluator=None,
    compute_loss: bool = True,
    device: torch.device | str = "cpu",
    autocast: Callable[[], Any] | None = None,
    progress: bool = False,
    seed: int = 0,
) -> dict[str, float]:
    """Metrics and/or validation loss of ``model`` (a Detector, not a DDP wrapper) on ``loader``."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loss_sums: dict[str, Tensor] = {}
    image_count = torch.zeros((), dtype=torch.float64, device=device)
    if evaluator is not None:
        evaluator.reset()
    try:
        with preserve_rng():
            seed_everything(seed)
            batches = loader
            if progress:
                from tqdm import tqdm

                batches = tqdm(loader, desc="eval", unit="batch", dynamic_ncols=True, leave=False)
            for images, targets in batches:
                images, targets_dev = move_to_device(images, targets, device)
                if compute_loss:
                    with autocast() if autocast else nullcontext():
                        losses = model.loss(images, targets_dev)
                    for key, value in losses.items():
                        weighted = value.detach().double() * len(images)
                        loss_sums[key] = loss_sums.get(key, 0) + weighted
                    image_count += len(images)
                if evaluator is not None:
                    with autocast() if autocast else nullcontext():
                        # R-CNN / Fast R-CNN classify the dataset's proposals (proposal_file=)
                        proposals = ([t["proposals"] for t in targets_dev]
                                     if getattr(model, "accepts_proposals", False) and targets_dev
                                     and all("proposals" in t for t in targets_dev) else None)
                        outputs = model.predict(images, proposals=proposals)
                    outputs = [_for_evaluator(o) for o in outputs]
                    outputs = to_original_coordinates(outputs, images, targets)
                    evaluator.process(targets, outputs)
    finally:
        model.train(was_training)
    metrics: dict[str, float] = {}
    if compute_loss and loss_sums:
        keys = sorted(loss_sums)
        totals = all_reduce_sum(torch.stack([loss_sums[k] for k in keys] + [image_count]).cpu())
        count = max(float(totals[-1]), 1.0)
        values = {f"val/{k}": float(totals[i]) / count for i, k in enumerate(keys)}
        values["val/loss"] = sum(values.values())
        metrics.update(values)
    if evaluator is not None:
        metrics.update(broadcast_object(evaluator.evaluate()))
    return metrics

