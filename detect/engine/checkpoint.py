"""Checkpoint files: one ``torch.save`` file of tensors and plain data.

Contract (docs/ABSTRACTIONS.md "Checkpoints")::

    save_checkpoint(path, payload)      # atomic: temp file in the same directory, fsync, rename
    payload = load_checkpoint(path)     # torch.load(weights_only=True); CheckpointError if bad

A payload is a dict with these keys (:meth:`detect.engine.trainer.Trainer.checkpoint_payload`
assembles it)::

    format_version   1
    library_version  detect.__version__ of the writer
    model            the model's state_dict() (raw weights, what training resumes from)
    optimizer        state_dict() of the optimizer, scheduler, AMP GradScaler, or None
    scheduler, scaler
    ema              {"state_dict", "updates", "decay", "tau"} of the weight average, or None
    epoch            completed epochs
    iteration        iterations done (batches trained on, skipped non-finite steps included)
    epochs           the run's planned epochs (``train.epochs``, or fewer where a time budget
                     fitted them); a resume with ``train.epochs`` unchanged continues this plan
    rng              torch / cuda / numpy / python RNG states of rank 0 as tensors, tuples and
                     ints (detect.engine.rng); rng_per_rank: every rank's, under torch.distributed
    data_order       {"seed", "next_batch", "num_batches", "world_size"}: where in the batch
                     order of epoch ``epoch`` a resumed run continues
    config           the resolved config dict (config["model"] rebuilds the model)
    class_names      list[str]; label k is class_names[k - 1]
    color_order      "RGB"
    box_format       "xyxy"
    metrics          the last validation metrics (dict[str, float]) or {}
    metrics_iteration  the iteration those metrics were computed at, or None
    best             {"metric", "value", "epoch", "iteration"} of best.pth so far, or None
    early_stop       {"reference", "evaluations"}: early stopping's best value and the validations
                     since it improved by more than the minimum, or None
    deployable       True in a deployable checkpoint (below); absent in a resumable one

``last.pth`` (and the periodic and Ctrl+C checkpoints, which are last.pth too) is complete,
for resuming. ``best.pth`` is *deployable*: :func:`deployable_payload` keeps the evaluated
weights (the EMA ones when the run kept an EMA) under ``model`` and drops the optimizer,
scheduler, AMP scaler, EMA and RNG/data-order state (``optimizer`` etc. are None); it loads
with ``--weights``, ``tools/eval.py --checkpoint`` and ``Predictor.from_checkpoint``, and
``--resume`` refuses it (:func:`check_resumable`) pointing at last.pth.

Never a non-finite checkpoint: :func:`save_checkpoint` refuses (raising
:class:`NonFiniteWeightsError`, the earlier file left as it was) a payload whose ``model``
or EMA weights hold NaN or inf.

Files that ``torch.save(..., _use_new_zipfile_serialization=False)`` wrote (the legacy,
non-zip format) are read with ``weights_only=True`` too; one that cannot be is reported as
such, not as a corrupt zip.

Only tensors and plain Python data are stored, so every checkpoint loads with
``torch.load(weights_only=True)`` and loading one never runs code from the file.

When EMA is enabled the evaluated weights are the EMA ones: :func:`inference_state_dict`
returns them (and the raw ``model`` weights otherwise); use it for evaluation and inference.

Crash safety: :func:`save_checkpoint` writes through :func:`detect.filesystem.atomic_write`
(a temporary file next to the target, flushed and fsynced, then ``os.replace``-d over the
target, the directory fsynced), so a crash at any point leaves either the previous
complete file or the new one.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from detect.filesystem import atomic_write

FORMAT_VERSION = 1
LAST_NAME = "last.pth"
BEST_NAME = "best.pth"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, corrupt, truncated or of the wrong kind."""


class NonFiniteWeightsError(CheckpointError):
    """A checkpoint would hold NaN/inf weights; it was not written."""


# The start of a legacy (non-zip) torch.save file: pickle protocol 2, then torch's magic number.
_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8"


def nonfinite_entries(state_dict: Mapping[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` holding NaN or inf.

    One max-abs per tensor in a single foreach call and one host sync: a NaN gives a NaN
    maximum, an inf an inf one, and a maximum never overflows as a squared norm could.
    """
    names = [k for k, v in state_dict.items() if isinstance(v, Tensor) and v.is_floating_point() and v.numel()]
    if not names:
        return []
    maxima = torch._foreach_norm([state_dict[k].detach() for k in names], float("inf"))
    finite = torch.isfinite(torch.stack([m.float().cpu() for m in maxima])).tolist()
    return [name for name, ok in zip(names, finite) if not ok]


def deployable_payload(payload: Mapping[str, Any]) -> dict:
    """The deployable form of a checkpoint (best.pth): the evaluated weights and the facts
    needed to use them, without the state that only resuming needs (see the module docstring)."""
    kept = {k: v for k, v in payload.items() if k not in _RESUME_ONLY}
    kept.update({k: None for k in ("optimizer", "scheduler", "scaler", "ema")})
    kept["model"] = inference_state_dict(payload)
    kept["deployable"] = True
    return kept


_RESUME_ONLY = ("optimizer", "scheduler", "scaler", "ema", "rng", "rng_per_rank", "data_order")


def check_resumable(path, payload: Mapping[str, Any]) -> None:
    """Raise :class:`CheckpointError` when ``payload`` (read from ``path``) cannot be resumed from."""
    if payload.get("deployable") or payload.get("optimizer") is None:
        last = Path(path).with_name(LAST_NAME)
        raise CheckpointError(
            f"checkpoint {path}: a deployable checkpoint (weights only, no optimizer or schedule state), so a run "
            f"cannot resume from it; resume from {last} (--resume {last} or --resume auto), or start a new run "
            f"from its weights with --weights {path}"
        )


def save_checkpoint(path, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically and return the path.

    The file appears under its final name only once it is complete and on disk; the
    previous file of that name (if any) survives any failure during the write.
    Raises :class:`NonFiniteWeightsError` (writing nothing) when the ``model`` weights or
    the EMA weights hold NaN or inf.
    """
    path = Path(path)
    for where, state in (("model", payload.get("model")), ("ema", (payload.get("ema") or {}).get("state_dict"))):
        bad = nonfinite_entries(state) if isinstance(state, Mapping) else []
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise NonFiniteWeightsError(
                f"checkpoint {path} not written: the {where} weights hold NaN/inf ({shown}) at iteration "
                f"{payload.get('iteration')}; the previous {path.name}, if any, is kept. The run has diverged: "
                "resume from an earlier checkpoint with a lower learning rate or train.clip_grad_norm"
            )
    with atomic_write(path, "wb") as f:
        torch.save(dict(payload), f)
    return path


def load_checkpoint(path, map_location="cpu", *, require_model: bool = True) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check its layout.

    Raises :class:`CheckpointError` naming the file when it does not exist, is truncated
    or corrupt, holds something other than tensors and plain data, or is not a checkpoint
    of this library (no ``model`` state dict) while ``require_model`` is set. Legacy
    (non-zip) torch.save files are read the same way.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    corrupt = (
        f"checkpoint {path}: cannot be read, the file is corrupt or truncated ({{}}); "
        "use an earlier checkpoint (last.pth / best.pth) or retrain"
    )
    if zipfile.is_zipfile(path):
        payload = _load_zip(path, map_location, corrupt)
    else:  # torch.save writes a zip archive (a cut-off one has no directory), or the legacy format
        with open(path, "rb") as f:
            legacy = f.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC
        if not legacy:
            raise CheckpointError(corrupt.format(f"not a complete torch.save archive, {path.stat().st_size} bytes"))
        payload = _load_legacy(path, map_location)
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict, found {type(payload).__name__}")
    if require_model:
        model_state = payload.get("model")
        if not isinstance(model_state, Mapping) or not all(isinstance(v, Tensor) for v in model_state.values()):
            raise CheckpointError(
                f"checkpoint {path}: no 'model' state dict; it is not a checkpoint written by detect "
                f"(keys: {sorted(map(str, payload))[:10]})"
            )
        version = payload.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {path}: format_version {version!r}, this library reads {FORMAT_VERSION}"
            )
    return payload


def _load_zip(path: Path, map_location, corrupt: str):
    try:  # torch.load does not check the archive's CRC-32s; a flipped bit would load silently
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise CheckpointError(corrupt.format(f"{type(err).__name__}: {_first_line(err)}")) from err
    if damaged is not None:
        raise CheckpointError(corrupt.format(f"checksum mismatch in {damaged}"))
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refuses pickled classes and functions
        raise CheckpointError(
            f"checkpoint {path}: holds pickled Python objects, not only tensors and plain data "
            f"({_unsupported_global(err)}); checkpoints of this library load with torch.load(weights_only=True)"
        ) from err
    except Exception as err:
        raise CheckpointError(corrupt.format(f"{type(err).__name__}: {_first_line(err)}")) from err


def _load_legacy(path: Path, map_location):
    """A legacy (non-zip) torch.save file, with ``weights_only=True`` like any other."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated, or pickled objects weights_only refuses: the unpickler cannot tell
        raise CheckpointError(
            f"checkpoint {path}: a legacy (non-zip) torch.save file that torch.load(weights_only=True) cannot "
            f"read ({_unsupported_global(err) if isinstance(err, pickle.UnpicklingError) else _first_line(err)}): "
            "it is truncated or holds pickled Python objects. If you trust it, re-save it in the current "
            "format: torch.save(torch.load(path, weights_only=False), new_path)"
        ) from err


def _unsupported_global(err: BaseException) -> str:
    for line in str(err).splitlines():
        if "Unsupported global" in line:
            return line.strip().removeprefix("WeightsUnpickler error: ")
    return _first_line(err)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def inference_state_dict(payload: Mapping[str, Any]) -> dict[str, Tensor]:
    """The weights to evaluate or deploy: the EMA weights when the run kept an EMA."""
    ema = payload.get("ema")
    if isinstance(ema, Mapping) and isinstance(ema.get("state_dict"), Mapping):
        return dict(ema["state_dict"])
    return dict(payload["model"])


def state_dict_from_file(path, map_location="cpu") -> dict[str, Tensor]:
    """Model weights from a detect checkpoint (EMA preferred) or a bare state dict file.

    Bare state dicts (a dict of tensors, e.g. torchvision's detection weights) are
    accepted so that ``--weights`` can start from them; the detector's own loader
    (``detect.modeling.weights.load_detector_weights``) converts and fits them.
    """
    payload = load_checkpoint(path, map_location, require_model=False)
    if "model" in payload and isinstance(payload["model"], Mapping):
        return inference_state_dict(payload)
    if payload and all(isinstance(v, Tensor) for v in payload.values()):
        return payload
    raise CheckpointError(
        f"checkpoint {path}: neither a detect checkpoint (with a 'model' key) nor a state dict of tensors"
    )


def find_last_checkpoint(output_dir) -> Path | None:
    """``<output_dir>/last.pth`` if it exists (what ``--resume auto`` takes), else None."""
    candidate = Path(output_dir) / LAST_NAME
    return candidate if candidate.is_file() else None
