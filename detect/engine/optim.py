"""Optimizers, parameter groups and per-iteration learning-rate schedules.

``build_optimizer(model, cfg)`` builds SGD (momentum, weight decay, optional Nesterov)
or AdamW (decoupled weight decay) from ``config["train"]["optimizer"]``. Parameters are
split into groups by their weight decay: normalisation layers' weights and biases take
``norm_weight_decay``, other biases ``bias_weight_decay`` (both default to
``weight_decay``; 0 turns decay off there, as in torchvision's references and
detectron2). Frozen parameters (``requires_grad=False``) are left out.

``WarmupLRScheduler`` sets ``lr = base_lr * warmup(it) * schedule(it)`` for iteration
``it`` (0-based, the step about to be taken):

- warm-up, linear: ``warmup(it) = f + (1 - f) * it / W`` for ``it < W``, then 1
  (``f = warmup_factor``, ``W = warmup_iters``);
- ``multistep``: ``schedule(it) = gamma ** (number of milestones <= it)``;
- ``cosine``: ``schedule(it) = r + (1 - r) * (1 + cos(pi * it / T)) / 2`` with
  ``r = min_lr_ratio`` and ``T`` the total number of iterations;
- ``poly``: ``schedule(it) = (1 - min(it, T) / T) ** power`` (``power`` 0.9: the FCN / DeepLab
  schedule of torchvision's segmentation reference, which reaches 0 at ``T``);
- ``constant``: ``schedule(it) = 1``.

The scheduler is stepped once per training iteration (:class:`detect.engine.hooks.LRSchedulerHook`),
skipped non-finite steps and AMP-skipped optimizer steps included: ``it`` is the trainer's
iteration count, so milestones, warm-up and the cosine's end fall where the config puts
them whatever was skipped. Its state is that count.

``WarmupLRScheduler.fit_to(total_iters)`` re-plans the run for another length (the time
budget, :class:`detect.engine.hooks.TimeBudgetHook`): milestones keep their fraction of
the run and the cosine ends at the new total, so the decay still completes; the warm-up
keeps its length (capped at the run).
"""
from __future__ import annotations

import bisect
import math
from typing import Any, Mapping, Sequence

import torch
from torch import nn

NORM_TYPES = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, SyncBatchNorm, InstanceNorm*
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def parameter_groups(model: nn.Module, weight_decay: float, norm_weight_decay=None, bias_weight_decay=None) -> list[dict]:
    """Trainable parameters grouped by weight decay (one group per distinct value).

    A parameter of a normalisation layer takes ``norm_weight_decay``; any other
    parameter named ``*bias`` takes ``bias_weight_decay``; the rest ``weight_decay``.
    ``None`` means ``weight_decay``. Shared parameters appear once.
    """
    norm_wd = weight_decay if norm_weight_decay is None else norm_weight_decay
    bias_wd = weight_decay if bias_weight_decay is None else bias_weight_decay
    groups: dict[float, list] = {}
    seen: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, NORM_TYPES)
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if is_norm:
                wd = norm_wd
            elif name == "bias":
                wd = bias_wd
            else:
                wd = weight_decay
            groups.setdefault(float(wd), []).append(param)
    if not groups:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    return [{"params": params, "weight_decay": wd} for wd, params in groups.items()]


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    name = str(cfg.get("name", "sgd")).lower()
    groups = parameter_groups(model, cfg["weight_decay"], cfg.get("norm_weight_decay"), cfg.get("bias_weight_decay"))
    lr = float(cfg["lr"])
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.get("momentum", 0.9), nesterov=bool(cfg.get("nesterov", False)))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.get("betas", (0.9, 0.999))), eps=cfg.get("eps", 1e-8))
    raise ValueError(f"train.optimizer.name={name!r}: expected 'sgd' or 'adamw'")


SCHEDULES = ("multistep", "cosine", "poly", "constant")


class WarmupLRScheduler:
    """Linear warm-up followed by a multistep, cosine, poly or constant schedule, per iteration.

    Args:
        optimizer: its groups' ``initial_lr`` (set here from ``lr`` on first use) are the base LRs.
        total_iters: iterations of the whole run (cosine reaches ``min_lr_ratio`` there).
        name: ``"multistep"``, ``"cosine"``, ``"poly"`` or ``"constant"``.
        milestones: iterations at which multistep multiplies the LR by ``gamma``.
        power: the exponent of ``poly``.
        warmup_iters, warmup_factor: linear warm-up from ``warmup_factor`` to 1.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_iters: int, name: str = "multistep",
                 milestones: Sequence[int] = (), gamma: float = 0.1, min_lr_ratio: float = 0.0,
                 warmup_iters: int = 0, warmup_factor: float = 0.001, power: float = 0.9):
        if name not in SCHEDULES:
            raise ValueError(f"train.scheduler.name={name!r}: expected multistep, cosine, poly or constant")
        if name == "poly" and not float(power) > 0:
            raise ValueError(f"train.scheduler.power must be positive, got {power}")
        if list(milestones) != sorted(milestones):
            raise ValueError(f"train.scheduler.milestones must increase, got {list(milestones)}")
        self.optimizer = optimizer
        self.total_iters = max(int(total_iters), 1)
        self.name = name
        self.milestones = [int(m) for m in milestones]
        self.gamma = float(gamma)
        self.min_lr_ratio = float(min_lr_ratio)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        self.power = float(power)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_iter = 0
        self._planned = (self.total_iters, list(self.milestones), self.warmup_iters)  # what fit_to scales from
        self._apply()

    def fit_to(self, total_iters: int) -> None:
        """Scale the schedule to a run of ``total_iters`` iterations (from the original plan,
        so repeated fits do not compound rounding) and set the LR of the current iteration."""
        planned_total, planned_milestones, planned_warmup = self._planned
        self.total_iters = max(int(total_iters), 1)
        ratio = self.total_iters / planned_total
        self.milestones = [int(round(m * ratio)) for m in planned_milestones]
        self.warmup_iters = min(planned_warmup, self.total_iters)
        self._apply()

    def factor(self, iteration: int) -> float:
        """The LR multiplier for ``iteration``."""
        warmup = 1.0
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            warmup = self.warmup_factor * (1 - alpha) + alpha
        if self.name == "multistep":
            schedule = self.gamma ** bisect.bisect_right(self.milestones, iteration)
        elif self.name == "cosine":
            progress = min(iteration, self.total_iters) / self.total_iters
            schedule = self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        elif self.name == "poly":
            schedule = (1 - min(iteration, self.total_iters) / self.total_iters) ** self.power
        else:
            schedule = 1.0
        return warmup * schedule

    def _apply(self) -> None:
        factor = self.factor(self.last_iter)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def step(self) -> None:
        self.last_iter += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_iter": self.last_iter, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: Mapping) -> None:
        self.last_iter = int(state["last_iter"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self._apply()


def build_scheduler(optimizer, cfg: Mapping[str, Any], iters_per_epoch: int, epochs: int) -> WarmupLRScheduler:
    """The scheduler of ``config["train"]["scheduler"]``; milestones there are in epochs."""
    total = max(iters_per_epoch * epochs, 1)
    return WarmupLRScheduler(
        optimizer,
        total_iters=total,
        name=str(cfg.get("name", "multistep")),
        milestones=[int(round(m * iters_per_epoch)) for m in cfg.get("milestones", ())],
        gamma=cfg.get("gamma", 0.1),
        min_lr_ratio=cfg.get("min_lr_ratio", 0.0),
        warmup_iters=min(int(cfg.get("warmup_iters", 0)), total),
        warmup_factor=cfg.get("warmup_factor", 0.001),
        power=cfg.get("power", 0.9),
    )
