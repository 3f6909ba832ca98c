"""What ``tools/make_proposals.py`` does, callable from Python: :func:`make_proposals_from_args`.

Three jobs on one dataset split (a config's ``data`` section, a checkpoint's stored config, or
``--data PATH``):

- make: selective search (``--method selective_search``) or a trained Faster R-CNN's RPN
  (``--method rpn --checkpoint CKPT``) on every image -> ``--output`` (see
  :func:`detect.proposals.make.make_proposals`: workers, progress bar, resumable, no silent
  overwrite), then the recall table and the time per image;
- convert: ``--convert FILE.pkl --allow-pickle`` (detectron2 / mmdetection, see
  :mod:`detect.proposals.convert`) -> ``--output``;
- recall: ``--recall`` prints the recall table of an existing ``--output`` file (or several,
  ``--output A.pth B.pth``) against the split's ground truth.

The split is loaded with its ``proposal_file`` removed (it may be the file being made), with
every image kept (``filter_empty`` off: the file must serve any later choice) and without
augmentation.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch

from detect.config import ConfigError
from detect.errors import UserInputError

__all__ = ["make_proposals_from_args", "split_dataset_for_proposals"]


def _config(args):
    from detect.config import config_from_checkpoint, load_config

    if args.config is not None:
        config = load_config(args.config, args.set or ())
    elif getattr(args, "checkpoint", None) is not None:
        from detect.engine.checkpoint import load_checkpoint

        payload = load_checkpoint(args.checkpoint)
        config = config_from_checkpoint(payload.get("config") or {}, args.set or (),
                                        where=f"checkpoint {args.checkpoint}")
    elif args.data is not None:
        config = load_config({"data": {}}, args.set or ())
    else:
        return None
    if args.data is not None:
        from detect.data.sources import apply_data_path

        notes: list[str] = []
        config = apply_data_path(dict(config), args.data, notes=notes)
        for note in notes:
            print(f"data: {note}")
    return config


def split_dataset_for_proposals(data_cfg: dict, split: str):
    """The dataset of ``split`` as proposals are made for it (see the module docstring)."""
    from detect.data.build import build_dataset

    data_cfg = copy.deepcopy(dict(data_cfg))
    if not isinstance(data_cfg.get(split), dict):
        present = [k for k, v in data_cfg.items() if isinstance(v, dict) and k not in ("transforms", "shapes")]
        raise ConfigError(f"--split {split!r}: the data config has no such split (it has {present})")
    data_cfg[split].pop("proposal_file", None)
    data_cfg[split]["filter_empty"] = False
    data_cfg[split]["transforms"] = "eval"
    return build_dataset(data_cfg, split)


def _rpn_generator(args):
    from detect.engine.checkpoint import inference_state_dict, load_checkpoint
    from detect.engine.launch import build_model
    from detect.proposals.make import RPNProposer

    if args.checkpoint is None:
        raise UserInputError("--method rpn needs --checkpoint CKPT (a trained faster_rcnn model)")
    payload = load_checkpoint(args.checkpoint)
    from detect.config import config_from_checkpoint

    # --set applies to the stored model too: e.g. model.rpn_post_nms_top_n_test=2000 for the
    # 2000-proposal budget (the recipes keep fewer at test time).
    model_cfg = config_from_checkpoint(payload.get("config") or {}, args.set or (),
                                       where=f"checkpoint {args.checkpoint}")["model"]
    model = build_model(model_cfg)
    model.load_state_dict(inference_state_dict(payload))
    params = {"checkpoint": str(Path(args.checkpoint).resolve()), "model": model_cfg.get("name"),
              "backbone": model_cfg.get("backbone"), "max_proposals": args.max_proposals,
              "rpn_pre_nms_top_n_test": model_cfg.get("rpn_pre_nms_top_n_test"),
              "rpn_post_nms_top_n_test": model_cfg.get("rpn_post_nms_top_n_test"),
              "rpn_nms_thresh": model_cfg.get("rpn_nms_thresh")}
    return RPNProposer(model, device=args.device or "cpu", max_proposals=args.max_proposals), params


def _print_recall(named: dict, dataset) -> dict:
    from detect.proposals.recall import format_recall_table, proposal_recall

    names = [dataset.get_image_info(i)["file_name"] for i in range(len(dataset))]
    for ps in named.values():
        # A file of another split would match ids by accident (VOC ids number a split's images).
        ps.require(dataset.image_ids)
        ps.check_file_names(dataset.image_ids, names)
    results = {name: proposal_recall(ps, dataset) for name, ps in named.items()}
    first = next(iter(results.values()))
    print(f"recall against {first['num_gt']} ground-truth boxes of {first['num_images']} images:")
    print(format_recall_table(results))
    return results


def make_proposals_from_args(args) -> dict:
    """``tools/make_proposals.py``; returns ``{"output": ..., "recall": {...}, ...}``."""
    from detect.proposals.files import load_proposals, save_proposals

    config = _config(args)
    dataset = None
    if config is not None:
        if not args.split:
            raise UserInputError("give --split NAME (train, val, test, ...) of the dataset")
        dataset = split_dataset_for_proposals(config["data"], args.split)
    outputs = [Path(p) for p in (args.output or [])]
    if not outputs:
        raise UserInputError("give --output PATH (the proposal file to write, or to read with --recall)")

    if args.recall:
        if dataset is None:
            raise UserInputError("--recall needs the dataset: CONFIG, --checkpoint or --data, and --split")
        named = {p.name: load_proposals(p) for p in outputs}
        return {"recall": _print_recall(named, dataset)}

    if len(outputs) != 1:
        raise UserInputError(f"--output takes one file when writing, got {len(outputs)}")
    output = outputs[0]
    if args.convert is not None:
        from detect.proposals.convert import read_proposal_pickle

        if output.exists() and not args.overwrite:
            raise UserInputError(f"{output} already exists; pass --overwrite to replace it")
        proposals = read_proposal_pickle(args.convert, allow_pickle=args.allow_pickle, format=args.pickle_format,
                                         image_ids=None if dataset is None else dataset.image_ids)
        if dataset is not None:
            proposals.require(dataset.image_ids)
        save_proposals(output, proposals)
        print(f"wrote {output}: {len(proposals)} images, {float(proposals.num_boxes().float().mean()):.0f} "
              f"proposals/image ({proposals.method})")
        result = {"output": str(output)}
        if dataset is not None:
            result["recall"] = _print_recall({output.name: proposals}, dataset)
        return result

    if dataset is None:
        raise UserInputError("give the dataset: a CONFIG, --checkpoint (its config) or --data PATH, and --split")
    from detect.proposals.make import make_proposals

    if args.method == "selective_search":
        from detect.proposals.selective_search import SelectiveSearch

        generator = SelectiveSearch(max_proposals=args.max_proposals, im_width=args.im_width)
        params, workers = generator.params, args.workers
    elif args.method == "rpn":
        generator, params = _rpn_generator(args)
        workers = 0
    else:  # argparse's choices make this unreachable from the tool
        raise UserInputError(f"unknown --method {args.method!r}; expected selective_search or rpn")
    print(f"proposals: {args.method} on {len(dataset)} images of split {args.split!r} -> {output}"
          + (f" ({workers} worker processes)" if workers else ""))
    start = time.perf_counter()
    proposals = make_proposals(dataset, output, generator, method=args.method, params=params, workers=workers,
                               save_every=args.save_every, overwrite=args.overwrite,
                               progress=not args.no_progress, batch_size=args.batch_size)
    wall = time.perf_counter() - start
    counts = proposals.num_boxes().float()
    summary = {"output": str(output), "images": len(proposals), "wall_s": round(wall, 2),
               "boxes_per_image_mean": round(float(counts.mean()), 1), "boxes_per_image_min": int(counts.min()),
               "boxes_per_image_max": int(counts.max()), "workers": workers}
    timed = getattr(proposals, "seconds_per_image", [])
    if timed:
        # The generator's own time per image (in its process), over the images this run computed.
        summary["s_per_image_mean"] = round(sum(timed) / len(timed), 3)
        summary["images_timed"] = len(timed)
    print("wrote " + json.dumps(summary))
    if not args.no_recall:
        summary["recall"] = _print_recall({output.name: proposals}, dataset)
    return summary


def add_arguments(parser) -> None:
    """The options of ``tools/make_proposals.py``."""
    parser.add_argument("config", nargs="?", help="config file whose data section names the dataset")
    parser.add_argument("--data", metavar="PATH", help="the dataset at PATH (any layout tools/train.py --data takes)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config values")
    parser.add_argument("--split", help="data split to make proposals for (train, val, test, ...)")
    parser.add_argument("--method", choices=("selective_search", "rpn"), default="selective_search",
                        help="selective_search (R-CNN's fast mode, default) or rpn (a trained Faster R-CNN)")
    parser.add_argument("--checkpoint", metavar="CKPT", help="--method rpn: the trained Faster R-CNN")
    parser.add_argument("--output", nargs="+", metavar="PATH",
                        help="the proposal file to write (with --recall: the file(s) to evaluate)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for selective search (default 2)")
    parser.add_argument("--save-every", type=int, default=20, metavar="N",
                        help="save partial results every N images (default 20); a rerun continues from them")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output (and its partial file)")
    parser.add_argument("--max-proposals", type=int, metavar="K", help="keep the best K proposals per image")
    parser.add_argument("--im-width", type=int, metavar="W",
                        help="selective search on a copy resized to width W (R-CNN used 500); default: as is")
    parser.add_argument("--batch-size", type=int, default=4, help="--method rpn: images per forward pass")
    parser.add_argument("--device", help="--method rpn: cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--recall", action="store_true", help="only print the recall table of the --output file(s)")
    parser.add_argument("--no-recall", action="store_true", help="do not print the recall table after writing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--convert", metavar="FILE.pkl", help="convert a detectron2 / mmdetection proposal pickle")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow --convert to unpickle FILE (unpickling runs code: only for files you trust)")
    parser.add_argument("--pickle-format", choices=("auto", "detectron2", "mmdetection"), default="auto",
                        help="layout of the --convert pickle (auto: dict = detectron2, list = mmdetection)")
