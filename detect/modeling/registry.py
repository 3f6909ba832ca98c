"""The flat name -> builder table for detectors.

Config files name a detector by string (``model.name = "faster_rcnn"``); this table
turns the string into a builder. Builders are referenced as ``"module:function"`` so
that importing the table does not import every detector. Sub-modules (backbones,
heads) are passed to builders as objects or resolved by their own tables; nothing else
is looked up by string.
"""
from __future__ import annotations

import importlib
from typing import Callable

_BUILDERS: dict[str, "str | Callable"] = {
    # name            -> "module:function"
    "faster_rcnn": "detect.modeling.meta_arch.faster_rcnn:build_faster_rcnn",
    "fast_rcnn": "detect.modeling.meta_arch.fast_rcnn:build_fast_rcnn",
    "rcnn": "detect.modeling.meta_arch.rcnn:build_rcnn",
    "yolov1": "detect.modeling.meta_arch.yolov1:build_yolov1",
    "fcn": "detect.modeling.meta_arch.fcn:build_fcn",
}


def register_detector(name: str, builder: "str | Callable") -> None:
    """Add a detector to the table: ``builder`` is a callable or ``"module:function"``.

    For users' own detectors (and tests); a name that exists already is an error, so
    a typo cannot silently replace a built-in.
    """
    if name in _BUILDERS:
        raise KeyError(f"detector {name!r} is registered already")
    _BUILDERS[name] = builder


def list_detectors() -> list[str]:
    """Names accepted by :func:`build_detector`, sorted."""
    return sorted(_BUILDERS)


def get_detector_builder(name: str) -> Callable:
    if name not in _BUILDERS:
        raise KeyError(f"unknown detector {name!r}; available: {', '.join(list_detectors())}")
    builder = _BUILDERS[name]
    if callable(builder):
        return builder
    module_name, func_name = builder.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def build_detector(name: str, **kwargs):
    """Build the detector registered under ``name`` with keyword options.

    ``build_detector(**checkpoint["config"]["model"])`` rebuilds a saved model: the
    model section of a config is exactly these keyword arguments plus ``name``.
    """
    return get_detector_builder(name)(**kwargs)
