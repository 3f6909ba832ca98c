"""Exponential moving average of a model's weights.

After optimizer step number ``t`` (1, 2, ...) every floating-point entry of the state
dict (parameters and float buffers such as BatchNorm running statistics) becomes::

    ema = d_t * ema + (1 - d_t) * current,   d_t = decay * (1 - exp(-t / tau))

The ramp ``1 - exp(-t / tau)`` lets early averages follow the fast-changing weights (as
in YOLOv5/ultralytics); ``tau=None`` keeps ``d_t = decay``. Integer buffers (e.g.
``num_batches_tracked``) are copied. When EMA is on, the engine evaluates and checkpoints
the averaged model for inference (see :func:`detect.engine.checkpoint.inference_state_dict`).
"""
from __future__ import annotations

import copy
import math
from typing import Mapping

import torch
from torch import nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.9998, tau: float | None = 2000):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"train.ema.decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.tau = None if tau is None else float(tau)
        self.updates = 0

    def current_decay(self) -> float:
        if self.tau is None:
            return self.decay
        return self.decay * (1.0 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        current = model.state_dict()
        for key, averaged in self.module.state_dict().items():
            value = current[key].detach()
            if averaged.is_floating_point():
                averaged.mul_(d).add_(value.to(averaged.dtype), alpha=1.0 - d)
            else:
                averaged.copy_(value)

    def state_dict(self) -> dict:
        return {"state_dict": self.module.state_dict(), "updates": self.updates, "decay": self.decay, "tau": self.tau}

    def load_state_dict(self, state: Mapping) -> None:
        self.module.load_state_dict(state["state_dict"])
        self.updates = int(state["updates"])
        self.decay = float(state["decay"])
        self.tau = None if state["tau"] is None else float(state["tau"])
