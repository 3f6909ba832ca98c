"""Multi-stage training: a family whose model states ``training_stages`` (R-CNN) is trained by a
sequence of named stages, each checkpointed and resumable, run in order from one config.

::

    from detect.engine.stages import train_stages
    summary = train_stages(load_config("configs/rcnn/shapes_cpu.py"))   # what tools/train.py runs

:func:`detect.engine.launch.train` hands a config to :func:`train_stages` when
:func:`stages_of` finds stages for its ``model.name`` (the builder's ``training_stages``).
R-CNN's stages (``detect.modeling.meta_arch.rcnn``), with where each keeps its state under
``output_dir``:

1. ``finetune`` -> ``finetune/``: the CNN fine-tuned on warped crops as a (K + 1)-way
   softmax classifier, by the engine itself (:func:`detect.engine.launch.train` with the
   model: Trainer, hooks, ``last.pth`` / ``best.pth``, ``metrics.jsonl``, progress bar,
   validation with the softmax scores). The rest of the run starts from ``finetune/last.pth``.
2. ``features`` -> ``features/``: the fine-tuned CNN's features of every training image's
   ground-truth boxes and proposals (the dataset in its validation transforms: no flips),
   cached on disk as float16 rows appended to ``fc7.f16`` (the SVM feature: ``[N, D]``) and
   ``pool5.f16`` (only the rows the box regressor trains on: IoU > ``bbox_reg.min_iou``),
   read back with ``numpy.memmap``; ``index.pth`` holds per row the image, the class of a
   ground-truth box (0 for a proposal) and the IoU with each class's ground truth, and per
   regression row its class and target deltas. The index is written every
   ``features.checkpoint_every`` images; a resumed run truncates the raw files to it and
   goes on with the next image, so no image is computed twice and the stages after it never
   run the CNN.
3. ``svm`` -> ``svm/state.pth``: per-class linear SVMs with the original's hard-negative
   mining (:class:`detect.modeling.linear_svm.HardNegativeMiner`) on the cached features
   scaled to a mean norm of 20; the miner's state is checkpointed after every refit and every
   ``svm.checkpoint_every`` images, so a resumed pass ends with the same weights.
4. ``bbox_reg`` -> ``bbox_reg/state.pth``: class-specific ridge regression (lambda 1000) on
   the cached pool5 rows (:func:`detect.modeling.linear_svm.fit_ridge`).

At the end the model (fine-tuned CNN + SVMs + regressor, all tensors of its state dict) is
written as the deployable ``<output_dir>/best.pth`` and validated on ``data.val`` when there
is one (``eval.interval > 0``); ``stages.json`` lists the completed stages with their wall
times. ``--resume`` (``resume="auto"`` or a path) skips the completed stages and continues
the one it stopped in; without it an output directory that holds a run is refused.

Stage options come from the model (``model.stage_options``, the ``stage_options`` keyword of
the builder, so they live in ``config["model"]``): ``svm=dict(C, positive_weight,
intercept_scaling, neg_iou, hard_thresh, evict_thresh, retrain_every, feature_norm,
checkpoint_every)``, ``bbox_reg=dict(lam, min_iou, feature_norm, robust)``,
``features=dict(checkpoint_every)``; defaults are the paper's (:data:`DEFAULT_STAGE_OPTIONS`).
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from detect.config import ConfigError, load_config, save_config
from detect.engine.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    CheckpointError,
    FORMAT_VERSION,
    inference_state_dict,
    load_checkpoint,
    save_checkpoint,
)
from detect.engine.device import resolve_device
from detect.engine.loggers import ProgressBar, close_logger, get_logger
from detect.filesystem import atomic_write

PROGRESS_NAME = "stages.json"

#: The paper's numbers (rcnn_train.m, rcnn_train_bbox_regressor.m).
DEFAULT_STAGE_OPTIONS: dict[str, dict[str, Any]] = {
    "features": {"checkpoint_every": 20},
    "svm": {"C": 1e-3, "positive_weight": 2.0, "intercept_scaling": 10.0, "neg_iou": 0.3, "hard_thresh": -1.0001,
            "evict_thresh": -1.2, "retrain_every": 2000, "feature_norm": 20.0, "checkpoint_every": 50},
    "bbox_reg": {"lam": 1000.0, "min_iou": 0.6, "feature_norm": 20.0, "robust": 0.0},
}


def stage_options(model) -> dict[str, dict[str, Any]]:
    """The model's stage options over :data:`DEFAULT_STAGE_OPTIONS` (unknown keys are an error)."""
    given = getattr(model, "stage_options", None) or {}
    merged = copy.deepcopy(DEFAULT_STAGE_OPTIONS)
    for stage, options in given.items():
        if stage not in merged:
            raise ConfigError(f"model.stage_options: unknown stage {stage!r}; stages with options: {', '.join(merged)}")
        for key, value in dict(options).items():
            if key not in merged[stage]:
                raise ConfigError(f"model.stage_options.{stage}: unknown option {key!r}; options: "
                                  f"{', '.join(merged[stage])}")
            merged[stage][key] = value
    return merged


def stages_of(model_cfg: Mapping) -> tuple[str, ...] | None:
    """The stages of the family ``model_cfg["name"]`` (None: a single-stage family)."""
    from detect.modeling.registry import get_detector_builder

    name = model_cfg.get("name") if isinstance(model_cfg, Mapping) else None
    if not name:
        return None
    try:
        builder = get_detector_builder(name)
    except KeyError:
        return None  # launch.train reports the unknown name
    stages = getattr(builder, "training_stages", None)
    return tuple(stages) if stages else None


# ------------------------------------------------------------------ progress file
def read_progress(out: Path) -> dict:
    path = out / PROGRESS_NAME
    if not path.is_file():
        return {"completed": [], "wall_s": {}}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable stage progress ({err}); move it away to start over") from err


def _write_progress(out: Path, progress: Mapping) -> None:
    with atomic_write(out / PROGRESS_NAME, "w", encoding="utf-8") as f:
        json.dump(progress, f, indent=2)


def _save_state(path: Path, state: Mapping) -> None:
    save_checkpoint(path, {"format_version": FORMAT_VERSION, **state})


def _load_state(path: Path) -> dict:
    return load_checkpoint(path, require_model=False)


# ------------------------------------------------------------------ the runner
def train_stages(config, *, resume=None, weights=None, device=None, output_dir=None, model=None,
                 datasets: Mapping[str, Any] | None = None,
                 evaluator_factory: Callable[[str, Any], Any] | None = None) -> dict:
    """Run every stage of the config's model in order (see the module docstring); returns
    :func:`detect.engine.launch.train`'s summary keys for the final model plus ``stages``
    (the wall time of each stage run now, in seconds)."""
    from detect.engine import launch

    config = load_config(config)
    if output_dir is not None:
        config["output_dir"] = str(output_dir)
    if device is not None:
        config["train"]["device"] = str(device)
    if resume is not None and weights is not None and str(resume) != "auto":
        raise ConfigError("--resume continues a run and --weights starts a new one from a model: give one of them")
    out = Path(config["output_dir"])
    launch._prepare_output_dir(out)
    logger = get_logger(out)
    progress = read_progress(out)
    if resume is None and (progress["completed"] or (out / "finetune" / LAST_NAME).is_file()):
        raise CheckpointError(f"{out} already holds a multi-stage run (stages done: {progress['completed'] or 'none'}); "
                              "continue it with --resume auto, or choose another --output-dir")
    torch_device = resolve_device(config["train"]["device"])
    if datasets is None:
        datasets = {"train": launch.build_dataset(config["data"], "train")}
        if launch._has_split(config["data"], "val"):
            datasets["val"] = launch.build_dataset(config["data"], "val")
    class_names = launch._class_names(datasets["train"], datasets.get("val"))
    launch._check_class_names(config, class_names)
    if model is None:
        model = launch.build_model(config["model"])
    stages = tuple(model.training_stages)
    options = stage_options(model)
    logger.info(f"multi-stage training of {config['model'].get('name')}: stages {', '.join(stages)}; "
                f"done already: {', '.join(progress['completed']) or 'none'}; output in {out}")
    timings: dict[str, float] = {}
    runners = {"finetune": _stage_finetune, "features": _stage_features, "svm": _stage_svm, "bbox_reg": _stage_bbox_reg}
    context = dict(config=config, out=out, model=model, datasets=datasets, device=torch_device, resume=resume,
                   weights=weights, options=options, evaluator_factory=evaluator_factory, class_names=class_names)
    for number, stage in enumerate(stages, 1):
        if stage not in runners:
            raise ConfigError(f"{type(model).__name__} names a stage {stage!r} that detect.engine.stages does not know")
        if stage in progress["completed"]:
            _restore_stage(stage, context)
            logger.info(f"stage {number}/{len(stages)} {stage}: done already, restored")
            continue
        logger = get_logger(out)
        logger.info(f"stage {number}/{len(stages)} {stage}: starting")
        start = time.perf_counter()
        runners[stage](context)
        timings[stage] = time.perf_counter() - start
        progress["completed"].append(stage)
        progress["wall_s"][stage] = round(timings[stage], 1)
        _write_progress(out, progress)
        get_logger(out).info(f"stage {number}/{len(stages)} {stage}: done in {timings[stage]:.1f} s")
    logger = get_logger(out)
    metrics = _finish(context)
    summary = {"output_dir": str(out), "last_checkpoint": None, "best_checkpoint": str(out / BEST_NAME),
               "metrics": metrics, "best": None, "epoch": None, "iteration": None, "stages": timings}
    logger.info(f"done: all stages; model {out / BEST_NAME}" + (f"; val {_headline(metrics)}" if metrics else ""))
    close_logger()
    return summary


def _headline(metrics: Mapping) -> str:
    from detect.engine.hooks import headline

    return headline(metrics)


def _restore_stage(stage: str, ctx: dict) -> None:
    """Put a completed stage's result back into the model (a resumed run)."""
    model, out = ctx["model"], ctx["out"]
    if stage == "finetune":
        model.load_state_dict(inference_state_dict(load_checkpoint(out / "finetune" / LAST_NAME)))
    elif stage == "svm":
        _apply_linear(model.svms, _load_state(out / "svm" / "state.pth"))
    elif stage == "bbox_reg":
        _apply_linear(model.bbox_regressor, _load_state(out / "bbox_reg" / "state.pth"))


# ------------------------------------------------------------------ stage 1
def _stage_finetune(ctx: dict) -> None:
    from detect.engine import launch

    model, out = ctx["model"], ctx["out"]
    sub = copy.deepcopy(ctx["config"])
    sub["output_dir"] = str(out / "finetune")
    resume = ctx["resume"]
    if resume is not None and str(resume) != "auto":
        resume = resume if Path(resume).resolve().parent == (out / "finetune").resolve() else "auto"
    launch.train(sub, resume=resume, weights=ctx["weights"], model=model, datasets=ctx["datasets"],
                 evaluator_factory=ctx["evaluator_factory"])
    # train() leaves the weights of its last step in the model: what the next stages use
    # (the same as finetune/last.pth, which a resumed run loads).
    model.svms.trained.fill_(False)
    model.bbox_regressor.trained.fill_(False)


# ------------------------------------------------------------------ stage 2: the feature cache
class FeatureCache:
    """The on-disk features of the ``features`` stage (see the module docstring)."""

    def __init__(self, directory: Path, feature_dim: int, pool5_dim: int):
        self.directory = Path(directory)
        self.feature_dim, self.pool5_dim = int(feature_dim), int(pool5_dim)
        self.feature_path = self.directory / "fc7.f16"
        self.pool5_path = self.directory / "pool5.f16"
        self.index_path = self.directory / "index.pth"

    def load_index(self) -> dict | None:
        return _load_state(self.index_path) if self.index_path.is_file() else None

    def features(self) -> np.memmap:
        rows = self.load_index()["num_rows"]
        return np.memmap(self.feature_path, dtype=np.float16, mode="r", shape=(rows, self.feature_dim))

    def pool5(self) -> np.memmap:
        rows = self.load_index()["num_reg_rows"]
        return np.memmap(self.pool5_path, dtype=np.float16, mode="r", shape=(rows, self.pool5_dim))


def _train_set_for_features(ctx: dict):
    """The training images without augmentation (the validation transforms)."""
    from detect.engine import launch

    if "train_eval" in ctx["datasets"]:
        return ctx["datasets"]["train_eval"]
    data = copy.deepcopy(ctx["config"]["data"])
    if not isinstance(data.get("train"), Mapping):
        return ctx["datasets"]["train"]  # a library user's own datasets: used as given
    transforms = dict(data.get("transforms") or {})
    transforms["train"] = transforms.get("val", "eval")
    data["transforms"] = transforms
    return launch.build_dataset(data, "train")


def image_rows(model, image: torch.Tensor, target: Mapping) -> dict:
    """One training image's cache rows: its ground-truth boxes then its (valid) proposals, their
    class (ground truth) or 0, IoU with each class's ground truth ``[N, K]``, the fc7 and pool5
    features, and the regression rows (IoU > min_iou) with their class and target deltas."""
    from torchvision.ops import box_iou

    gt_boxes = target["boxes"].to(image.device, torch.float32)
    gt_labels = target["labels"].to(image.device)
    proposals = target.get("proposals")
    proposals = model.proposals_for([image], None if proposals is None else [proposals])[0]
    boxes = torch.cat((gt_boxes, proposals))
    num_gt = gt_boxes.shape[0]
    labels = torch.cat((gt_labels, torch.zeros(proposals.shape[0], dtype=torch.int64, device=image.device)))
    overlaps = torch.zeros(boxes.shape[0], model.num_classes, device=image.device)
    best_iou = torch.zeros(boxes.shape[0], device=image.device)
    best_gt = torch.zeros(boxes.shape[0], dtype=torch.int64, device=image.device)
    if num_gt:
        iou = box_iou(boxes, gt_boxes)  # [N, G]
        # per class, the best IoU with that class's ground truth (scatter-max over the G columns)
        overlaps = overlaps.scatter_reduce(1, (gt_labels - 1).expand(boxes.shape[0], -1), iou, reduce="amax")
        best_iou, best_gt = iou.max(dim=1)
    pool5, feature = model.extract_features(image, boxes)
    return {"boxes": boxes, "labels": labels, "overlaps": overlaps, "best_iou": best_iou,
            "best_gt": best_gt, "gt_boxes": gt_boxes, "gt_labels": gt_labels, "pool5": pool5,
            "feature": model.svm_input(pool5, feature)}


def _stage_features(ctx: dict) -> None:
    model, out, opts = ctx["model"], ctx["out"], ctx["options"]
    dataset = _train_set_for_features(ctx)
    cache = FeatureCache(out / "features", model.svms.weight.shape[1], model.cnn.pool5_dim)
    cache.directory.mkdir(parents=True, exist_ok=True)
    index = cache.load_index()
    if index is None:
        index = {"num_images": len(dataset), "next_image": 0, "num_rows": 0, "num_reg_rows": 0,
                 "image_rows": [], "labels": [], "overlaps": [], "reg_rows": [], "reg_labels": [], "reg_targets": []}
    elif index["num_images"] != len(dataset):
        raise CheckpointError(f"{cache.index_path}: cached for {index['num_images']} images, the training set has "
                              f"{len(dataset)}; remove {cache.directory} to recompute the features")
    # a kill after an append but before the index write leaves rows the index does not know
    for path, rows, dim in ((cache.feature_path, index["num_rows"], cache.feature_dim),
                            (cache.pool5_path, index["num_reg_rows"], cache.pool5_dim)):
        with open(path, "ab") as f:
            f.truncate(rows * dim * 2)
    logger = get_logger(out)
    model.to(ctx["device"]).eval()
    min_iou = float(opts["bbox_reg"]["min_iou"])
    every = int(opts["features"]["checkpoint_every"])
    bar = ProgressBar(len(dataset), initial=index["next_image"], enabled=bool(ctx["config"]["train"]["progress_bar"]))
    start, done_now = time.perf_counter(), 0

    def write_index():
        _save_state(cache.index_path, index)

    try:
        with open(cache.feature_path, "ab") as feature_file, open(cache.pool5_path, "ab") as pool5_file:
            for i in range(index["next_image"], len(dataset)):
                image, target = dataset[i]
                with torch.no_grad():
                    rows = image_rows(model, image.to(ctx["device"]), {k: (v.to(ctx["device"]) if torch.is_tensor(v)
                                                                          else v) for k, v in target.items()})
                reg = torch.where(rows["best_iou"] > min_iou)[0]
                targets = model.box_coder.encode(rows["gt_boxes"][rows["best_gt"][reg]], rows["boxes"][reg]) \
                    if reg.numel() else rows["boxes"].new_zeros((0, 4))
                feature_file.write(rows["feature"].cpu().to(torch.float16).numpy().tobytes())
                pool5_file.write(rows["pool5"][reg].cpu().to(torch.float16).numpy().tobytes())
                n = rows["boxes"].shape[0]
                index["image_rows"].append(n)
                index["labels"].append(rows["labels"].cpu())
                index["overlaps"].append(rows["overlaps"].cpu().to(torch.float16))
                index["reg_rows"].append(reg.cpu() + index["num_rows"])
                index["reg_labels"].append(rows["gt_labels"][rows["best_gt"][reg]].cpu())
                index["reg_targets"].append(targets.cpu().float())
                index["num_rows"] += n
                index["num_reg_rows"] += int(reg.numel())
                index["next_image"] = i + 1
                done_now += 1
                bar.update(1, rows=index["num_rows"])
                if (i + 1) % every == 0 or i + 1 == len(dataset):
                    feature_file.flush()
                    pool5_file.flush()
                    write_index()
                    if not bar.active:
                        rate = done_now / max(time.perf_counter() - start, 1e-9)
                        logger.info(f"features: {i + 1}/{len(dataset)} images, {index['num_rows']} rows, "
                                    f"{rate:.2f} images/s")
    except KeyboardInterrupt:
        # the raw files are closed (flushed) by now; rows the index does not count are cut on resume
        write_index()
        raise
    finally:
        bar.close()
    features = cache.features()
    sample = np.random.default_rng(0).choice(features.shape[0], size=min(20000, features.shape[0]), replace=False) \
        if features.shape[0] else np.zeros(0, dtype=np.int64)
    from detect.modeling.linear_svm import mean_norm_scale

    index["feature_mean_norm_scale"] = mean_norm_scale(features[np.sort(sample)], 1.0) if len(sample) else 1.0
    pool5 = cache.pool5()
    index["pool5_mean_norm_scale"] = mean_norm_scale(pool5[: min(20000, len(pool5))], 1.0) if len(pool5) else 1.0
    write_index()
    logger.info(f"features: {index['num_rows']} rows ({cache.feature_dim}-d float16, "
                f"{cache.feature_path.stat().st_size / 2**20:.1f} MiB), {index['num_reg_rows']} regression rows")


def _cat(chunks, dtype=None, width=None) -> torch.Tensor:
    if chunks:
        return torch.cat(list(chunks))
    return torch.zeros((0,) if width is None else (0, width), dtype=dtype or torch.float32)


# ------------------------------------------------------------------ stage 3: SVMs
def _apply_linear(module, state: Mapping) -> None:
    """A stage's fitted linear map (``LinearSVMs`` or ``BoxRegressor``) into the model."""
    module.weight.copy_(state["weight"])
    module.bias.copy_(state["bias"])
    module.feature_scale.fill_(float(state["feature_scale"]))
    module.trained.fill_(True)


def _stage_svm(ctx: dict) -> None:
    from detect.modeling.linear_svm import HardNegativeMiner

    model, out, opts = ctx["model"], ctx["out"], ctx["options"]["svm"]
    cache = FeatureCache(out / "features", model.svms.weight.shape[1], model.cnn.pool5_dim)
    index = cache.load_index()
    features = cache.features()
    labels = _cat(index["labels"], torch.int64)
    overlaps = _cat(index["overlaps"], torch.float16, model.num_classes).float()
    offsets = np.concatenate([[0], np.cumsum(index["image_rows"])]).astype(np.int64)
    scale = float(opts["feature_norm"]) * float(index["feature_mean_norm_scale"])
    positives = [torch.where(labels == c)[0] for c in range(1, model.num_classes + 1)]
    miner = HardNegativeMiner(features, positives, feature_scale=scale, retrain_every=int(opts["retrain_every"]),
                              hard_thresh=float(opts["hard_thresh"]), evict_thresh=float(opts["evict_thresh"]),
                              svm_options={"C": float(opts["C"]), "positive_weight": float(opts["positive_weight"]),
                                           "intercept_scaling": float(opts["intercept_scaling"])})
    state_path = out / "svm" / "state.pth"
    logger = get_logger(out)
    if state_path.is_file():
        saved = _load_state(state_path)
        miner.load_state_dict(saved["miner"])
        logger.info(f"svm: resumed the mining pass at image {miner.next_image}/{len(offsets) - 1}")
    num_images = len(offsets) - 1
    every = int(opts["checkpoint_every"])

    def save():
        _save_state(state_path, {"miner": miner.state_dict(), "feature_scale": scale, "done": False})

    bar = ProgressBar(num_images, initial=miner.next_image, enabled=bool(ctx["config"]["train"]["progress_bar"]))
    try:
        for i in range(miner.next_image, num_images):
            rows = torch.arange(int(offsets[i]), int(offsets[i + 1]))
            negatives = overlaps[rows] < float(opts["neg_iou"])  # [n, K]
            refitted = miner.add_image([rows[negatives[:, c]] for c in range(model.num_classes)])
            bar.update(1, cached=int(sum(c.numel() for c in miner.cache)))
            if refitted or (i + 1) % every == 0:
                save()
            if refitted and not bar.active:
                logger.info(f"svm: image {i + 1}/{num_images}: refitted classes {[c + 1 for c in refitted]}; "
                            f"cached negatives {[int(c.numel()) for c in miner.cache]}")
    except KeyboardInterrupt:
        save()
        raise
    finally:
        bar.close()
    miner.finish()
    missing = [ctx["class_names"][c] for c in range(model.num_classes) if not bool(miner.fitted[c])]
    if missing:
        logger.warning(f"svm: no SVM for {missing} (no positive or no negative in the training set): they score "
                       "0 margin everywhere")
    logger.info(f"svm: {miner.retrains} fits; cached negatives per class {[int(c.numel()) for c in miner.cache]}")
    state = {"miner": miner.state_dict(), "feature_scale": scale, "done": True,
             "weight": miner.weight, "bias": miner.bias}
    _save_state(state_path, state)
    _apply_linear(model.svms, state)


# ------------------------------------------------------------------ stage 4: box regression
def _stage_bbox_reg(ctx: dict) -> None:
    from detect.modeling.linear_svm import fit_ridge

    model, out, opts = ctx["model"], ctx["out"], ctx["options"]["bbox_reg"]
    cache = FeatureCache(out / "features", model.svms.weight.shape[1], model.cnn.pool5_dim)
    index = cache.load_index()
    pool5 = cache.pool5()
    reg_labels = _cat(index["reg_labels"], torch.int64)
    reg_targets = _cat(index["reg_targets"], torch.float32, 4)
    scale = float(opts["feature_norm"]) * float(index["pool5_mean_norm_scale"])
    weight = torch.zeros_like(model.bbox_regressor.weight, device="cpu")
    bias = torch.zeros_like(model.bbox_regressor.bias, device="cpu")
    logger = get_logger(out)
    counts = []
    for c in range(1, model.num_classes + 1):
        rows = torch.where(reg_labels == c)[0]
        counts.append(int(rows.numel()))
        if rows.numel() == 0:
            logger.warning(f"bbox_reg: no training box for {ctx['class_names'][c - 1]!r}: its boxes stay as proposed")
            continue
        X = np.asarray(pool5[rows.numpy()], dtype=np.float32) * scale
        weight[c - 1], bias[c - 1] = fit_ridge(X, reg_targets[rows], lam=float(opts["lam"]), robust=float(opts["robust"]))
    logger.info(f"bbox_reg: ridge (lambda {opts['lam']}) on {counts} boxes per class with IoU > {opts['min_iou']}")
    state = {"weight": weight, "bias": bias, "feature_scale": scale, "done": True, "counts": counts}
    _save_state(out / "bbox_reg" / "state.pth", state)
    _apply_linear(model.bbox_regressor, state)


# ------------------------------------------------------------------ the final model
def _finish(ctx: dict) -> dict:
    """Write ``best.pth`` (deployable) and ``config.json``; validate on ``data.val`` if configured."""
    import detect
    from detect.engine import launch
    from detect.engine.evaluation import evaluate_model

    model, out, config = ctx["model"], ctx["out"], ctx["config"]
    save_config(config, out / "config.json")
    payload = {"format_version": FORMAT_VERSION, "library_version": detect.__version__,
               "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "optimizer": None, "scheduler": None, "scaler": None, "ema": None, "epoch": None, "iteration": None,
               "config": config, "class_names": list(ctx["class_names"]), "color_order": "RGB", "box_format": "xyxy",
               "metrics": {}, "metrics_iteration": None, "best": None, "early_stop": None,
               "stages": list(model.training_stages), "deployable": True}
    save_checkpoint(out / BEST_NAME, payload)
    metrics: dict = {}
    val_set = ctx["datasets"].get("val")
    ecfg = config["eval"]
    if val_set is not None and int(ecfg["interval"]) > 0:
        loader = launch.build_dataloader(val_set, batch_size=int(ecfg["batch_size"] or config["data"]["batch_size"]),
                                         train=False, num_workers=int(config["data"]["num_workers"]),
                                         seed=int(config["train"]["seed"]), aspect_ratio_grouping=False)
        metric = launch.resolve_eval_choice(ecfg["metric"], model, "default_metric")
        evaluator = (ctx["evaluator_factory"] or launch.build_evaluator)(metric, val_set)
        model.to(ctx["device"])
        start = time.perf_counter()
        metrics = evaluate_model(model, loader, evaluator=evaluator, compute_loss=False, device=ctx["device"],
                                 progress=bool(config["train"]["progress_bar"]))
        metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        get_logger(out).info(f"val ({time.perf_counter() - start:.1f} s): {_headline(metrics)}")
        payload["metrics"] = metrics
        save_checkpoint(out / BEST_NAME, payload)
        with atomic_write(out / "metrics_final.json", "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=2)
    return metrics
