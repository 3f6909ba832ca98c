"""Truncated SVD of fully connected layers (Fast R-CNN, section 3.1): fewer multiply-adds at
test time.

Contract
--------
A ``Linear(in, out)`` with weight ``W [out, in]`` factors as ``W ~ U_t S_t V_t^T`` (the top
``t`` singular values): the layer becomes two, ``Linear(in, t, bias=False)`` with weight
``S_t V_t^T`` and ``Linear(t, out)`` with weight ``U_t`` and the original bias, which costs
``t (in + out)`` multiply-adds per row instead of ``in * out``. At ``t = min(in, out)`` the
two layers compute the original one (to float rounding).

- :func:`compress_linear(layer, rank)` -> ``nn.Sequential`` of the two layers (new
  parameters, no gradient link to ``layer``);
- :func:`compress_fc_layers_(module, ranks)`: replaces the named ``nn.Linear`` children of
  ``module`` (e.g. a box head's ``fc6``/``fc7``) by their compressed pairs, in place, for an
  inference-only model (its state dict keys change to ``fc6.0.weight``, ``fc6.1.weight``, ...);
- :class:`TruncatedSVDLinear`: an ``nn.Linear`` (same parameters, same state-dict keys) that
  computes the full product in training mode and the rank-``t`` factorisation in eval mode;
  the factors are computed from the current weights on first use and again whenever the
  weights change (an optimiser step, a state-dict load). :func:`use_truncated_svd_` swaps
  named children for it, which is what the ``svd_ranks`` builder option of Fast R-CNN
  does: checkpoints stay full-rank, only test-time predictions use the factors;
- :func:`truncate_detector_fc_` does either to a two-stage detector's box head
  (``model.roi_heads.box_head``): the model-level function.

Ranks are validated: ``1 <= t``; a rank at or above ``min(in, out)`` keeps the exact layer.
The paper compresses VGG-16's fc6 (25088 x 4096) to the top 1024 and fc7 (4096 x 4096) to the
top 256 singular values: detection time -30 % for -0.3 mAP on VOC 2007.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check_rank(layer: nn.Module, rank: int, name: str = "layer") -> int:
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"{name}: truncated SVD applies to nn.Linear layers, got {type(layer).__name__}")
    if isinstance(rank, bool) or int(rank) != rank or rank < 1:
        raise ValueError(f"{name}: the SVD rank must be a positive integer, got {rank!r}")
    return int(rank)


@torch.no_grad()
def svd_factors(weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """``(first [t, in], second [out, t])`` with ``second @ first`` the best rank-``t``
    approximation of ``weight [out, in]`` (Eckart-Young), ``t = min(rank, in, out)``;
    computed in float64 for accuracy and returned in ``weight``'s dtype.

    Through the Gram matrix of the smaller side rather than a full SVD: for ``out <= in``
    the top ``t`` eigenvectors ``U_t`` of ``W W^T`` are the top left singular vectors and
    ``U_t U_t^T W`` is the best rank-``t`` approximation, so ``first = U_t^T W`` (that is
    ``S_t V_t^T``) and ``second = U_t``; no singular value is inverted, so a rank-deficient
    ``W`` is fine. For VGG-16's fc6 (4096 x 25088) that is one 4096-square eigh instead of an
    SVD of the whole matrix: 60 s instead of 537 s on this project's CPU (docs/benchmarks.md).
    """
    w = weight.double()
    out_features, in_features = w.shape
    t = min(int(rank), out_features, in_features)
    if out_features <= in_features:
        _, vectors = torch.linalg.eigh(w @ w.t())  # ascending eigenvalues
        u = vectors[:, -t:].flip(1)
        first, second = u.t() @ w, u
    else:
        _, vectors = torch.linalg.eigh(w.t() @ w)
        v = vectors[:, -t:].flip(1)
        first, second = v.t(), w @ v
    return first.to(weight.dtype).contiguous(), second.to(weight.dtype).contiguous()


def compress_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    """``Linear(in, rank, bias=False)`` then ``Linear(rank, out)`` approximating ``layer``
    by its top ``rank`` singular values (see the module docstring)."""
    rank = _check_rank(layer, rank)
    first, second = svd_factors(layer.weight.detach(), rank)
    t = first.shape[0]
    reduce = nn.Linear(layer.in_features, t, bias=False, device=first.device, dtype=first.dtype)
    expand = nn.Linear(t, layer.out_features, bias=layer.bias is not None, device=first.device, dtype=first.dtype)
    with torch.no_grad():
        reduce.weight.copy_(first)
        expand.weight.copy_(second)
        if layer.bias is not None:
            expand.bias.copy_(layer.bias)
    return nn.Sequential(reduce, expand)


def _named_linear(module: nn.Module, name: str) -> nn.Linear:
    layer = getattr(module, name, None)
    if not isinstance(layer, nn.Linear):
        found = type(layer).__name__ if layer is not None else "nothing"
        linears = [n for n, m in module.named_children() if isinstance(m, nn.Linear)]
        raise ValueError(f"svd_ranks names {name!r}, but {type(module).__name__} has {found} there; "
                         f"its fully connected layers are {linears or 'none'}")
    return layer


def compress_fc_layers_(module: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """Replace ``module.<name>`` by :func:`compress_linear` of it for each ``name: rank``, in
    place (inference only; the state dict keys change). Returns ``module``."""
    for name, rank in dict(ranks).items():
        setattr(module, name, compress_linear(_named_linear(module, name), rank))
    return module


class TruncatedSVDLinear(nn.Linear):
    """``nn.Linear`` whose eval-mode product uses the rank-``rank`` SVD factors of its weight.

    The parameters and state-dict keys are those of ``nn.Linear``; the factors are a cache,
    recomputed when the weight tensor is replaced or modified in place.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.rank = _check_rank(self, rank)
        self._factors: tuple | None = None  # (key of the weights they came from, first, second)

    @classmethod
    def from_linear(cls, layer: nn.Linear, rank: int) -> "TruncatedSVDLinear":
        """A TruncatedSVDLinear sharing ``layer``'s parameters (no copy)."""
        _check_rank(layer, rank)
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = layer.in_features, layer.out_features
        new.weight = layer.weight
        new.bias = layer.bias
        new.rank = int(rank)
        new._factors = None
        new.train(layer.training)  # swapped into an eval-mode model, it must compute in eval mode
        return new

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, svd_rank={self.rank} (eval mode)"

    @property
    def is_truncated(self) -> bool:
        return self.rank < min(self.in_features, self.out_features)

    def factors(self) -> tuple[Tensor, Tensor]:
        """The current ``(first [t, in], second [out, t])``, recomputed if the weight changed."""
        weight = self.weight
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        if self._factors is None or self._factors[0] != key:
            self._factors = (key, *svd_factors(weight.detach(), self.rank))
        return self._factors[1], self._factors[2]

    def forward(self, x: Tensor) -> Tensor:
        if self.training or not self.is_truncated:
            return F.linear(x, self.weight, self.bias)
        first, second = self.factors()
        return F.linear(F.linear(x, first.to(x.dtype)), second.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


def use_truncated_svd_(module: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """Swap each named ``nn.Linear`` child of ``module`` for a :class:`TruncatedSVDLinear`
    sharing its parameters (test-time SVD; training and checkpoints unchanged). Returns ``module``."""
    for name, rank in dict(ranks).items():
        layer = _named_linear(module, name)
        if isinstance(layer, TruncatedSVDLinear):
            layer.rank = _check_rank(layer, rank, name)
            layer._factors = None
        else:
            setattr(module, name, TruncatedSVDLinear.from_linear(layer, _check_rank(layer, rank, name)))
    return module


def truncate_detector_fc_(model: nn.Module, ranks: dict[str, int], permanent: bool = False) -> nn.Module:
    """Truncated SVD of a two-stage detector's box-head FC layers (``{"fc6": 1024, "fc7": 256}``
    is the paper's), in place: test-time only (:func:`use_truncated_svd_`, the default) or
    ``permanent`` (:func:`compress_fc_layers_`: an inference-only model whose state dict
    holds the factors). Returns ``model``."""
    head = getattr(getattr(model, "roi_heads", None), "box_head", None)
    if head is None:
        raise TypeError(f"{type(model).__name__} has no roi_heads.box_head to compress")
    (compress_fc_layers_ if permanent else use_truncated_svd_)(head, ranks)
    return model
