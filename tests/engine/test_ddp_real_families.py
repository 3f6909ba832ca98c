"""DistributedDataParallel on real families (gloo, CPU, two processes): after a step every rank
holds identical weights, and two ranks with one image each take the step one process takes
with both images.

Why these families and this set-up: with frozen BatchNorm the forward pass of an image does
not depend on the other images of its batch, and YOLOv1's and FCN's losses are means over
images (FCN on images of one size: a mean over pixels of equal count), so DDP's average of the
two ranks' gradients is the gradient of the two-image batch. What remains is float32
summation order: each gradient entry is a sum over the batch and all positions, regrouped
here into two partial sums, and the convolutions may block a batch of 2 differently from two
batches of 1. The bound: 1e-4 of each tensor's largest gradient entry, i.e. a relative
rounding error of ~1e3 float32 ulps (2**-24 each) for reductions over up to ~1e4 terms, and
still 1e-4 of the update itself, so a rank that trained on the wrong image, a missing
all-reduce (a rank's own gradient is off by O(1) relative) or a sum instead of a mean fails.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detect import build_detector
from detect.distributed import wrap_model

from shapes_images import shapes_batch

pytestmark = pytest.mark.slow

FAMILIES = {
    "yolov1": dict(backbone="resnet18", backbone_norm="frozen_bn", head="conv", input_size=(96, 96), grid_size=3),
    "fcn": dict(backbone="resnet18", backbone_norm="frozen_bn", layout="skip", variant="8s"),
}
LR = 0.1


def build(family: str):
    torch.manual_seed(0)
    model = build_detector(family, num_classes=3, **FAMILIES[family])
    model.train()
    return model


def batch(family: str, indices):
    images, targets = shapes_batch(indices, masks=True, image_size=96)
    if family == "fcn":
        targets = [{"masks": t["masks"]} for t in targets]
    else:
        targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
    return images, targets


def one_step(model, images, targets, wrapped=None):
    """SGD without momentum, so the step is ``-LR * gradient`` exactly; returns the gradients.
    ``wrapped`` (DDP around ``model``) runs the forward pass when given."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
    losses = (wrapped or model)(images, targets)
    sum(losses.values()).backward()
    gradients = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    return gradients


def rank_main(rank: int, family: str, store_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    try:
        model = build(family)
        ddp = wrap_model(model, torch.device("cpu"))
        images, targets = batch(family, [rank])
        gradients = one_step(model, images, targets, wrapped=ddp)
        torch.save({"state": model.state_dict(), "gradients": gradients}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_two_ranks_of_one_image_take_the_step_of_one_batch_of_two(tmp_path, family):
    mp.start_processes(rank_main, args=(family, str(tmp_path / "store"), str(tmp_path)), nprocs=2,
                       start_method="spawn", join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), f"{name} differs between the ranks after a step"

    torch.set_num_threads(1)
    single = build(family)
    images, targets = batch(family, [0, 1])
    gradients = one_step(single, images, targets)
    assert set(gradients) == set(ranks[0]["gradients"]) and len(gradients) > 10
    for name, gradient in gradients.items():
        bound = 1e-4 * float(gradient.abs().max()) + 1e-12
        difference = float((ranks[0]["gradients"][name] - gradient).abs().max())
        assert difference <= bound, f"{name}: gradient differs by {difference:.3g} (bound {bound:.3g})"
    for name, value in single.state_dict().items():
        if value.is_floating_point():
            bound = LR * 1e-4 * float(gradients[name].abs().max()) if name in gradients else 0.0
            assert float((ranks[0]["state"][name] - value).abs().max()) <= bound + 1e-7 * float(value.abs().max()), name
