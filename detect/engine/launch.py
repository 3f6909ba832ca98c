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
  The checkpoint must be a resumable one (``last.pth``, not the deployable ``best.pth``)
  of a model for the same class names in the same order; otherwise a
  :class:`~detect.engine.checkpoint.CheckpointError` says what differs.
- ``weights``: initialise the model only (fine-tuning); tensors whose shape differs
  (a predictor for another class count) stay freshly initialised and are reported.
  With ``resume="auto"`` the weights are used only when there is nothing to resume.
- An output directory that already holds a run (``last.pth`` / ``best.pth``) is refused
  unless the run is resumed, so that nothing is overwritten by accident. Temporary files
  that a killed checkpoint write left there are removed (and listed in the log).
- ``train.time_budget`` fits the number of epochs to the measured speed and stops at the
  budget (:class:`~detect.engine.hooks.TimeBudgetHook`); ``train.early_stop_patience``
  stops when ``eval.best_metric`` stops improving (:class:`~detect.engine.hooks.EarlyStopHook`).
- Ctrl+C writes ``last.pth`` at the exact position and raises
  :class:`~detect.engine.trainer.TrainingInterrupted` ("interrupted at iteration N; resume
  with --resume auto"); :func:`train_from_args` turns it into exit status 130.

Under torchrun (``RANK``/``WORLD_SIZE`` set) the process group is started here (see
:mod:`detect.distributed`) and torn down at the end.

Library users can pass their own ``model`` (a :class:`detect.modeling.base.Detector`),
``datasets`` (``{"train": ..., "val": ...}`` following docs/ABSTRACTIONS.md) and
``evaluator_factory`` (``(metric, dataset) -> evaluator``) instead of building them from
the config.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from detect.config import ConfigError, config_from_checkpoint, load_config, parse_duration, save_config
from detect import distributed as dist_utils
from detect.engine.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    CheckpointError,
    check_resumable,
    find_last_checkpoint,
    inference_state_dict,
    load_checkpoint,
    state_dict_from_file,
)
from detect.engine.device import autocast, resolve_amp, resolve_device
from detect.modeling.base import Detector
from detect.engine.ema import ModelEMA
from detect.engine.evaluation import evaluate_model
from detect.engine.hooks import (
    CheckpointHook,
    EarlyStopHook,
    EMAHook,
    EvalHook,
    LoggingHook,
    LRSchedulerHook,
    PlotHook,
    TimeBudgetHook,
    headline,
)
from detect.engine.loggers import close_logger, get_logger
from detect.engine.optim import build_optimizer, build_scheduler
from detect.engine.rng import seed_everything, set_deterministic
from detect.engine.trainer import Trainer, TrainingInterrupted
from detect.filesystem import ensure_writable_directory, remove_stale_temporary_files


# Thin seams onto the other packages, imported when called so that importing the engine
# stays light (and so that tests can stand in for parts that are not there).
def build_dataset(data_cfg: Mapping, split: str):
    from detect.data.build import build_dataset as _build

    return _build(dict(data_cfg), split)


def prepare_data(data_cfg: Mapping) -> None:
    from detect.data.build import prepare_data as _prepare

    _prepare(dict(data_cfg))


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


def resolve_eval_choice(value, model, attribute: str):
    """``eval.metric`` / ``eval.best_metric`` as configured, or for ``"auto"`` the model's own
    choice (``default_metric`` / ``default_best_metric`` of the five-family contract).

    A configured choice of the other task (``miou`` or ``sem_seg/...`` for a detector, a box
    metric for a segmenter) is a :class:`ConfigError`: its evaluator could not read the outputs."""
    if value != "auto":
        _check_metric_task(value, model, attribute)
        return value
    return getattr(model, attribute, None) or getattr(Detector, attribute)


def _check_metric_task(value, model, attribute: str) -> None:
    if not value or not isinstance(value, str):
        return
    segmenter = getattr(model, "task", "detection") == "semantic_segmentation"
    if attribute == "default_metric":
        from detect.evaluation import EVALUATORS, SemSegEvaluator

        if value not in EVALUATORS:  # a library user's own evaluator_factory may know it
            return
        wrong = (EVALUATORS[value] is not SemSegEvaluator) == segmenter
        key = "eval.metric"
    else:
        wrong = value.startswith("bbox/") if segmenter else value.startswith("sem_seg/")
        key = "eval.best_metric"
    if wrong:
        task = "a semantic segmentation model" if segmenter else "a detector"
        raise ConfigError(
            f"{key}={value!r} does not fit {type(model).__name__}, {task}; set {key}=auto (its own: "
            f"{getattr(model, attribute, None) or getattr(Detector, attribute)!r})"
        )


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
    if model is None:
        from detect.engine.stages import stages_of, train_stages

        if stages_of(config["model"]):  # a multi-stage family (R-CNN): its stages in order
            return train_stages(config, resume=resume, weights=weights, device=device, output_dir=output_dir,
                                datasets=datasets, evaluator_factory=evaluator_factory)
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
            dist_utils.on_main_process(lambda: prepare_data(dcfg), "to prepare the data (generate the shapes set)")
            datasets = {"train": build_dataset(dcfg, "train")}
            if _has_split(dcfg, "val"):
                datasets["val"] = build_dataset(dcfg, "val")
        train_set, val_set = datasets["train"], datasets.get("val")
        class_names = _class_names(train_set, val_set)
        _check_class_names(config, class_names)

        resume_path = _resolve_resume(resume, out, logger)
        resume_payload = None
        if resume_path is None:
            _refuse_existing_run(out)
        else:
            resume_payload = load_checkpoint(resume_path)
            check_resumable(resume_path, resume_payload)
            _check_resume_classes(resume_path, resume_payload, class_names)
        removed = []
        dist_utils.on_main_process(lambda: removed.extend(remove_stale_temporary_files(out)),
                                   f"to clean up {out}")
        if removed:
            logger.info(f"removed {len(removed)} temporary file(s) left in {out} by an interrupted write: "
                        + ", ".join(p.name for p in removed))

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
            metric = resolve_eval_choice(ecfg["metric"], model, "default_metric")
            if metric:
                evaluator = (evaluator_factory or build_evaluator)(metric, val_set)

        def run_validation() -> dict:
            evaluated = ema.module if ema is not None else model
            return evaluate_model(evaluated, val_loader, evaluator=evaluator, compute_loss=bool(ecfg["val_loss"]),
                                  device=torch_device, autocast=trainer.autocast)

        hooks = [LRSchedulerHook(scheduler)]
        if ema is not None:
            hooks.append(EMAHook(ema))
        if val_loader is not None:
            hooks.append(EvalHook(int(ecfg["interval"]), run_validation))
        best_metric = resolve_eval_choice(ecfg["best_metric"], model, "default_best_metric") if val_loader is not None else None
        if tcfg["early_stop_patience"] is not None:
            if not best_metric:
                raise ConfigError(
                    f"train.early_stop_patience={tcfg['early_stop_patience']} needs validation: a data.val split, "
                    "eval.interval > 0 and eval.best_metric; or set train.early_stop_patience=None"
                )
            hooks.append(EarlyStopHook(best_metric, tcfg["early_stop_patience"], tcfg["early_stop_min_delta"],
                                       ecfg["best_mode"]))
        checkpoint_hook = CheckpointHook(out, tcfg["checkpoint_interval_iters"], best_metric, ecfg["best_mode"])
        hooks += [
            checkpoint_hook,
            LoggingHook(out, tcfg["log_interval"], tcfg["progress_bar"], tcfg["tensorboard"]),
        ]
        if tcfg["plots"]:
            hooks.append(PlotHook(out))
        if tcfg["time_budget"] is not None:  # last: its epoch-end timing includes the other hooks' work
            hooks.append(TimeBudgetHook(parse_duration(tcfg["time_budget"]),
                                        lambda epochs: scheduler.fit_to(epochs * iters_per_epoch)))
        trainer = Trainer(
            ddp_model, optimizer, train_loader, epochs=int(tcfg["epochs"]), device=torch_device, scheduler=scheduler,
            amp=amp, clip_grad_norm=tcfg["clip_grad_norm"], nonfinite_loss=tcfg["nonfinite_loss"],
            max_nonfinite_skips=tcfg["max_nonfinite_skips"], max_iters=tcfg["max_iters"], seed=seed, ema=ema,
            config=config, class_names=class_names, hooks=hooks,
        )
        if resume_path is not None:
            restored = trainer.load_state(resume_payload)
            logger.info(f"resumed from {resume_path}: " + "; ".join(restored))
            _continue_fitted_plan(trainer, scheduler, resume_payload, tcfg, iters_per_epoch, logger)
            if resume_path.resolve() == checkpoint_hook.last_path.resolve():
                checkpoint_hook.saved_iteration = trainer.iteration  # last.pth already holds this state
        dist_utils.on_main_process(lambda: save_config(config, out / "config.json"), f"to write {out / 'config.json'}")
        logger.info(
            f"training {config['model'].get('name')} on {len(train_set)} images ({len(class_names)} classes), "
            f"{iters_per_epoch} iterations/epoch x {trainer.epochs} epochs, {world} process(es) on {torch_device}, "
            f"output in {out}"
        )
        try:
            trainer.train()
        except TrainingInterrupted as interrupted:
            logger.warning(str(interrupted))
            raise
        _write_validation_report(evaluator, out / "plots", trainer.metrics, enabled=bool(tcfg["plots"]))
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
    re-initialising the class-specific predictor for a new class count); say what it did.

    The loader itself logs each re-initialised layer (through the ``detect`` logger), so
    this line only names the source: the re-initialisation is reported once."""
    from detect.modeling.weights import load_detector_weights

    report = load_detector_weights(model, state_dict_from_file(weights), where=str(weights))
    reinitialised = report.get("reinitialized") or []
    logger.info(
        f"initialised the model from {weights} ({report.get('format')} weights): "
        + (f"every layer but {', '.join(reinitialised)} (re-initialised, see above)" if reinitialised
           else "loaded every layer")
    )


def _refuse_existing_run(out: Path) -> None:
    """A fresh start must not overwrite another run's checkpoints."""
    held = [name for name in (LAST_NAME, BEST_NAME) if (out / name).is_file()]
    if not held:
        return
    try:
        iteration = f"iteration {int(load_checkpoint(out / held[0]).get('iteration', 0))}"
    except CheckpointError:
        iteration = "unreadable"
    if held[0] == BEST_NAME:  # no last.pth: nothing --resume auto could continue
        raise CheckpointError(
            f"{out} already holds a run ({BEST_NAME}, {iteration}); choose another --output-dir, or move "
            f"{out / BEST_NAME} away to start over there"
        )
    raise CheckpointError(
        f"{out} already holds a run ({held[0]}, {iteration}); continue it with --resume auto, "
        "or choose another --output-dir"
    )


def _check_resume_classes(path: Path, payload: Mapping, class_names: Sequence[str]) -> None:
    """Label k must keep its meaning across a resume: the same names in the same order."""
    stored = list(payload.get("class_names") or [])
    if not stored or stored == list(class_names):
        return
    if sorted(stored) == sorted(class_names):
        what = "the same classes in another order, so label k would change meaning"
    elif len(stored) != len(class_names):
        what = f"{len(stored)} classes in the checkpoint, {len(class_names)} in this run's data"
    else:
        what = "other class names"
    raise CheckpointError(
        f"cannot resume from {path}: it was trained on {stored} but this run's data has {list(class_names)} "
        f"({what}); resume with the data (and data.class_names) of that run, or fine-tune from it on the new "
        f"classes with --weights {path} instead of --resume"
    )


def _continue_fitted_plan(trainer, scheduler, payload, tcfg, iters_per_epoch: int, logger) -> None:
    """A resumed run keeps the number of epochs its time budget fitted (and the LR schedule
    stretched over them) unless ``train.epochs`` was changed for the resume: then the new
    count and a schedule over it apply, as for any run."""
    planned = payload.get("epochs")
    stored = ((payload.get("config") or {}).get("train") or {}).get("epochs")
    if planned is None or int(planned) == trainer.epochs or stored != tcfg["epochs"]:
        return
    trainer.epochs = int(planned)
    if scheduler is not None:
        scheduler.fit_to(trainer.epochs * iters_per_epoch)
    logger.info(f"continuing the checkpoint's plan of {trainer.epochs} epochs (fitted by its time budget; the config "
                f"says {tcfg['epochs']}), the LR schedule over {trainer.epochs * iters_per_epoch} iterations; "
                "--set train.epochs=N to change it")


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
             evaluator_factory: Callable[..., Any] | None = None,
             output_dir: str | Path | None = None) -> dict[str, float]:
    """Evaluate a checkpoint (its own config, or ``config`` when given) or a config's model.

    Returns the metrics under the evaluator's keys (``bbox/AP50``, and ``val/loss``,
    ``val/<term>`` when ``eval.val_loss``); the log line labels them by ``split``
    (``test/bbox/AP50``, ``test/loss``: :func:`detect.evaluation.label_metrics`).
    With ``save_results`` the detections are also written as COCO-format results JSON;
    with ``output_dir`` (``"auto"``: ``eval_<split>`` beside the checkpoint, else under the
    config's ``output_dir``) ``<split>_metrics.json`` (labelled metrics, confusion matrix,
    PR curves) and, for box evaluators, ``<split>_confusion_matrix.png`` and
    ``<split>_pr_curves.png`` (:func:`detect.evaluation.plots.write_evaluation_report`).
    Both paths are checked for writing before anything is loaded, so a bad path fails in
    a second with a :class:`ConfigError` naming it, not after the whole split.
    The weights evaluated are the EMA ones when the run kept an EMA.
    """
    if save_results is not None:
        _check_writable_output(Path(save_results), "--save-results", is_file=True)
    if output_dir is not None and str(output_dir) != "auto":
        _check_writable_output(Path(output_dir), "--output-dir", is_file=False)
    payload = None
    if checkpoint is not None:
        payload = load_checkpoint(checkpoint)
    if config is not None:
        cfg = load_config(config, overrides)
    elif payload is not None:
        if not isinstance(payload.get("config"), Mapping):
            raise CheckpointError(f"checkpoint {checkpoint}: holds no config; pass the config file as well")
        # The stored config is resolved plain data: rebuilt without resolving _base_ files or
        # running any code (a checkpoint is data, never a program).
        cfg = config_from_checkpoint(payload["config"], overrides, where=f"checkpoint {checkpoint}")
    else:
        raise ConfigError("evaluate needs a config, a checkpoint or both")
    if device is not None:
        cfg["train"]["device"] = str(device)
    if output_dir is not None and str(output_dir) == "auto":
        output_dir = (Path(checkpoint).parent if checkpoint is not None else Path(cfg["output_dir"])) / f"eval_{split}"
        _check_writable_output(output_dir, "--output-dir", is_file=False)
    ecfg, dcfg = cfg["eval"], cfg["data"]
    if dataset is None and not _has_split(dcfg, split):
        splits = [k for k, v in dcfg.items() if isinstance(v, Mapping) and k not in ("transforms", "shapes")]
        raise ConfigError(f"--split {split!r}: the config's data has no such split (it has {splits}); "
                          f"choose one of them or add data.{split}=dict(...)")
    torch_device = resolve_device(cfg["train"]["device"])
    had_group = dist_utils.is_distributed()
    started_group = dist_utils.init_distributed(torch_device, cfg["train"]["dist_timeout_s"]) and not had_group
    logger = get_logger()
    try:
        if dataset is None:
            dist_utils.on_main_process(lambda: prepare_data(dcfg), "to prepare the data (generate the shapes set)")
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
        evaluator = (evaluator_factory or build_evaluator)(
            resolve_eval_choice(ecfg["metric"], model, "default_metric"), dataset, results_path=save_results)
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
        from detect.evaluation import label_metrics
        from detect.evaluation.plots import write_evaluation_report

        logger.info(f"{split}: {headline(label_metrics(metrics, split))}")
        if output_dir is not None and dist_utils.is_main_process():
            write_evaluation_report(evaluator, output_dir, split=split, metrics=metrics)
        return metrics
    finally:
        if started_group:
            dist_utils.destroy_distributed()


def _write_validation_report(evaluator, plots_dir: Path, metrics: Mapping, enabled: bool = True) -> None:
    """End of training: the last validation's confusion matrix, PR curves and labelled
    metrics in ``plots/val_*`` (rank 0; nothing without an evaluator or with ``train.plots`` off)."""
    if not enabled or evaluator is None or not dist_utils.is_main_process():
        return
    from detect.evaluation.plots import write_evaluation_report

    metrics = {k: v for k, v in dict(metrics or {}).items() if isinstance(v, (int, float))}
    write_evaluation_report(evaluator, plots_dir, split="val", metrics=metrics)


def _check_writable_output(path: Path, option: str, is_file: bool) -> None:
    """Fail now, naming ``path``, when an output of :func:`evaluate` could not be written later."""
    directory = path.parent if is_file else path
    try:
        if is_file and path.is_dir():
            raise IsADirectoryError(21, "is a directory, give a file name", str(path))
        ensure_writable_directory(directory)
    except OSError as err:
        raise ConfigError(
            f"{option} {path} cannot be written ({type(err).__name__}: {err.strerror or err}); "
            f"choose a writable path for {option}"
        ) from err


# ------------------------------------------------------------------ command line
def config_with_data(config: Mapping, data_path) -> dict:
    """``config`` reading the dataset at ``data_path`` (``--data``): its layout detected, the
    recipe's format-specific data keys replaced, ``model.num_classes`` set from the derived
    class names and, without a validation split, a seeded one taken from train (never from
    test; the image lists are part of the resolved config saved in the run directory). The
    notes saying what was detected and changed are printed."""
    from detect.data.sources import apply_data_path

    notes: list[str] = []
    seed = int((config.get("train") or {}).get("seed", 0))
    config = apply_data_path(dict(config), data_path, seed=seed, notes=notes)
    for note in notes:
        print(f"data: {note}")
    return config


def train_from_args(args) -> dict | None:
    """``tools/train.py``: ``args.config``, ``args.set``, ``args.output_dir``, ``args.resume``,
    ``args.weights``, ``args.device``, ``args.time_budget`` (``"20m"``: ``train.time_budget``)
    and ``args.print_config`` (print the resolved config as JSON and return None, training
    nothing). Ctrl+C (after the checkpoint and the log line) exits with status 130."""
    overrides = list(args.set or ())
    if getattr(args, "data", None):
        # --data replaces the recipe's data section first; --set then applies on top of it.
        config = load_config(config_with_data(load_config(args.config), args.data), overrides)
    else:
        config = load_config(args.config, overrides)
    if getattr(args, "time_budget", None) is not None:
        config["train"]["time_budget"] = parse_duration(args.time_budget, "--time-budget")
    if args.output_dir is not None:
        config["output_dir"] = str(args.output_dir)
    if args.device is not None:
        config["train"]["device"] = str(args.device)
    if getattr(args, "print_config", False):
        print(json.dumps(config, indent=2))
        return None
    try:
        return train(config, resume=args.resume, weights=args.weights)
    except TrainingInterrupted:
        raise SystemExit(130) from None  # the line saying where to resume is already logged


def evaluate_from_args(args) -> dict:
    """``tools/eval.py``: ``args.config`` (optional with ``args.checkpoint``), ``args.checkpoint``,
    ``args.set``, ``args.save_results``, ``args.device``, ``args.split`` and ``args.output_dir``
    (``None`` or ``"auto"``, see :func:`evaluate`; missing: ``"auto"``)."""
    config = args.config
    if getattr(args, "data", None):
        payload = load_checkpoint(args.checkpoint) if args.checkpoint is not None else {}
        if config is not None:
            base = load_config(config)
        else:
            base = config_from_checkpoint(payload.get("config") or {}, where=f"checkpoint {args.checkpoint}")
        config = config_with_data(base, args.data)
        trained_on = list(payload.get("class_names") or [])
        derived = config["data"]["class_names"]
        if trained_on and trained_on != derived and sorted(trained_on) == sorted(derived):
            # The folder holds the model's classes; label k must mean what it meant in training.
            config["data"]["class_names"] = trained_on
            print(f"data: class order of the checkpoint kept: {trained_on}")
    return evaluate(config, checkpoint=args.checkpoint, overrides=args.set or (),
                    save_results=args.save_results, device=args.device, split=args.split,
                    output_dir=getattr(args, "output_dir", "auto"))
