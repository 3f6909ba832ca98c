"""From a config to a trained model or to metrics: what tools/train.py and tools/eval.py call.

::

    from detect.config import load_config
    from detect.engine.launch import train, evaluate

    summary = train(load_config("configs/faster_rcnn/shapes_demo.py", ["train.epochs=2"]))
    metrics = evaluate(checkpoint=summary["best_checkpoint"])

:func:`train` builds the datasets (``detect.data.build``), the detector
(``detect.build_detector(**config["model"])``), optimizer, schedule, EMA, hooks and the
:class:`~detect.engine.trainer.Trainer`, then runs it. In the output directory it writes
``config.json`` (the resolved config), ``last.pth``, ``best.pth``, ``metrics.jsonl``,
``log.txt``, ``plots/`` and, when tensorboard is installed, ``tensorboard/``.

- ``resume``: a checkpoint path, or ``"auto"`` for ``<output_dir>/last.pth`` (a fresh
  start when there is none): model, optimizer, scheduler, AMP scaler, EMA, epoch and
  iteration, the last validation metrics (and the iteration they belong to, so a finished
  run resumed as it is neither validates nor writes again), RNG states and the position
  in the epoch's batch order are restored.
- ``weights``: initialise the model only (fine-tuning); tensors whose shape differs
  (a predictor for another class count) stay freshly initialised and are reported.
  With ``resume="auto"`` the weights are used only when there is nothing to resume.

Under torchrun (``RANK``/``WORLD_SIZE`` set) the process group is started here (see
:mod:`detect.engine.distributed`) and torn down at the end.

Library users can pass their own ``model`` (a :class:`detect.modeling.base.Detector`),
``datasets`` (``{"train": ..., "val": ...}`` following docs/ABSTRACTIONS.md) and
``evaluator_factory`` (``(metric, dataset) -> evaluator``) instead of building them from
the config.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from detect.config import ConfigError, load_config, save_config
from detect.engine import distributed as dist_utils
from detect.engine.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    CheckpointError,
    find_last_checkpoint,
    inference_state_dict,
    load_checkpoint,
    state_dict_from_file,
)
from detect.engine.device import autocast, resolve_amp, resolve_device
from detect.engine.ema import ModelEMA
from detect.engine.evaluation import evaluate_model
from detect.engine.hooks import CheckpointHook, EMAHook, EvalHook, LoggingHook, LRSchedulerHook, PlotHook, headline
from detect.engine.loggers import close_logger, get_logger
from detect.engine.optim import build_optimizer, build_scheduler
from detect.engine.rng import seed_everything, set_deterministic
from detect.engine.trainer import Trainer
from detect.filesystem import ensure_writable_directory


# Thin seams onto the other packages, imported when called so that importing the engine
# stays light (and so that tests can stand in for parts that are not there).
def build_dataset(data_cfg: Mapping, split: str):
    from detect.data.build import build_dataset as _build

    return _build(dict(data_cfg), split)


def build_dataloader(dataset, **kwargs):
    from detect.data.build import build_dataloader as _build

    return _build(dataset, **kwargs)


def build_evaluator(metric: str, dataset, results_path=None):
    from detect.evaluation import build_evaluator as _build

    return _build(metric, dataset, results_path=results_path)


def build_model(model_cfg: Mapping):
    from detect.modeling.registry import build_detector

    cfg = dict(model_cfg)
    if "name" not in cfg:
        raise ConfigError("config.model needs a 'name' (see detect.list_detectors())")
    return build_detector(cfg.pop("name"), **cfg)


def _has_split(data_cfg: Mapping, split: str) -> bool:
    return isinstance(data_cfg.get(split), Mapping)


def _class_names(train_set, val_set) -> list[str]:
    """The training set's class names (datasets own them); the validation set must agree."""
    names = getattr(train_set, "class_names", None)
    if not names:
        raise ConfigError("the training set has no class_names (label k is class_names[k - 1]); set data.class_names")
    val_names = getattr(val_set, "class_names", None) if val_set is not None else None
    if val_names is not None and list(val_names) != list(names):
        raise ConfigError(
            f"the training set's classes {list(names)} differ from the validation set's {list(val_names)}; "
            "set data.class_names so that both splits use the same list"
        )
    return list(names)


def _check_class_names(config: dict, class_names: Sequence[str]) -> None:
    """Fill ``model.num_classes`` from the dataset, or check that they agree."""
    model_cfg = config["model"]
    if model_cfg.get("num_classes") is None:
        model_cfg["num_classes"] = len(class_names)
    elif int(model_cfg["num_classes"]) != len(class_names):
        raise ConfigError(
            f"model.num_classes={model_cfg['num_classes']} but the training set has {len(class_names)} "
            f"classes {list(class_names)}; num_classes counts foreground classes only (no background): "
            f"set model.num_classes={len(class_names)} or data.class_names"
        )


def train(config: "Mapping | str | Path", *, resume: str | Path | None = None, weights: str | Path | None = None,
          device: str | None = None, output_dir: str | Path | None = None, model=None,
          datasets: Mapping[str, Any] | None = None,
          evaluator_factory: Callable[[str, Any], Any] | None = None) -> dict:
    """Train as ``config`` says; returns ``{"output_dir", "last_checkpoint", "best_checkpoint",
    "metrics", "best", "epoch", "iteration"}`` (checkpoint paths are None where not written)."""
    config = load_config(config)
    if output_dir is not None:
        config["output_dir"] = str(output_dir)
    if device is not None:
        config["train"]["device"] = str(device)
    tcfg, ecfg, dcfg = config["train"], config["eval"], config["data"]
    if resume is not None and weights is not None and str(resume) != "auto":
        raise ConfigError("--resume continues a run and --weights starts a new one from a model: give one of them")
    out = Path(config["output_dir"])

    torch_device = resolve_device(tcfg["device"])
    had_group = dist_utils.is_distributed()
    started_group = dist_utils.init_distributed(torch_device, tcfg["dist_timeout_s"]) and not had_group
    distributed = dist_utils.is_distributed()
    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    dist_utils.on_main_process(lambda: _prepare_output_dir(out), f"to prepare the output directory {out}")
    logger = get_logger(out)
    trainer = None
    try:
        set_deterministic(bool(tcfg["deterministic"]))
        seed = int(tcfg["seed"])
        seed_everything(seed)

        # data
        if datasets is None:
            datasets = {"train": build_dataset(dcfg, "train")}
            if _has_split(dcfg, "val"):
                datasets["val"] = build_dataset(dcfg, "val")
        train_set, val_set = datasets["train"], datasets.get("val")
        class_names = _class_names(train_set, val_set)
        _check_class_names(config, class_names)

        resume_path = _resolve_resume(resume, out, logger)

        # model
        if model is None:
            model = build_model(config["model"])
        if getattr(model, "num_classes", len(class_names)) != len(class_names):
            raise ConfigError(f"the model predicts {model.num_classes} classes, the training set has {len(class_names)}")
        if weights is not None and resume_path is None:
            _load_finetune_weights(model, weights, logger)
        model.to(torch_device)
        if distributed and tcfg["sync_bn"]:
            if torch_device.type != "cuda":
                raise ConfigError("train.sync_bn=True needs CUDA devices (SyncBatchNorm has no CPU kernel); "
                                  "set train.sync_bn=False for CPU training")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ema = None
        if tcfg["ema"]["enabled"]:
            ema = ModelEMA(model, decay=tcfg["ema"]["decay"], tau=tcfg["ema"]["tau"])
        optimizer = build_optimizer(model, tcfg["optimizer"])
        ddp_model = dist_utils.wrap_model(model, torch_device, find_unused_parameters=tcfg["find_unused_parameters"])
        seed_everything(seed + rank)  # per-rank streams for the model's own sampling

        train_loader = build_dataloader(
            train_set, batch_size=int(dcfg["batch_size"]), train=True, num_workers=int(dcfg["num_workers"]),
            seed=seed, distributed=distributed, aspect_ratio_grouping=bool(dcfg["aspect_ratio_grouping"]),
        )
        iters_per_epoch = len(train_loader)
        scheduler = build_scheduler(optimizer, tcfg["scheduler"], iters_per_epoch, int(tcfg["epochs"]))
        amp = resolve_amp(tcfg["amp"], torch_device)

        val_loader = None
        evaluator = None
        if val_set is not None and (int(ecfg["interval"]) > 0):
            val_loader = build_dataloader(
                val_set, batch_size=int(ecfg["batch_size"] or dcfg["batch_size"]), train=False,
                num_workers=int(dcfg["num_workers"]), seed=seed, distributed=distributed,
                aspect_ratio_grouping=False,
            )
            if ecfg["metric"]:
                evaluator = (evaluator_factory or build_evaluator)(ecfg["metric"], val_set)

        def run_validation() -> dict:
            evaluated = ema.module if ema is not None else model
            return evaluate_model(evaluated, val_loader, evaluator=evaluator, compute_loss=bool(ecfg["val_loss"]),
                                  device=torch_device, autocast=trainer.autocast)

        hooks = [LRSchedulerHook(scheduler)]
        if ema is not None:
            hooks.append(EMAHook(ema))
        if val_loader is not None:
            hooks.append(EvalHook(int(ecfg["interval"]), run_validation))
        best_metric = ecfg["best_metric"] if val_loader is not None else None
        checkpoint_hook = CheckpointHook(out, tcfg["checkpoint_interval_iters"], best_metric, ecfg["best_mode"])
        hooks += [
            checkpoint_hook,
            LoggingHook(out, tcfg["log_interval"], tcfg["progress_bar"], tcfg["tensorboard"]),
        ]
        if tcfg["plots"]:
            hooks.append(PlotHook(out))
        trainer = Trainer(
            ddp_model, optimizer, train_loader, epochs=int(tcfg["epochs"]), device=torch_device, scheduler=scheduler,
            amp=amp, clip_grad_norm=tcfg["clip_grad_norm"], nonfinite_loss=tcfg["nonfinite_loss"],
            max_nonfinite_skips=tcfg["max_nonfinite_skips"], max_iters=tcfg["max_iters"], seed=seed, ema=ema,
            config=config, class_names=class_names, hooks=hooks,
        )
        if resume_path is not None:
            restored = trainer.load_state(load_checkpoint(resume_path))
            logger.info(f"resumed from {resume_path}: " + "; ".join(restored))
            if resume_path.resolve() == checkpoint_hook.last_path.resolve():
                checkpoint_hook.saved_iteration = trainer.iteration  # last.pth already holds this state
        dist_utils.on_main_process(lambda: save_config(config, out / "config.json"), f"to write {out / 'config.json'}")
        logger.info(
            f"training {config['model'].get('name')} on {len(train_set)} images ({len(class_names)} classes), "
            f"{iters_per_epoch} iterations/epoch x {tcfg['epochs']} epochs, {world} process(es) on {torch_device}, "
            f"output in {out}"
        )
        trainer.train()
        best = trainer.best
        logger.info(
            f"done: {trainer.iteration} iterations, {trainer.epoch} epochs"
            + (f"; best {best['metric']}={best['value']:.4f} at iteration {best['iteration']} ({out / BEST_NAME})"
               if best else "")
            + f"; last checkpoint {out / LAST_NAME}; metrics {out / 'metrics.jsonl'}"
        )
        return {
            "output_dir": str(out),
            "last_checkpoint": str(out / LAST_NAME) if (out / LAST_NAME).is_file() else None,
            "best_checkpoint": str(out / BEST_NAME) if (out / BEST_NAME).is_file() else None,
            "metrics": dict(trainer.metrics),
            "best": trainer.best,
            "epoch": trainer.epoch,
            "iteration": trainer.iteration,
        }
    finally:
        for hook in getattr(trainer, "hooks", ()):
            if hasattr(hook, "close"):
                hook.close()
        close_logger()
        if started_group:
            dist_utils.destroy_distributed()


def _prepare_output_dir(out: Path) -> None:
    try:
        ensure_writable_directory(out)
    except OSError as err:
        raise ConfigError(
            f"output directory {out} cannot be written ({type(err).__name__}: {err.strerror or err}); "
            "choose another with --output-dir or --set output_dir=..."
        ) from err


def _load_finetune_weights(model, weights, logger) -> None:
    """``--weights``: the detector's loader fits the weights (converting torchvision's and
    re-initialising the class-specific predictor for a new class count); say what it did."""
    from detect.modeling.weights import load_detector_weights

    report = load_detector_weights(model, state_dict_from_file(weights), where=str(weights))
    reinitialised = report.get("reinitialized") or []
    logger.info(
        f"initialised the model from {weights} ({report.get('format')} weights): "
        + (f"re-initialised {', '.join(reinitialised)} for {model.num_classes} classes, loaded every other layer"
           if reinitialised else "loaded every layer")
    )


def _resolve_resume(resume, output_dir: Path, logger) -> Path | None:
    if resume is None:
        return None
    if str(resume) == "auto":
        found = find_last_checkpoint(output_dir)
        if found is None:
            logger.info(f"--resume auto: no {LAST_NAME} in {output_dir}, starting from scratch")
        return found
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file (--resume takes a checkpoint path or 'auto')")
    return path


def evaluate(config: "Mapping | str | Path | None" = None, *, checkpoint: str | Path | None = None,
             overrides: Sequence[str] = (), save_results: str | Path | None = None, device: str | None = None,
             split: str = "val", model=None, dataset=None,
             evaluator_factory: Callable[..., Any] | None = None) -> dict[str, float]:
    """Evaluate a checkpoint (its own config, or ``config`` when given) or a config's model.

    Returns the metrics (validation loss included when ``eval.val_loss``); with
    ``save_results`` the detections are also written as COCO-format results JSON.
    The weights evaluated are the EMA ones when the run kept an EMA.
    """
    payload = None
    if checkpoint is not None:
        payload = load_checkpoint(checkpoint)
    if config is not None:
        cfg = load_config(config, overrides)
    elif payload is not None:
        if not isinstance(payload.get("config"), Mapping):
            raise CheckpointError(f"checkpoint {checkpoint}: holds no config; pass the config file as well")
        cfg = load_config(payload["config"], overrides)
    else:
        raise ConfigError("evaluate needs a config, a checkpoint or both")
    if device is not None:
        cfg["train"]["device"] = str(device)
    ecfg, dcfg = cfg["eval"], cfg["data"]
    torch_device = resolve_device(cfg["train"]["device"])
    had_group = dist_utils.is_distributed()
    started_group = dist_utils.init_distributed(torch_device, cfg["train"]["dist_timeout_s"]) and not had_group
    logger = get_logger()
    try:
        if dataset is None:
            dataset = build_dataset(dcfg, split)
        if payload is not None and payload.get("class_names") and getattr(dataset, "class_names", None) is not None:
            if list(payload["class_names"]) != list(dataset.class_names):
                raise ConfigError(
                    f"checkpoint {checkpoint} was trained on classes {list(payload['class_names'])} but the "
                    f"{split} set has {list(dataset.class_names)}; evaluate on data with the same classes "
                    "(data.class_names) or the metrics would compare unrelated labels"
                )
        if model is None:
            model = build_model(cfg["model"])
        if payload is not None:
            model.load_state_dict(inference_state_dict(payload))
        model.to(torch_device)
        loader = build_dataloader(
            dataset, batch_size=int(ecfg["batch_size"] or dcfg["batch_size"]), train=False,
            num_workers=int(dcfg["num_workers"]), seed=int(cfg["train"]["seed"]),
            distributed=dist_utils.is_distributed(), aspect_ratio_grouping=False,
        )
        evaluator = (evaluator_factory or build_evaluator)(ecfg["metric"], dataset, results_path=save_results)
        amp = cfg["train"]["amp"]
        if amp == "fp16" and torch_device.type != "cuda":
            # the run trained on a GPU; evaluating it elsewhere is fine, in float32
            logger.info(f"train.amp='fp16' needs CUDA: evaluating on {torch_device} in float32")
            amp = None
        amp = resolve_amp(amp, torch_device)
        metrics = evaluate_model(model, loader, evaluator=evaluator, compute_loss=bool(ecfg["val_loss"]),
                                 device=torch_device, autocast=functools.partial(autocast, amp, torch_device),
                                 progress=dist_utils.is_main_process())
        # the evaluator prints its own per-class table (and where it saved the detections)
        logger.info(f"{split}: {headline(metrics)}")
        return metrics
    finally:
        if started_group:
            dist_utils.destroy_distributed()


# ------------------------------------------------------------------ command line
def train_from_args(args) -> dict:
    """``tools/train.py``: ``args.config``, ``args.set``, ``args.output_dir``, ``args.resume``,
    ``args.weights``, ``args.device``."""
    config = load_config(args.config, args.set or ())
    return train(config, resume=args.resume, weights=args.weights, device=args.device, output_dir=args.output_dir)


def evaluate_from_args(args) -> dict:
    """``tools/eval.py``: ``args.config`` (optional with ``args.checkpoint``), ``args.checkpoint``,
    ``args.set``, ``args.save_results``, ``args.device``, ``args.split``."""
    return evaluate(args.config, checkpoint=args.checkpoint, overrides=args.set or (),
                    save_results=args.save_results, device=args.device, split=args.split)
