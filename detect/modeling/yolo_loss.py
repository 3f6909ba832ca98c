"""The YOLOv1 loss (Redmon et al. 2016, equation 3; darknet's ``detection_layer.c``).

Contract
--------
``YOLOv1Loss(num_classes, grid_size=7, boxes_per_cell=2, lambda_coord=5.0, lambda_noobj=0.5,
rescore=True)(output, targets, image_size) -> dict[str, Tensor]``

- ``output``: the raw network output ``[N, S, S, B * 5 + C]`` (row ``i`` of the grid first,
  then column ``j``); per cell ``B`` predictors ``(x, y, sqrt_w, sqrt_h, conf)`` followed by
  ``C`` class probabilities (see :mod:`detect.modeling.meta_arch.yolov1` for the layout).
- ``targets``: ``list[{"boxes": [M, 4] xyxy pixels of the network input, "labels": [M] 1..C}]``.
- ``image_size``: ``(h, w)`` of the network input (448 x 448 in the paper).

Returns ``loss_xy``, ``loss_wh``, ``loss_obj``, ``loss_noobj``, ``loss_cls``: scalars whose
sum is the total loss. Every term is a sum of squared errors over the batch divided by the
batch size ``N`` (darknet sums the squared errors of a batch and its SGD divides by the
batch; so a batch of two copies of an image gives the loss of one).

The rules, as the paper and darknet:

- **Cell**: an object belongs to the cell containing its centre; ``x, y`` targets are the
  centre's offsets inside that cell (0..1), ``sqrt_w, sqrt_h`` targets are the square roots of
  the box's width and height divided by the image width and height. The network predicts
  ``sqrt_w`` and ``sqrt_h`` directly (darknet's ``sqrt=1``: the decoded width is
  ``sqrt_w ** 2``), so no square root of a prediction is ever taken: negative raw outputs
  give finite losses and gradients.
- **Responsible predictor**: of the cell's ``B`` predictors, the one whose decoded box has
  the highest IoU with the object; boxes are decoded to *image-normalised* coordinates
  (``((j + x) / S, (i + y) / S, sqrt_w ** 2, sqrt_h ** 2)``) for this, never cell-relative
  ones. When every IoU is 0, the one with the lowest RMSE of ``(cx, cy, w, h)`` to the
  target (darknet). The choice uses detached values; ties go to the lower index.
- **Object confidence**: ``(conf - target) ** 2`` for the responsible predictor, target = its
  IoU with the object, detached (``rescore=True``, darknet's ``rescore=1``), or 1.
- **No-object confidence**: ``lambda_noobj * conf ** 2`` for *every* predictor that is not
  responsible for an object, the other predictors of object cells included.
- **Coordinates**: ``lambda_coord * ((x - x*)^2 + (y - y*)^2)`` (``loss_xy``) and
  ``lambda_coord * ((sqrt_w - sqrt(w*))^2 + (sqrt_h - sqrt(h*))^2)`` (``loss_wh``), for the
  responsible predictor only.
- **Classes**: ``sum_c (p_c - onehot_c)^2`` once per object cell (no softmax).
- **Two objects whose centres fall in one cell**: the cell takes the object with the
  **largest area**; on equal areas the first one in input order. The other objects of that
  cell contribute nothing (a cell has one class vector, so it can describe one object).
  Darknet's label writer keeps the *last* object written to the cell instead, which makes the
  loss depend on the annotation order; the area rule is order independent.

Everything is vectorised over the whole batch: the boxes of all images are concatenated with
their image index, the one-object-per-cell rule is two ``scatter_reduce`` calls, and the
per-cell predictions are gathered by advanced indexing; there is no loop over boxes.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

LOSS_KEYS = ("loss_xy", "loss_wh", "loss_obj", "loss_noobj", "loss_cls")


def box_iou_cxcywh(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise IoU of boxes ``(cx, cy, w, h)`` (broadcasting the leading dimensions)."""
    a1, a2 = a[..., :2] - a[..., 2:] / 2, a[..., :2] + a[..., 2:] / 2
    b1, b2 = b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2
    wh = (torch.minimum(a2, b2) - torch.maximum(a1, b1)).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


def encode_targets(targets: list[dict], image_size: Sequence[int], grid_size: int) -> dict[str, Tensor]:
    """The objects that own a cell, batch-wide (see the module docstring for the rule).

    Returns ``batch``, ``row``, ``col`` (int64 [K], the cell of each kept object),
    ``offset`` ([K, 2] the centre's x, y inside the cell, 0..1), ``box`` ([K, 4] cx, cy, w, h
    divided by the image width / height), ``label`` (int64 [K], 1..C) and ``index`` (int64 [K],
    the position of the object among all boxes of the batch, concatenated in image order).
    """
    height, width = float(image_size[0]), float(image_size[1])
    S = int(grid_size)
    boxes = torch.cat([t["boxes"].reshape(-1, 4) for t in targets]).to(torch.float32)
    labels = torch.cat([t["labels"].reshape(-1) for t in targets])
    counts = torch.tensor([int(t["boxes"].shape[0]) for t in targets], device=boxes.device)
    batch = torch.repeat_interleave(torch.arange(len(targets), device=boxes.device), counts)
    scale = boxes.new_tensor([width, height])
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 / scale
    size = (boxes[:, 2:] - boxes[:, :2]) / scale
    cell = (centre * S).floor().clamp(0, S - 1).to(torch.int64)  # a centre on the far edge -> last cell
    col, row = cell[:, 0], cell[:, 1]
    flat = (batch * S + row) * S + col
    # One object per cell: the largest area, then the first in input order.
    area = size[:, 0] * size[:, 1]
    num_cells = len(targets) * S * S
    best_area = area.new_zeros(num_cells).scatter_reduce(0, flat, area, "amax", include_self=False)
    order = torch.arange(len(area), device=area.device)
    candidate = torch.where(area == best_area[flat], order, len(area))
    winner = torch.full((num_cells,), len(area), dtype=torch.int64, device=area.device)
    winner = winner.scatter_reduce(0, flat, candidate, "amin", include_self=True)
    keep = winner[flat] == order
    return {
        "batch": batch[keep],
        "row": row[keep],
        "col": col[keep],
        "offset": (centre * S - cell.to(centre.dtype))[keep],
        "box": torch.cat([centre, size], dim=1)[keep],
        "label": labels[keep],
        "index": order[keep],
    }


def decode_cell_boxes(pred: Tensor, row: Tensor, col: Tensor, grid_size: int) -> Tensor:
    """``pred [..., B, >=4]`` (x, y, sqrt_w, sqrt_h) of cells ``(row, col)`` ([...]) to
    image-normalised ``(cx, cy, w, h)`` ``[..., B, 4]``."""
    cx = (col[..., None].to(pred.dtype) + pred[..., 0]) / grid_size
    cy = (row[..., None].to(pred.dtype) + pred[..., 1]) / grid_size
    return torch.stack((cx, cy, pred[..., 2] ** 2, pred[..., 3] ** 2), dim=-1)


def responsible_predictor(decoded: Tensor, box: Tensor) -> tuple[Tensor, Tensor]:
    """``(index [K], iou [K, B])``: per object the predictor with the highest IoU with ``box``
    ([K, 4]), or, where every IoU is 0, the lowest RMSE (darknet's rule)."""
    iou = box_iou_cxcywh(decoded, box[:, None, :])
    best_iou, by_iou = iou.max(dim=1)
    rmse = ((decoded - box[:, None, :]) ** 2).sum(dim=-1).sqrt()
    by_rmse = rmse.argmin(dim=1)
    return torch.where(best_iou > 0, by_iou, by_rmse), iou


class YOLOv1Loss(nn.Module):
    """The YOLOv1 sum-squared loss (see the module docstring).

    Args:
        num_classes: C foreground classes (labels 1..C).
        grid_size: S.
        boxes_per_cell: B.
        lambda_coord: weight of the coordinate terms (5 in the paper).
        lambda_noobj: weight of the no-object confidence term (0.5 in the paper).
        rescore: confidence target = IoU of the responsible box (True, darknet) or 1.
    """

    def __init__(self, num_classes: int, grid_size: int = 7, boxes_per_cell: int = 2,
                 lambda_coord: float = 5.0, lambda_noobj: float = 0.5, rescore: bool = True):
        super().__init__()
        self.num_classes = int(num_classes)
        self.grid_size = int(grid_size)
        self.boxes_per_cell = int(boxes_per_cell)
        self.lambda_coord = float(lambda_coord)
        self.lambda_noobj = float(lambda_noobj)
        self.rescore = bool(rescore)

    def extra_repr(self) -> str:
        return (f"S={self.grid_size}, B={self.boxes_per_cell}, C={self.num_classes}, "
                f"lambda_coord={self.lambda_coord}, lambda_noobj={self.lambda_noobj}, rescore={self.rescore}")

    def forward(self, output: Tensor, targets: list[dict], image_size: Sequence[int]) -> dict[str, Tensor]:
        S, B, C = self.grid_size, self.boxes_per_cell, self.num_classes
        N = output.shape[0]
        expected = (N, S, S, B * 5 + C)
        if tuple(output.shape) != expected:
            raise ValueError(f"YOLOv1 output must be [N, S, S, B*5 + C] = {list(expected)}, got {list(output.shape)}")
        if len(targets) != N:
            raise ValueError(f"{len(targets)} targets for a batch of {N} outputs")
        boxes = output[..., : B * 5].reshape(N, S, S, B, 5)
        conf = boxes[..., 4]
        enc = encode_targets(targets, image_size, S)
        b, i, j = enc["batch"], enc["row"], enc["col"]

        pred = boxes[b, i, j]  # [K, B, 5]
        with torch.no_grad():
            chosen, iou = responsible_predictor(decode_cell_boxes(pred.detach(), i, j, S), enc["box"])
        k = torch.arange(len(chosen), device=output.device)
        resp = pred[k, chosen]  # [K, 5]
        responsible = torch.zeros_like(conf, dtype=torch.bool)
        responsible[b, i, j, chosen] = True

        loss_xy = self.lambda_coord * ((resp[:, :2] - enc["offset"]) ** 2).sum()
        loss_wh = self.lambda_coord * ((resp[:, 2:4] - enc["box"][:, 2:].sqrt()) ** 2).sum()
        conf_target = iou[k, chosen] if self.rescore else torch.ones_like(resp[:, 4])
        loss_obj = ((resp[:, 4] - conf_target.detach()) ** 2).sum()
        loss_noobj = self.lambda_noobj * (conf.masked_fill(responsible, 0.0) ** 2).sum()
        probs = output[b, i, j, B * 5:]  # [K, C]
        onehot = torch.zeros_like(probs)
        onehot[k, enc["label"] - 1] = 1.0
        loss_cls = ((probs - onehot) ** 2).sum()
        losses = (loss_xy, loss_wh, loss_obj, loss_noobj, loss_cls)
        return {key: value / N for key, value in zip(LOSS_KEYS, losses)}
