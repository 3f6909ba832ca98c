"""Config files, base files, dotted overrides and the resolved config.

A config file is Python that defines ``config``, a dict of plain data (numbers, strings,
booleans, None, lists, tuples, dicts) with these sections::

    config = dict(
        model=dict(name="faster_rcnn", backbone="resnet50", fpn=True, num_classes=20),  # build_detector(**model)
        data=dict(format="voc", train=dict(...), val=dict(...), batch_size=2, ...),      # detect.data.build
        train=dict(epochs=12, optimizer=dict(name="sgd", lr=0.02), scheduler=dict(...)),  # detect.engine
        eval=dict(metric="voc_area", interval=1, best_metric="bbox/AP50"),
        output_dir="runs/faster_rcnn_voc",
    )

The file runs with ``__file__`` set, so it can build paths relative to itself.

**Base files.** ``_base_`` names one file, or a list of files merged in order, relative to
the config file; the file's own dict is merged on top::

    config = dict(_base_="r50_fpn_coco.py", data=dict(batch_size=4), output_dir="runs/x")

Dicts merge key by key; anything else (numbers, strings, lists, tuples) replaces the base
value. A dict carrying ``_replace_=True`` replaces the base's dict instead of merging.

**Defaults.** :data:`DEFAULTS` (the engine's ``train`` and ``eval`` options and the
``data`` loader options) lies under every config, so every option exists in the resolved
config, can be overridden, and is documented in one place. The ``train`` and ``eval``
sections may hold only keys of :data:`DEFAULTS` (a misspelt option is an error listing
the close matches); ``model`` and ``data`` are checked by their builders.

**Overrides** (``--set`` on the command line, ``overrides=`` here), ``"dotted.key=value"``:

- the value is a Python literal, parsed with :func:`ast.literal_eval`: ``0.01``, ``True``,
  ``None``, ``[8, 11]``, ``(800, 1333)``, ``"text"``, ``{"k": 1}``;
- text that is not a literal is taken as a plain string only where the key holds a string
  or None, which makes paths and names unambiguous: ``data.train.root=/data/VOC2007``,
  ``model.backbone=resnet18``; anywhere else it is an error;
- the key must exist (the error lists close matches); ``+dotted.key=value`` adds a new
  key, e.g. an extra detector option ``+model.rpn_batch_size_per_image=64``;
- the value must have the type of the current one: an int for an int (a bool is not an
  int), an int or float for a float, a string for a string, a list or tuple for a list or
  tuple, a dict for a dict; any value may replace None and None may replace any value.

:func:`load_config` returns the resolved dict (base files merged, defaults filled,
overrides applied, paths turned into strings, values checked by :func:`validate_config`);
:func:`save_config` writes it as JSON to ``<output_dir>/config.json``; checkpoints keep the
same dict.

**Stored configs are data, never code.** :func:`config_from_checkpoint` turns the config a
checkpoint carries back into a resolved config without resolving ``_base_`` or running any
file: a ``_base_`` key there is refused (a resolved config has none; one that names a file
could only have been planted to run that file when the checkpoint is loaded).

**Checked values.** :func:`validate_config` refuses, before anything is built, the values
that torch would otherwise reject deep inside (``data.batch_size=0``, ``train.epochs=-1``,
``train.optimizer.lr=0``, ``train.nonfinite_loss='ignore'``, ...), naming the key, the value
and what is accepted. :func:`parse_duration` reads ``train.time_budget`` / ``--time-budget``
(``90s``, ``20m``, ``1.5h``, plain seconds).
"""
from __future__ import annotations

import ast
import copy
import difflib
import json
import math
import runpy
from pathlib import Path, PurePath
from typing import Any, Iterable, Mapping

from detect.filesystem import atomic_write

__all__ = ["ConfigError", "DEFAULTS", "load_config", "merge_configs", "apply_overrides", "save_config", "to_plain",
           "config_from_checkpoint", "validate_config", "parse_duration"]


class ConfigError(ValueError):
    """A config file, a key or an override value is wrong; the message says how to fix it."""


#: Options of the engine (``train``, ``eval``) and of the data loaders, with their defaults.
DEFAULTS: dict[str, Any] = dict(
    model=dict(),
    data=dict(
        class_names=None,        # None: the dataset's own class list
        batch_size=2,            # images per process (the global batch is batch_size * world size)
        num_workers=2,
        aspect_ratio_grouping=True,
        transforms=dict(train="train", val="eval"),
        check_policy="raise",    # raise | drop | clip on dataset problems found at load time
    ),
    train=dict(
        epochs=12,
        max_iters=None,          # stop after this many optimizer steps (schedules still span `epochs`)
        seed=0,
        deterministic=False,     # torch.use_deterministic_algorithms, no cuDNN autotuning
        device="auto",           # auto | cpu | cuda | cuda:N (torchrun: cuda:LOCAL_RANK)
        optimizer=dict(
            name="sgd",          # sgd | adamw
            lr=0.02,             # for the global batch; not rescaled automatically
            weight_decay=1e-4,
            momentum=0.9,        # sgd
            nesterov=False,      # sgd
            betas=(0.9, 0.999),  # adamw
            eps=1e-8,            # adamw
            norm_weight_decay=None,  # decay on normalisation weights and biases; None: weight_decay
            bias_weight_decay=None,  # decay on other biases; None: weight_decay
        ),
        scheduler=dict(
            name="multistep",    # multistep | cosine | poly | constant; stepped every iteration
            milestones=(8, 11),  # multistep, in epochs
            gamma=0.1,           # multistep
            min_lr_ratio=0.0,    # cosine: final lr / base lr
            power=0.9,           # poly: (1 - it / total) ** power
            warmup_iters=500,    # linear warm-up length in iterations (capped at the run length)
            warmup_factor=0.001,  # lr multiplier at iteration 0
        ),
        clip_grad_norm=None,     # max global L2 norm of the gradients, None: no clipping
        amp=False,               # False | True (fp16 + GradScaler on CUDA, off on CPU) | "fp16" | "bf16"
        ema=dict(enabled=False, decay=0.9998, tau=2000),  # decay_t = decay * (1 - exp(-t / tau)); tau=None: constant
        nonfinite_loss="skip",   # skip | stop when a loss is NaN or inf
        max_nonfinite_skips=20,  # stop after this many skipped steps in a row
        sync_bn=False,           # convert BatchNorm to SyncBatchNorm under torch.distributed
        find_unused_parameters=False,
        dist_timeout_s=1800,     # process-group timeout
        checkpoint_interval_iters=0,  # also write last.pth every N iterations (0: end of epoch only)
        log_interval=20,         # iterations between metrics.jsonl records
        progress_bar=True,
        tensorboard=True,        # when the tensorboard package is installed
        plots=True,              # PNG plots of losses and metrics at the end
        time_budget=None,        # wall-clock budget ("20m", "1.5h", seconds): fewer epochs fitted to the speed
        early_stop_patience=None,  # stop after this many validations without improving eval.best_metric
        early_stop_min_delta=0.0,  # an improvement must exceed this
    ),
    eval=dict(
        metric="auto",           # auto (the model's default_metric) | coco | voc07_11pt | voc_area | miou
        interval=1,              # validate every N epochs; 0: never during training
        best_metric="auto",      # metrics key for best.pth ("bbox/AP50", "val/loss", ...); auto: the model's default_best_metric
        best_mode="auto",        # max | min | auto (min for losses)
        val_loss=True,           # also compute model.loss on the validation set
        batch_size=None,         # None: data.batch_size
    ),
    output_dir="runs/default",
)

# Sections whose keys are fixed by DEFAULTS; the others belong to their builders.
_CHECKED_SECTIONS = ("train", "eval")
_TOP_LEVEL = tuple(DEFAULTS)


def load_config(source: "str | Path | Mapping", overrides: Iterable[str] | None = None) -> dict:
    """Load a config file (or take a dict), merge its bases and defaults, apply overrides.

    Raises :class:`ConfigError` for a missing file, a file without ``config``, an unknown
    section or option, and a bad override.
    """
    if isinstance(source, Mapping):
        user = to_plain(dict(source), "")
        user = _resolve_bases(user, Path.cwd(), chain=())
    else:
        user = _load_file(Path(source), chain=())
    config = merge_configs(DEFAULTS, user)
    _check_keys(config)
    config = apply_overrides(config, overrides or ())
    validate_config(config)
    return config


def config_from_checkpoint(stored: Mapping, overrides: Iterable[str] | None = None, *, where: str = "checkpoint") -> dict:
    """The resolved config of a checkpoint's stored ``config`` dict, as plain data only.

    Unlike :func:`load_config` this never resolves ``_base_`` and never executes a file:
    the stored dict is already resolved. A ``_base_`` key anywhere in it raises
    :class:`ConfigError` (``where`` names the checkpoint). Defaults fill keys an older
    writer did not have; ``overrides`` apply as in :func:`load_config`.
    """
    if not isinstance(stored, Mapping):
        raise ConfigError(f"{where}: its stored config is {type(stored).__name__}, not a dict")
    config = to_plain(dict(stored), "")
    planted = [key for key in _dotted_keys(config) if key.rsplit(".", 1)[-1] == "_base_"]
    if planted:
        raise ConfigError(
            f"{where}: its stored config has {', '.join(planted)}; a checkpoint stores the resolved config, and "
            "loading one never runs the files such a key names. Pass the config file itself (tools/eval.py CONFIG "
            "--checkpoint CKPT) if you trust it"
        )
    config = merge_configs(DEFAULTS, config)
    _check_keys(config)
    config = apply_overrides(config, overrides or ())
    validate_config(config)
    return config


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any, key: str = "train.time_budget") -> float:
    """Seconds from ``90``, ``90.5``, ``"90s"``, ``"20m"``, ``"1.5h"``; ConfigError otherwise."""
    text = str(value).strip().lower()
    number, unit = (text[:-1], text[-1]) if text[-1:] in _DURATION_UNITS else (text, "s")
    try:
        seconds = float(number) * _DURATION_UNITS[unit]
    except ValueError:
        seconds = float("nan")
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(
            f"{key}={value!r}: expected a positive duration such as 90s, 20m, 1.5h or a number of seconds "
            "(--time-budget 20m, or --set train.time_budget=1200)"
        )
    return seconds


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# (dotted key, test, what is accepted): checked by validate_config before anything is built.
_VALUE_CHECKS = (
    ("data.batch_size", lambda v: _integer(v) and v >= 1, "an integer >= 1 (images per process)"),
    ("data.num_workers", lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    ("train.epochs", lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    ("train.max_iters", lambda v: v is None or (_integer(v) and v >= 0), "None or an integer >= 0"),
    ("train.optimizer.name", lambda v: str(v).lower() in ("sgd", "adamw"), "'sgd' or 'adamw'"),
    ("train.optimizer.lr", lambda v: _number(v) and v > 0, "a number > 0"),
    ("train.optimizer.weight_decay", lambda v: _number(v) and v >= 0, "a number >= 0"),
    ("train.scheduler.name", lambda v: v in ("multistep", "cosine", "poly", "constant"),
     "'multistep', 'cosine', 'poly' or 'constant'"),
    ("train.scheduler.warmup_iters", lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    ("train.clip_grad_norm", lambda v: v is None or (_number(v) and v > 0), "None or a number > 0"),
    ("train.nonfinite_loss", lambda v: v in ("skip", "stop"), "'skip' or 'stop'"),
    ("train.max_nonfinite_skips", lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    ("train.ema.decay", lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("train.checkpoint_interval_iters", lambda v: _integer(v) and v >= 0, "an integer >= 0 (0: end of epoch only)"),
    ("train.log_interval", lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    ("train.early_stop_patience", lambda v: v is None or (_integer(v) and v >= 1), "None (off) or an integer >= 1"),
    ("train.early_stop_min_delta", lambda v: _number(v) and v >= 0, "a number >= 0"),
    ("eval.interval", lambda v: _integer(v) and v >= 0, "an integer >= 0 (0: never during training)"),
    ("eval.best_mode", lambda v: v in ("max", "min", "auto"), "'max', 'min' or 'auto'"),
    ("eval.batch_size", lambda v: v is None or (_integer(v) and v >= 1), "None (data.batch_size) or an integer >= 1"),
)


def validate_config(config: Mapping) -> None:
    """Check the engine's and loaders' option values; ConfigError naming key, value and what is accepted.

    Keys a config does not have are left to their builders (a library user's own
    ``data`` section may not have them all).
    """
    for key, ok, accepted in _VALUE_CHECKS:
        node: Any = config
        for part in key.split("."):
            node = node.get(part, _MISSING) if isinstance(node, Mapping) else _MISSING
        if node is _MISSING:
            continue
        if not ok(node):
            raise ConfigError(f"{key}={node!r}: expected {accepted}; fix it in the config or with --set {key}=...")
    budget = config.get("train", {}).get("time_budget") if isinstance(config.get("train"), Mapping) else None
    if budget is not None:
        parse_duration(budget)


_MISSING = object()


def _load_file(path: Path, chain: tuple[Path, ...]) -> dict:
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"config {path}: _base_ chain loops: {' -> '.join(map(str, chain + (path,)))}")
    if not path.is_file():
        raise ConfigError(f"config {path}: no such file")
    namespace = runpy.run_path(str(path))
    if "config" not in namespace or not isinstance(namespace["config"], Mapping):
        raise ConfigError(f"config {path}: the file must define `config = dict(...)`")
    try:
        config = to_plain(dict(namespace["config"]), "")
    except ConfigError as err:
        raise ConfigError(f"config {path}: {err}") from None
    return _resolve_bases(config, path.parent, chain + (path,))


def _resolve_bases(config: dict, directory: Path, chain: tuple[Path, ...]) -> dict:
    bases = config.pop("_base_", None)
    if bases is None:
        return config
    if isinstance(bases, str):
        bases = [bases]
    merged: dict = {}
    for base in bases:
        merged = merge_configs(merged, _load_file(directory / base, chain))
    return merge_configs(merged, config)


def merge_configs(base: Mapping, update: Mapping) -> dict:
    """Deep-merge ``update`` into a copy of ``base`` (dicts merge, other values replace)."""
    result = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping):
            value = dict(value)
            replace = value.pop("_replace_", False)
            if not replace and isinstance(result.get(key), Mapping):
                result[key] = merge_configs(result[key], value)
                continue
        result[key] = copy.deepcopy(value)
    return result


def _check_keys(config: Mapping) -> None:
    for key in config:
        if key not in _TOP_LEVEL:
            raise ConfigError(f"unknown config section {key!r}{_suggest(key, _TOP_LEVEL)}; sections: {', '.join(_TOP_LEVEL)}")
    known = set(_dotted_keys({k: DEFAULTS[k] for k in _CHECKED_SECTIONS}))
    for key in _dotted_keys({k: config[k] for k in _CHECKED_SECTIONS}):
        if key not in known:
            raise ConfigError(f"unknown option {key!r}{_suggest(key, known)}; the options are listed in detect.config.DEFAULTS")


def _dotted_keys(tree: Mapping, prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, Mapping):
            keys.extend(_dotted_keys(value, dotted + "."))
    return keys


def _suggest(key: str, candidates: Iterable[str]) -> str:
    """Close matches: the same option name under another section first ("train.lr" ->
    "train.optimizer.lr"), then similar dotted keys, then similar option names."""
    candidates = [c for c in candidates if c != key]
    leaf = key.rsplit(".", 1)[-1]
    leaves = {c: c.rsplit(".", 1)[-1] for c in candidates}
    matches = [c for c, l in leaves.items() if l == leaf]
    matches += difflib.get_close_matches(key, candidates, n=5, cutoff=0.8)
    close_leaves = set(difflib.get_close_matches(leaf, set(leaves.values()), n=5, cutoff=0.75))
    matches += [c for c, l in leaves.items() if l in close_leaves]
    matches = list(dict.fromkeys(matches))[:5]
    return f"; did you mean {' or '.join(matches)}?" if matches else ""


def apply_overrides(config: Mapping, overrides: Iterable[str]) -> dict:
    """Apply ``"dotted.key=value"`` / ``"+dotted.key=value"`` strings (see the module docstring)."""
    config = copy.deepcopy(dict(config))
    for text in overrides:
        if not isinstance(text, str) or "=" not in text:
            raise ConfigError(f"override {text!r}: expected dotted.key=value, e.g. train.optimizer.lr=0.01")
        key, raw = text.split("=", 1)
        key, raw = key.strip(), raw.strip()
        add = key.startswith("+")
        key = key.lstrip("+")
        parts = key.split(".")
        if not key or any(not p for p in parts):
            raise ConfigError(f"override {text!r}: empty key component in {key!r}")
        node = config
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                if add and isinstance(node, dict) and part not in node:
                    node[part] = child = {}
                else:
                    where = ".".join(parts[: depth + 1])
                    if where in _dotted_keys(config):
                        raise ConfigError(f"override {text!r}: {where!r} holds {type(child).__name__}, not a section")
                    raise ConfigError(f"override {text!r}: unknown key {key!r}{_suggest(key, _dotted_keys(config))}")
            node = child
        leaf = parts[-1]
        if leaf not in node:
            if not add:
                raise ConfigError(
                    f"override {text!r}: unknown key {key!r}{_suggest(key, _dotted_keys(config))}; "
                    f"to add a new key write +{key}={raw}"
                )
            node[leaf] = _parse_value(raw, None, key, text)
            continue
        node[leaf] = _parse_value(raw, node[leaf], key, text)
    _check_keys(config)
    return config


def _parse_value(raw: str, current: Any, key: str, text: str) -> Any:
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if current is None or isinstance(current, str):
            if not raw:
                raise ConfigError(f"override {text!r}: empty value; write {key}='' for an empty string") from None
            return raw
        raise ConfigError(
            f"override {text!r}: {raw!r} is not a Python literal and {key} holds "
            f"{type(current).__name__} {current!r}; e.g. {key}={current!r}"
        ) from None
    if not _type_ok(value, current):
        raise ConfigError(
            f"override {text!r}: {key} expects {_type_name(current)} (currently {current!r}), "
            f"got {type(value).__name__} {value!r}"
        )
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return value


def _type_ok(value: Any, current: Any) -> bool:
    if current is None or value is None:
        return True
    if isinstance(current, bool):
        return isinstance(value, bool)
    if isinstance(current, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(current, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(current, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(current))


def _type_name(current: Any) -> str:
    if isinstance(current, bool):
        return "True or False"
    if isinstance(current, float):
        return "a number"
    if isinstance(current, (list, tuple)):
        return "a list or tuple"
    return f"a {type(current).__name__}"


def to_plain(value: Any, where: str = "") -> Any:
    """Check that ``value`` is plain data; paths become strings. Raises naming the key."""
    if isinstance(value, PurePath):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where or 'config'}: key {k!r} is not a string")
            out[k] = to_plain(v, f"{where}.{k}" if where else k)
        return out
    if isinstance(value, (list, tuple)):
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    raise ConfigError(
        f"{where or 'config'}: {type(value).__name__} is not plain data; configs hold numbers, strings, "
        "booleans, None, lists, tuples and dicts (name objects by string, e.g. backbone='resnet50')"
    )


def save_config(config: Mapping, path) -> Path:
    """Write the resolved config as JSON (tuples become lists), atomically: a crash never
    leaves a half-written ``config.json`` (:func:`detect.filesystem.atomic_write`)."""
    path = Path(path)
    text = json.dumps(config, indent=2) + "\n"  # serialise first: an unserialisable config writes nothing
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path
