"""R-CNN's per-class linear SVMs (with hard-negative mining) and class-specific box regression.

Both live in the model as **buffers** (tensors in the state dict, so checkpoints load with
``torch.load(weights_only=True)``); they are fitted by the R-CNN training stages
(:mod:`detect.engine.stages`), not by back-propagation.

Contract
--------
``LinearSVMs(num_classes, dim)``: buffers ``weight [K, D]``, ``bias [K]``, ``feature_scale``
(scalar; features are multiplied by it first: the paper scales them to a mean L2 norm of 20)
and ``trained`` (bool). ``svms(features [N, D]) -> scores [N, K]`` (the SVM margins).

``BoxRegressor(num_classes, dim)``: buffers ``weight [K, 4, D]``, ``bias [K, 4]``,
``feature_scale``, ``trained``. ``regressor(features [N, D]) -> deltas [N, 4 * K]``, the
paper's ``(dx, dy, log dw, log dh)`` (``detect.modeling.box_coder.BoxCoder`` with unit weights).

``mean_norm_scale(features, target_norm=20.0)``: the factor that gives ``features`` a mean
L2 norm of ``target_norm`` (float64 on a float16 cache is fine).

``fit_linear_svm(positives, negatives, C=1e-3, positive_weight=2.0, intercept_scaling=10.0)``
-> ``(w [D], b)``: ``sklearn.svm.LinearSVC(loss="hinge", C=C, class_weight={1: positive_weight},
intercept_scaling=intercept_scaling)``, the liblinear call of the original code (labels +1 / -1,
``random_state=0`` so a refit on the same data gives the same weights).

:class:`HardNegativeMiner`: the original's mining (``rcnn_train.m``) for one class at a time
or all classes at once, over images in order, one pass:

1. an image's negatives for class c are its boxes whose IoU with every ground-truth box of
   class c is below 0.3 (other classes' ground truth included); its positives do not change
   (all ground-truth boxes of class c in the training set, given up front);
2. the **first** image adds all its negatives; every later image adds those (not already
   cached) whose current SVM score is above ``hard_thresh`` (-1.0001: inside the margin);
3. when a class has ``retrain_every`` (2000) or more negatives added since its last fit, or on
   the first image, that class is refitted on positives + cached negatives and the cached
   negatives scoring below ``evict_thresh`` (-1.2) are evicted;
4. after the last image every class is refitted once more (and evicted).

The miner's state (``state_dict()``: per class the cached row ids, the weights, the count
added since the last fit; the next image index) is plain tensors, so the stage checkpoints
it and a resumed pass ends with the same weights as an uninterrupted one.

``fit_ridge(features [N, D], targets [N, 4], lam=1000.0) -> (W [4, D], b [4])``: ridge
regression ``min ||X W^T + b - Y||^2 + lam ||W||^2``, bias unregularised (features and
targets are centred first), solved by Cholesky in float64. As in the original
(``rcnn_train_bbox_regressor.m``) the targets are first centred and whitened
(``T = V diag(1/sqrt(d + 0.001)) V^T`` from their covariance) and the fit mapped back, so
the returned map predicts the raw targets. ``robust=q`` is the original's ``solve_robust``
(off by default there and here): each whitened target is solved, the fraction ``q`` of rows
with its largest squared residuals dropped, and solved again on the rest (stage option
``bbox_reg.robust``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn


class LinearSVMs(nn.Module):
    """K one-vs-rest linear SVMs on (scaled) CNN features; weights are buffers."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(num_classes, dim))
        self.register_buffer("bias", torch.zeros(num_classes))
        self.register_buffer("feature_scale", torch.tensor(1.0))
        self.register_buffer("trained", torch.tensor(False))

    def extra_repr(self) -> str:
        return f"num_classes={self.weight.shape[0]}, dim={self.weight.shape[1]}"

    def forward(self, features: Tensor) -> Tensor:
        return (features.float() * self.feature_scale) @ self.weight.t() + self.bias


class BoxRegressor(nn.Module):
    """Class-specific linear box regression on (scaled) pool5 features; weights are buffers."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(num_classes, 4, dim))
        self.register_buffer("bias", torch.zeros(num_classes, 4))
        self.register_buffer("feature_scale", torch.tensor(1.0))
        self.register_buffer("trained", torch.tensor(False))

    def extra_repr(self) -> str:
        return f"num_classes={self.weight.shape[0]}, dim={self.weight.shape[2]}"

    def forward(self, features: Tensor) -> Tensor:
        scaled = features.float() * self.feature_scale
        deltas = torch.einsum("nd,kjd->nkj", scaled, self.weight) + self.bias
        return deltas.reshape(features.shape[0], 4 * self.weight.shape[0])


def mean_norm_scale(features, target_norm: float = 20.0) -> float:
    """``target_norm / mean ||x||`` over the rows of ``features`` (numpy or tensor)."""
    array = np.asarray(features, dtype=np.float64)
    if array.shape[0] == 0:
        raise ValueError("cannot compute a feature scale from zero feature rows")
    mean = float(np.linalg.norm(array, axis=1).mean())
    return target_norm / mean if mean > 0 else 1.0


def fit_linear_svm(positives: np.ndarray, negatives: np.ndarray, C: float = 1e-3, positive_weight: float = 2.0,
                   intercept_scaling: float = 10.0, max_iter: int = 10000) -> tuple[np.ndarray, float]:
    """One linear SVM, positives labelled +1 and negatives -1 (see the module docstring)."""
    from sklearn.svm import LinearSVC

    if len(positives) == 0 or len(negatives) == 0:
        raise ValueError(f"an SVM needs positives and negatives, got {len(positives)} and {len(negatives)}")
    X = np.concatenate([positives, negatives]).astype(np.float64)
    y = np.concatenate([np.ones(len(positives)), -np.ones(len(negatives))])
    svm = LinearSVC(loss="hinge", C=C, class_weight={1: positive_weight}, intercept_scaling=intercept_scaling,
                    dual=True, max_iter=max_iter, random_state=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # liblinear's ConvergenceWarning at max_iter: the original ignores it too
        svm.fit(X, y)
    return svm.coef_[0].astype(np.float32), float(svm.intercept_[0])


class HardNegativeMiner:
    """The original's hard-negative mining over cached features (see the module docstring).

    Args:
        features: ``[N, D]`` array-like (a float16 memmap), already multiplied by nothing; the
            miner applies ``feature_scale``.
        positives: per class, int64 row ids of its positives.
        retrain_every, hard_thresh, evict_thresh, svm_options: the rule's numbers.
        fit: ``(positives, negatives) -> (w, b)``; default :func:`fit_linear_svm` with ``svm_options``.
    """

    def __init__(self, features, positives: Sequence[Tensor], feature_scale: float = 1.0,
                 retrain_every: int = 2000, hard_thresh: float = -1.0001, evict_thresh: float = -1.2,
                 svm_options: dict | None = None, fit: Callable | None = None):
        self.features = features
        self.positives = [torch.as_tensor(p, dtype=torch.int64) for p in positives]
        self.num_classes = len(self.positives)
        self.feature_scale = float(feature_scale)
        self.retrain_every = int(retrain_every)
        self.hard_thresh = float(hard_thresh)
        self.evict_thresh = float(evict_thresh)
        self.fit = fit or (lambda pos, neg: fit_linear_svm(pos, neg, **(svm_options or {})))
        dim = features.shape[1]
        self.weight = torch.zeros(self.num_classes, dim)
        self.bias = torch.zeros(self.num_classes)
        self.cache = [torch.zeros(0, dtype=torch.int64) for _ in range(self.num_classes)]
        self.added = torch.zeros(self.num_classes, dtype=torch.int64)
        self.fitted = torch.zeros(self.num_classes, dtype=torch.bool)
        self.next_image = 0
        self.retrains = 0

    def rows(self, index: Tensor) -> Tensor:
        return torch.from_numpy(np.asarray(self.features[index.numpy()], dtype=np.float32)) * self.feature_scale

    def scores(self, rows: Tensor, cls: int) -> Tensor:
        return rows @ self.weight[cls] + self.bias[cls]

    def _refit(self, cls: int) -> None:
        positives, negatives = self.positives[cls], self.cache[cls]
        if positives.numel() == 0 or negatives.numel() == 0:
            return  # no positive of this class (or no negative yet): its SVM stays as it is
        w, b = self.fit(self.rows(positives).numpy(), self.rows(negatives).numpy())
        self.weight[cls], self.bias[cls] = torch.from_numpy(np.asarray(w, dtype=np.float32)), float(b)
        self.fitted[cls] = True
        keep = self.scores(self.rows(negatives), cls) >= self.evict_thresh
        self.cache[cls] = negatives[keep]
        self.added[cls] = 0
        self.retrains += 1

    def add_image(self, negatives: Sequence[Tensor]) -> list[int]:
        """One image: ``negatives[c]`` are its candidate negative row ids for class c. Returns
        the classes refitted."""
        first = self.next_image == 0
        refitted = []
        for cls in range(self.num_classes):
            candidates = torch.as_tensor(negatives[cls], dtype=torch.int64)
            candidates = candidates[~torch.isin(candidates, self.cache[cls])]
            if candidates.numel() and not first:
                candidates = candidates[self.scores(self.rows(candidates), cls) > self.hard_thresh]
            if candidates.numel():
                self.cache[cls] = torch.cat((self.cache[cls], candidates))
                self.added[cls] += candidates.numel()
            if first or self.added[cls] >= self.retrain_every:
                self._refit(cls)
                refitted.append(cls)
        self.next_image += 1
        return refitted

    def finish(self) -> None:
        """The final refit of every class after the pass."""
        for cls in range(self.num_classes):
            self._refit(cls)

    def state_dict(self) -> dict:
        return {"weight": self.weight.clone(), "bias": self.bias.clone(), "cache": [c.clone() for c in self.cache],
                "added": self.added.clone(), "fitted": self.fitted.clone(), "next_image": int(self.next_image),
                "retrains": int(self.retrains)}

    def load_state_dict(self, state: dict) -> None:
        self.weight = state["weight"].clone()
        self.bias = state["bias"].clone()
        self.cache = [c.clone() for c in state["cache"]]
        self.added = state["added"].clone()
        self.fitted = state["fitted"].clone()
        self.next_image = int(state["next_image"])
        self.retrains = int(state["retrains"])


def fit_ridge(features, targets, lam: float = 1000.0, whiten_eps: float = 1e-3,
              robust: float = 0.0) -> tuple[Tensor, Tensor]:
    """Ridge regression of ``targets`` ``[N, T]`` on ``features`` ``[N, D]`` (see the module docstring);
    returns ``(W [T, D], b [T])`` in float32 predicting the raw targets.

    ``robust`` (the original code's ``solve_robust``, off by default there and here): when
    ``> 0``, each (whitened) target is solved once, the ``robust`` fraction of rows with the
    largest squared residuals for it is dropped, and that target is solved again on the rest.
    """
    if not 0.0 <= float(robust) < 1.0:
        raise ValueError(f"robust must be a fraction in [0, 1), got {robust!r}")
    X = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    Y = torch.as_tensor(np.asarray(targets), dtype=torch.float64)
    if X.shape[0] == 0:
        raise ValueError("ridge regression needs at least one example")
    x_mean, y_mean = X.mean(0), Y.mean(0)
    Xc, Yc = X - x_mean, Y - y_mean
    cov = Yc.t() @ Yc / Yc.shape[0]
    eigval, eigvec = torch.linalg.eigh(cov)
    eigval = eigval.clamp(min=0)
    whiten = eigvec @ torch.diag(1.0 / torch.sqrt(eigval + whiten_eps)) @ eigvec.t()
    unwhiten = eigvec @ torch.diag(torch.sqrt(eigval + whiten_eps)) @ eigvec.t()
    ridge = lam * torch.eye(X.shape[1], dtype=torch.float64)
    Y_white = Yc @ whiten
    W_white = torch.cholesky_solve(Xc.t() @ Y_white, torch.linalg.cholesky(Xc.t() @ Xc + ridge))  # [D, T]
    offset_white = torch.zeros(W_white.shape[1], dtype=torch.float64)  # intercepts of refits, whitened
    if robust > 0:
        losses = (Xc @ W_white - Y_white) ** 2  # [N, T]
        for t in range(W_white.shape[1]):
            keep = losses[:, t] < torch.quantile(losses[:, t], 1.0 - float(robust))
            if keep.sum() == 0:
                continue
            # the kept rows are centred on their own means: the dropped ones moved the overall ones
            x_keep, y_keep = Xc[keep].mean(0), Y_white[keep, t].mean()
            Xk = Xc[keep] - x_keep
            W_white[:, t] = torch.cholesky_solve(Xk.t() @ (Y_white[keep, t:t + 1] - y_keep),
                                                 torch.linalg.cholesky(Xk.t() @ Xk + ridge))[:, 0]
            offset_white[t] = y_keep - x_keep @ W_white[:, t]
    # back to raw targets: y = ((x - mx) W_white + offset) T_inv + my
    W = (W_white @ unwhiten).t()
    b = y_mean - W @ x_mean + offset_white @ unwhiten
    return W.float(), b.float()
