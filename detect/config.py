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
overrides applied, paths turned into strings); :func:`save_config` writes it as JSON to
``<output_dir>/config.json``; checkpoints keep the same dict.
"""
from __future__ import annotations

import ast
import copy
import difflib
import json
import runpy
from pathlib import Path, PurePath
from typing import Any, Iterable, Mapping

from detect.filesystem import atomic_write

__all__ = ["ConfigError", "DEFAULTS", "load_config", "merge_configs", "apply_overrides", "save_config", "to_plain"]


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
            name="multistep",    # multistep | cosine | constant; stepped every iteration
            milestones=(8, 11),  # multistep, in epochs
            gamma=0.1,           # multistep
            min_lr_ratio=0.0,    # cosine: final lr / base lr
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
    ),
    eval=dict(
        metric="coco",           # coco | voc07_11pt | voc_area (detect.evaluation.build_evaluator)
        interval=1,              # validate every N epochs; 0: never during training
        best_metric="bbox/AP50",  # metrics key for best.pth; "val/loss" etc. also work
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
    return config


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
