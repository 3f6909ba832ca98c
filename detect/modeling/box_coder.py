"""Box coding: boxes <-> regression deltas relative to reference boxes (anchors, proposals).

Contract
--------
``BoxCoder(weights=(wx, wy, ww, wh), clamp=log(1000 / 16))``

- ``encode(boxes, reference) -> deltas``: both ``[N, 4]`` xyxy; returns ``[N, 4]``
  ``(wx * dx, wy * dy, ww * dw, wh * dh)`` with ``dx = (cx - cx_ref) / w_ref``,
  ``dw = log(w / w_ref)`` (R-CNN parameterisation, continuous coordinates, no +1).
- ``decode(deltas, reference) -> boxes``: deltas ``[N, 4 * K]`` (K boxes per reference, e.g.
  one per class), reference ``[N, 4]``; returns ``[N, K, 4]`` xyxy. ``dw`` and ``dh`` are
  clamped to at most ``clamp`` before ``exp`` so that an untrained head cannot produce
  infinite boxes; ``decode(encode(b, r), r) == b`` up to float rounding whenever the
  true ``dw, dh`` are below the clamp.

The arithmetic follows torchvision's ``BoxCoder`` operation for operation, so decoded
boxes agree with torchvision's to the last bit on the same inputs (the parity tests rely
on it). The RPN uses weights ``(1, 1, 1, 1)``, the Fast R-CNN head ``(10, 10, 5, 5)``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

DEFAULT_DELTA_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encode boxes as deltas from reference boxes and decode them back.

    Args:
        weights: multipliers ``(wx, wy, ww, wh)`` applied to the deltas when encoding (and
            divided out when decoding); they scale the regression targets to unit-ish variance.
        clamp: upper bound on the decoded log-size deltas ``dw``, ``dh``.
    """

    def __init__(self, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0), clamp: float = DEFAULT_DELTA_CLAMP):
        if len(weights) != 4:
            raise ValueError(f"box coder weights must be 4 numbers (wx, wy, ww, wh), got {weights!r}")
        self.weights = tuple(float(w) for w in weights)
        self.clamp = float(clamp)

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, clamp={self.clamp:.4f})"

    def encode(self, boxes: Tensor, reference: Tensor) -> Tensor:
        """Deltas ``[N, 4]`` that turn ``reference`` ``[N, 4]`` into ``boxes`` ``[N, 4]``."""
        wx, wy, ww, wh = self.weights
        ref_w = reference[:, 2] - reference[:, 0]
        ref_h = reference[:, 3] - reference[:, 1]
        ref_cx = reference[:, 0] + 0.5 * ref_w
        ref_cy = reference[:, 1] + 0.5 * ref_h

        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        cx = boxes[:, 0] + 0.5 * w
        cy = boxes[:, 1] + 0.5 * h

        dx = wx * (cx - ref_cx) / ref_w
        dy = wy * (cy - ref_cy) / ref_h
        dw = ww * torch.log(w / ref_w)
        dh = wh * torch.log(h / ref_h)
        return torch.stack((dx, dy, dw, dh), dim=1)

    def decode(self, deltas: Tensor, reference: Tensor) -> Tensor:
        """Boxes ``[N, K, 4]`` from deltas ``[N, 4 * K]`` relative to ``reference`` ``[N, 4]``."""
        reference = reference.to(deltas.dtype)
        wx, wy, ww, wh = self.weights
        widths = (reference[:, 2] - reference[:, 0])[:, None]
        heights = (reference[:, 3] - reference[:, 1])[:, None]
        ctr_x = reference[:, 0, None] + 0.5 * widths
        ctr_y = reference[:, 1, None] + 0.5 * heights

        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.clamp)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.clamp)

        pred_ctr_x = dx * widths + ctr_x
        pred_ctr_y = dy * heights + ctr_y
        half_w = 0.5 * (torch.exp(dw) * widths)
        half_h = 0.5 * (torch.exp(dh) * heights)
        return torch.stack(
            (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h), dim=2
        )
