"""Optimizers, parameter groups, LR schedules and EMA: exact values."""
import math

import pytest
import torch
from torch import nn

from detect.engine.ema import ModelEMA
from detect.engine.optim import WarmupLRScheduler, build_optimizer, build_scheduler, parameter_groups


def lrs(scheduler, iterations):
    """LR of the step taken at each iteration 0..iterations-1."""
    values = []
    for _ in range(iterations):
        values.append(scheduler.get_last_lr()[0])
        scheduler.step()
    return values


def sgd(lr=0.02):
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)


def test_warmup_then_multistep_exact_values():
    scheduler = WarmupLRScheduler(sgd(0.02), total_iters=12, name="multistep", milestones=[6, 9], gamma=0.1,
                                  warmup_iters=4, warmup_factor=0.001)
    expected = [0.02 * (0.001 * (1 - it / 4) + it / 4) for it in range(4)] + [0.02] * 2 + [0.002] * 3 + [0.0002] * 3
    assert lrs(scheduler, 12) == pytest.approx(expected, rel=1e-12)
    assert expected[:4] == pytest.approx([2e-5, 0.005015, 0.01001, 0.015005], rel=1e-12)


def test_warmup_then_cosine_exact_values():
    scheduler = WarmupLRScheduler(sgd(0.1), total_iters=10, name="cosine", min_lr_ratio=0.1, warmup_iters=2,
                                  warmup_factor=0.5)
    got = lrs(scheduler, 11)
    cosine = [0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * it / 10))) for it in range(11)]
    warm = [0.5, 0.75] + [1.0] * 9
    assert got == pytest.approx([c * w for c, w in zip(cosine, warm)], rel=1e-12)
    assert got[0] == pytest.approx(0.05) and got[5] == pytest.approx(0.055) and got[10] == pytest.approx(0.01)


def test_build_scheduler_counts_milestones_in_epochs_and_caps_warmup():
    optimizer = sgd(1.0)
    scheduler = build_scheduler(optimizer, dict(name="multistep", milestones=(2, 3), gamma=0.5, warmup_iters=1000,
                                                warmup_factor=0.001), iters_per_epoch=5, epochs=4)
    assert scheduler.milestones == [10, 15] and scheduler.warmup_iters == 20 and scheduler.total_iters == 20


def test_scheduler_state_round_trip():
    a = WarmupLRScheduler(sgd(), total_iters=20, name="cosine", warmup_iters=3)
    lrs(a, 7)
    b = WarmupLRScheduler(sgd(), total_iters=20, name="cosine", warmup_iters=3)
    b.load_state_dict(a.state_dict())
    assert lrs(b, 5) == lrs(a, 5)


def test_bad_scheduler_options():
    with pytest.raises(ValueError, match="multistep, cosine, poly or constant"):
        WarmupLRScheduler(sgd(), 10, name="exponential")
    with pytest.raises(ValueError, match="milestones must increase"):
        WarmupLRScheduler(sgd(), 10, milestones=[5, 2])


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_parameter_groups_no_decay_on_norm_and_bias():
    net = Net()
    groups = {g["weight_decay"]: g["params"] for g in parameter_groups(net, 1e-4, norm_weight_decay=0.0,
                                                                       bias_weight_decay=0.0)}
    assert set(groups) == {1e-4, 0.0}
    assert {id(p) for p in groups[1e-4]} == {id(net.conv.weight), id(net.fc.weight)}
    assert {id(p) for p in groups[0.0]} == {id(p) for p in (net.conv.bias, net.fc.bias, net.bn.weight, net.bn.bias,
                                                            net.gn.weight, net.gn.bias)}
    # defaults: one group, frozen parameters left out
    (only,) = parameter_groups(net, 5e-4)
    assert only["weight_decay"] == 5e-4 and len(only["params"]) == 8


def test_build_optimizer_sgd_and_adamw():
    net = Net()
    opt = build_optimizer(net, dict(name="sgd", lr=0.02, momentum=0.9, weight_decay=1e-4, nesterov=True,
                                    norm_weight_decay=0.0))
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 1e-4]
    opt = build_optimizer(net, dict(name="adamw", lr=1e-3, weight_decay=0.05, betas=(0.9, 0.99), eps=1e-6))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.99) and opt.defaults["eps"] == 1e-6
    with pytest.raises(ValueError, match="expected 'sgd' or 'adamw'"):
        build_optimizer(net, dict(name="lamb", lr=1, weight_decay=0))


def test_ema_update_arithmetic():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.9, tau=None)
    start = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(2.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    state = ema.module.state_dict()
    for key in ("0.weight", "0.bias", "1.weight", "1.bias"):
        assert torch.allclose(state[key], 0.9 * start[key] + 0.1 * (start[key] + 1.0), atol=1e-7, rtol=0)
    assert torch.allclose(state["1.running_mean"], torch.full((2,), 0.2))
    assert int(state["1.num_batches_tracked"]) == 7  # integer buffers are copied


def test_ema_decay_ramp_and_state():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEMA(model, decay=0.99, tau=10)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    d1 = 0.99 * (1 - math.exp(-1 / 10))
    assert ema.module.weight.item() == pytest.approx(1 - d1, abs=1e-7)
    ema.update(model)
    d2 = 0.99 * (1 - math.exp(-2 / 10))
    assert ema.module.weight.item() == pytest.approx(1 - d1 * d2, abs=1e-7)
    other = ModelEMA(model, decay=0.5, tau=None)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 2 and other.decay == 0.99 and other.tau == 10
    assert other.module.weight.item() == ema.module.weight.item()


def test_poly_schedule_exact_values_after_warmup():
    scheduler = WarmupLRScheduler(sgd(0.02), total_iters=8, name="poly", power=0.9, warmup_iters=2, warmup_factor=0.5)
    got = [scheduler.get_last_lr()[0]]
    for _ in range(10):
        scheduler.step()
        got.append(scheduler.get_last_lr()[0])
    warm = [0.5, 0.75] + [1.0] * 9
    poly = [0.02 * (1 - min(it, 8) / 8) ** 0.9 for it in range(11)]
    assert got == pytest.approx([p * w for p, w in zip(poly, warm)], rel=1e-12, abs=0)
    assert got[8:] == [0.0, 0.0, 0.0]  # torchvision's reference reaches zero at the end of the run
    with pytest.raises(ValueError, match="power must be positive"):
        WarmupLRScheduler(sgd(), total_iters=8, name="poly", power=0)
