"""Loading weights into a backbone: from a file or through torchvision's weights API.

Contract:

- ``read_state_dict(path)`` reads a file with ``torch.load(weights_only=True)`` (tensors and
  plain data only, never arbitrary pickles), accepts a raw state dict or one stored under
  ``"model"`` or ``"state_dict"``, and strips the ``"module."`` prefix that DataParallel /
  DistributedDataParallel add. A missing file raises :class:`WeightsFileNotFoundError`, an
  unreadable one :class:`WeightsError`; both name the file.
- ``torchvision_state_dict(name)`` fetches the DEFAULT ImageNet weights of the torchvision model
  ``name`` (from the torch hub cache when present). Without network it raises
  :class:`WeightsError` saying which URL to download and how to pass the file as a path.
- ``load_weights(module, state_dict, source, ...)`` checks every key before copying anything:
  keys only a classifier has (``fc.``, ``classifier.``, aux heads) are ignored and listed in a
  log line, keys the backbone adds on purpose (deformable offsets) are reported as new, and
  any other missing key, unexpected key or shape mismatch raises :class:`WeightsError` naming
  the source and the first offending keys.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

logger = logging.getLogger("backbones")

#: How many keys an error or log line shows per category before eliding the rest.
SHOWN_KEYS = 5


class WeightsError(RuntimeError):
    """A weights source that cannot be used: unreadable, not a state dict, or not matching."""


class WeightsFileNotFoundError(WeightsError, FileNotFoundError):
    """The weights file does not exist."""


def _show(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f", ... ({len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else "")


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def unwrap_state_dict(obj, source: str) -> dict[str, Tensor]:
    """The tensor dict inside ``obj`` (raw, or under "model" / "state_dict"), without "module."."""
    state = obj
    if not _is_state_dict(state) and isinstance(state, Mapping):
        for key in ("model", "state_dict"):
            if _is_state_dict(state.get(key)):
                state = state[key]
                break
    if not _is_state_dict(state):
        found = (f"a dict with keys {_show([str(k) for k in obj])}" if isinstance(obj, Mapping)
                 else type(obj).__name__)
        raise WeightsError(
            f"{source} holds {found}, not a state dict; expected a dict of tensors, or one stored "
            f"under 'model' or 'state_dict' (save it with torch.save(model.state_dict(), path))")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from ``path`` (see the module docstring for what is accepted)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsFileNotFoundError(
            f"weights file {path} does not exist; pass the path of a file written by "
            f"torch.save(model.state_dict(), path), or weights='torchvision'")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for one cause: an unusable file
        raise WeightsError(
            f"cannot read weights file {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. "
            f"The file is truncated or corrupt, or holds objects other than tensors and plain "
            f"data; download or export it again") from exc
    return unwrap_state_dict(obj, f"weights file {path}")


def torchvision_state_dict(torchvision_name: str) -> dict[str, Tensor]:
    """The DEFAULT ImageNet state dict of torchvision's ``torchvision_name`` model."""
    from torchvision.models import get_model_weights

    try:
        weights = get_model_weights(torchvision_name).DEFAULT
    except (ValueError, KeyError) as exc:
        raise WeightsError(f"torchvision has no weights for {torchvision_name!r}: {exc}") from exc
    try:
        return dict(weights.get_state_dict(progress=False))
    except Exception as exc:  # URLError, socket errors, hash mismatch: all mean "not fetched"
        file_name = weights.url.rsplit("/", 1)[-1]
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise WeightsError(
            f"could not fetch torchvision's {weights} for {torchvision_name!r} "
            f"({type(exc).__name__}: {exc}). Without network access, download {weights.url} "
            f"on a machine that has it and pass the file as weights='/path/to/{file_name}' "
            f"(or copy it into {cache} so that weights='torchvision' finds it)") from exc


@dataclass
class LoadReport:
    """What ``load_weights`` did: keys copied, ignored (classifier only) and new (kept as built)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)


def load_weights(
    module: nn.Module,
    state_dict: Mapping[str, Tensor],
    source: str,
    is_ignorable: Callable[[str], bool] = lambda key: False,
    is_new: Callable[[str], bool] = lambda key: False,
) -> LoadReport:
    """Copy ``state_dict`` into ``module`` after checking that the keys and shapes match.

    ``is_ignorable(key)`` says which keys of the file the module may lack (a classifier head);
    ``is_new(key)`` which keys of the module the file may lack (layers the backbone adds).
    ``num_batches_tracked`` is never required either way (FrozenBatchNorm2d has none).
    Raises :class:`WeightsError` naming ``source`` and the first offending keys.
    """
    own = module.state_dict()
    report = LoadReport(source)
    missing, unexpected, mismatched = [], [], []
    for key, value in own.items():
        if key in state_dict:
            theirs = state_dict[key]
            if tuple(theirs.shape) != tuple(value.shape):
                mismatched.append(f"{key} (file {list(theirs.shape)} vs model {list(value.shape)})")
            else:
                report.loaded.append(key)
        elif key.endswith("num_batches_tracked"):
            continue
        elif is_new(key):
            report.new.append(key)
        else:
            missing.append(key)
    for key in state_dict:
        if key in own or key.endswith("num_batches_tracked"):
            continue
        if is_ignorable(key):
            report.ignored.append(key)
        else:
            unexpected.append(key)
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing key(s): {_show(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected key(s): {_show(unexpected)}")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatch(es): {_show(mismatched)}")
        raise WeightsError(
            f"{source} does not match {getattr(module, 'name', type(module).__name__)}: " + "; ".join(problems)
            + ". Check that the file was saved from the same architecture and options "
            "(depth, layout, norm)")
    module.load_state_dict({k: state_dict[k] for k in report.loaded}, strict=False)
    logger.info("loaded %d tensors from %s", len(report.loaded), source)
    if report.ignored:
        groups: dict[str, int] = {}
        for key in report.ignored:
            top = key.split(".", 1)[0]
            groups[top] = groups.get(top, 0) + 1
        logger.info("ignored %d key(s) of %s that this backbone does not use (classifier or "
                    "unbuilt layers): %s", len(report.ignored), source,
                    ", ".join(f"{top}.* ({n})" for top, n in groups.items()))
    if report.new:
        logger.info("%d key(s) not in %s keep their initialisation: %s", len(report.new), source,
                    _show(report.new))
    return report
