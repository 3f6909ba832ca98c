"""The Predictor: a trained detector as a function of images.

::

    from detect import Predictor
    predictor = Predictor.from_checkpoint("runs/demo/best.pth", device="cpu", score_thresh=0.5)
    dets = predictor("image.jpg")                       # one dict
    dets = predictor(["a.jpg", "b.png"])                 # a list of dicts, batched
    dets = predictor(frame_bgr, color_order="BGR")       # arrays need their channel order
    dets = predictor(tensor_chw)                         # Tensor[3, H, W] float RGB 0..1

Inputs (alone, or mixed in a list):

- a path (``str`` / ``os.PathLike``): decoded by :func:`detect.data.image_io.read_image`;
- a numpy ``[H, W, 3] uint8`` array, with ``color_order="RGB"`` or ``"BGR"`` given
  explicitly (OpenCV frames are BGR, PIL/matplotlib arrays RGB; guessing would silently
  halve the accuracy on the wrong ones, so there is no default);
- a ``Tensor[3, H, W]`` float RGB in 0..1 (the library's image type); a stacked
  ``Tensor[N, 3, H, W]`` or ``[N, H, W, 3]`` array is a batch of N.

Preprocessing is exactly what training and evaluation do: the Predictor only turns the
input into an RGB float tensor; the model's own image transform normalises and resizes,
and its outputs come back in the coordinates of the image as given.

Output per image, on the CPU: ``boxes`` float32 [M, 4] (xyxy pixels), ``scores`` float32
[M], ``labels`` int64 [M] in 1..K and ``class_names`` (``list[str]``, one per detection),
sorted by decreasing score.

A semantic segmentation model (``model.task == "semantic_segmentation"``, FCN) gives per
image ``sem_seg`` float32 [K + 1, H, W] (the logits, channel 0 = background, at the size of
the image as given), ``label_map`` int64 [H, W] (their argmax: 0 background, 1..K) and
``class_names`` (``["background", *class_names]``: ``class_names[v]`` names value ``v`` of
the label map). Such a model has no score threshold: giving one is a ``UserInputError``.

Models that classify region proposals (Fast R-CNN, R-CNN) built with
``proposal_generator="selective_search"`` compute each image's proposals on the fly (a
second or more per image); while they do, a transient ``selective search`` bar over the
batch's images is drawn on stderr when it is a terminal (``model.proposal_progress``:
``True`` always, ``False`` never).
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from detect.data.image_io import read_image, to_tensor
from detect.engine.device import autocast, resolve_device
from detect.errors import UserInputError
from detect.inference.sources import COLOR_ORDERS, convert_color


def _is_path(item) -> bool:
    return isinstance(item, (str, os.PathLike))


def _is_batch(inputs) -> bool:
    if isinstance(inputs, (list, tuple)):
        return True
    if isinstance(inputs, Tensor):
        return inputs.dim() == 4
    if isinstance(inputs, np.ndarray):
        return inputs.ndim == 4
    return False


class Predictor:
    """Run a detector on paths, arrays or tensors and name what it finds.

    Args:
        model (Detector): a built detector with weights loaded; it is put in eval mode
            and moved to ``device``.
        class_names (list[str]): label ``k`` is ``class_names[k - 1]``; must have
            ``model.num_classes`` entries.
        device (str): ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        score_thresh (float, optional): drop detections scoring below it. It filters
            what the model returns, so it cannot go below the model's own score
            threshold (``from_checkpoint`` lowers that when asked to).
        batch_size (int): images per forward pass when called on several images.
        half (bool): autocast to float16 on CUDA, bfloat16 on the CPU (outputs are
            float32 either way).
        model_color_order (str): channel order the model was trained on; checkpoints
            record it (``"RGB"`` for this library's models).
        optimize (bool): on the CPU, call the model's ``optimize_for_inference()`` where it
            has one (BatchNorm folded into convolutions, fused conv + ReLU, channels-last;
            ``half`` becomes its bfloat16 mode). The model becomes inference-only.
    """

    def __init__(
        self,
        model: nn.Module,
        class_names: list[str],
        device: str | torch.device = "cpu",
        score_thresh: float | None = None,
        batch_size: int = 1,
        half: bool = False,
        model_color_order: str = "RGB",
        optimize: bool = True,
    ):
        num_classes = getattr(model, "num_classes", None)
        if num_classes is not None and len(class_names) != num_classes:
            raise ValueError(
                f"{len(class_names)} class names for a model with num_classes={num_classes}; "
                "give one name per foreground class (label k is class_names[k - 1])"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if model_color_order not in COLOR_ORDERS:
            raise ValueError(f"model_color_order must be 'RGB' or 'BGR', got {model_color_order!r}")
        self.task = getattr(model, "task", "detection")
        if score_thresh is not None and self.task != "detection":
            raise UserInputError(_no_score_thresh(model, score_thresh))
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.class_names = list(class_names)
        self.score_thresh = score_thresh
        self.batch_size = int(batch_size)
        self.half = bool(half)
        self.model_color_order = model_color_order
        # The optimized CPU model runs its own bfloat16 autocast (only where that is safe).
        self.optimized = bool(optimize and self.device.type == "cpu" and hasattr(self.model, "optimize_for_inference"))
        if self.optimized:
            self.model.optimize_for_inference(channels_last=True, bf16=self.half)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        score_thresh: float | None = None,
        **kwargs,
    ) -> "Predictor":
        """Build the model from a checkpoint alone: ``config["model"]`` rebuilds it, the
        evaluation weights (EMA when the run kept one) fill it, and ``class_names`` and
        ``color_order`` come from the same file. Other keyword arguments go to
        :class:`Predictor` (``batch_size``, ``half``, ``optimize``).

        ``score_thresh`` defaults to the family's ``default_predict_score_thresh`` (YOLOv1:
        0.2, as the paper's demo) or, where that is ``None``, the model's own
        ``score_thresh`` (Faster R-CNN: 0.05). When it is below the threshold the built
        model applies, the model's ``score_thresh`` is lowered to it so that those
        detections exist to be returned.
        """
        from detect.export.runtime import is_exported_file

        if is_exported_file(path):  # an .onnx file or our TorchScript archive
            return cls.from_exported(path, device=device, score_thresh=score_thresh, **kwargs)
        from detect.engine.checkpoint import CheckpointError, inference_state_dict, load_checkpoint
        from detect.modeling.registry import build_detector

        payload = load_checkpoint(path)
        config = payload.get("config") or {}
        model_config = dict(config.get("model") or {})
        if "name" not in model_config:
            raise CheckpointError(
                f"checkpoint {path}: its config has no 'model' section with a 'name'; it cannot rebuild the "
                "model (write checkpoints with detect.engine, which stores the resolved config)"
            )
        class_names = payload.get("class_names") or (config.get("data") or {}).get("class_names")
        if not class_names:
            raise CheckpointError(f"checkpoint {path}: no 'class_names'; the detections could not be named")
        box_format = payload.get("box_format", "xyxy")
        if box_format != "xyxy":
            raise CheckpointError(f"checkpoint {path}: box_format {box_format!r}; this library writes 'xyxy'")
        model = build_detector(**model_config)
        if score_thresh is not None and getattr(model, "task", "detection") != "detection":
            raise UserInputError(_no_score_thresh(model, score_thresh))
        if score_thresh is None:
            score_thresh = getattr(model, "default_predict_score_thresh", None)
        if score_thresh is not None and score_thresh < model.score_thresh:
            model.score_thresh = score_thresh  # so that the detections asked for exist to be returned
        try:
            model.load_state_dict(inference_state_dict(payload))
        except RuntimeError as error:
            raise CheckpointError(
                f"checkpoint {path}: its weights do not fit the model its config builds "
                f"({str(error).splitlines()[0]}); was the file edited or written by another library version?"
            ) from error
        return cls(
            model,
            list(class_names),
            device=device,
            score_thresh=score_thresh,
            model_color_order=payload.get("color_order", "RGB"),
            **kwargs,
        )

    @classmethod
    def from_exported(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        score_thresh: float | None = None,
        num_threads: int | None = None,
        **kwargs,
    ) -> "Predictor":
        """Serve a file written by ``tools/export.py`` (``.onnx`` on ONNX Runtime, or a
        TorchScript archive) with the same call, inputs and outputs as a PyTorch model: class
        names, colour order and thresholds come from the file's metadata, and no model code
        runs (:class:`detect.export.runtime.ExportedModel`). ``score_thresh`` defaults as in
        :meth:`from_checkpoint`; it cannot go below the threshold baked into the graph
        (re-export with ``--score-thresh`` for that). ``half`` is not available; ``optimize``
        is ignored (the graph is what it is)."""
        from detect.export.runtime import ExportedModel

        if kwargs.pop("half", False):
            raise UserInputError(f"{path}: half precision is not available for an exported model; leave --half out")
        kwargs.pop("optimize", None)
        model = ExportedModel(path, num_threads=num_threads)
        if score_thresh is None and model.task == "detection":
            score_thresh = model.default_predict_score_thresh
        baked = model.score_thresh
        if score_thresh is not None and baked is not None and score_thresh < baked:
            raise UserInputError(
                f"{path}: score_thresh {score_thresh} is below the {baked} exported into the graph; "
                f"re-export with tools/export.py --score-thresh {score_thresh}"
            )
        return cls(model, model.class_names, device=device, score_thresh=score_thresh,
                   model_color_order=model.color_order, optimize=False, **kwargs)

    # ------------------------------------------------------------------ inputs
    def to_tensor(self, item, color_order: str | None = None, index: int = 0) -> Tensor:
        """One input as a ``Tensor[3, H, W]`` float RGB 0..1 (see the module docstring)."""
        if _is_path(item):
            return to_tensor(read_image(item))
        if isinstance(item, np.ndarray):
            if color_order is None:
                raise ValueError(
                    f"input {index}: a numpy array needs color_order='RGB' or 'BGR' (OpenCV arrays are BGR, "
                    "PIL and matplotlib arrays RGB); pass it explicitly, e.g. predictor(frame, color_order='BGR')"
                )
            if item.ndim != 3 or item.shape[2] != 3:
                raise ValueError(f"input {index}: expected an [H, W, 3] array, got shape {item.shape}")
            if item.dtype != np.uint8:
                raise ValueError(
                    f"input {index}: expected uint8 pixels 0..255, got {item.dtype}; convert with "
                    "(array * 255).round().astype(np.uint8) for 0..1 floats"
                )
            return to_tensor(convert_color(item, color_order, "RGB"))
        if isinstance(item, Tensor):
            if item.dim() != 3 or item.shape[0] != 3:
                raise ValueError(f"input {index}: expected a Tensor[3, H, W] (RGB, channels first), got {tuple(item.shape)}")
            if not item.is_floating_point():
                raise ValueError(f"input {index}: expected a float tensor in 0..1, got {item.dtype}; divide by 255")
            if item.numel() and (item.min() < 0 or item.max() > 1):
                raise ValueError(
                    f"input {index}: tensor values must lie in 0..1, got {float(item.min()):.3g}..{float(item.max()):.3g}"
                )
            # Contiguous like read_image's tensors, so a permuted view gives bit-identical results.
            return item.contiguous()
        raise TypeError(
            f"input {index}: expected a path, a numpy [H, W, 3] uint8 array or a Tensor[3, H, W], "
            f"got {type(item).__name__}"
        )

    # ----------------------------------------------------------------- running
    def __call__(self, inputs, color_order: str | None = None, batch_size: int | None = None):
        """Detections for one input (a dict) or several (a list of dicts, same order)."""
        if color_order is not None and color_order not in COLOR_ORDERS:
            raise ValueError(f"color_order must be 'RGB' or 'BGR', got {color_order!r}")
        if not _is_batch(inputs):
            return self.predict_tensors([self.to_tensor(inputs, color_order)])[0]
        if isinstance(inputs, np.ndarray) and color_order is None:
            raise ValueError("a numpy batch [N, H, W, 3] needs color_order='RGB' or 'BGR'")
        return list(self.iter_predictions(inputs, color_order, batch_size))

    def iter_predictions(self, inputs: Iterable, color_order: str | None = None, batch_size: int | None = None) -> Iterator[dict]:
        """Detections one image at a time, decoding only ``batch_size`` inputs ahead."""
        batch_size = batch_size or self.batch_size
        batch: list[Tensor] = []
        for index, item in enumerate(inputs):
            batch.append(self.to_tensor(item, color_order, index))
            if len(batch) == batch_size:
                yield from self.predict_tensors(batch)
                batch = []
        if batch:
            yield from self.predict_tensors(batch)

    def _autocast(self):
        if not self.half or self.optimized:
            return autocast(None, self.device)
        return autocast("fp16" if self.device.type == "cuda" else "bf16", self.device)

    # no_grad rather than inference_mode: a model that caches tensors (anchors) may be
    # trained again afterwards, and inference tensors cannot enter autograd.
    @torch.no_grad()
    def predict_tensors(self, images: list[Tensor]) -> list[dict]:
        """One forward pass over RGB float tensors; returns named CPU detections."""
        images = [image.to(self.device, non_blocking=True) for image in images]
        if self.model_color_order == "BGR":
            images = [image.flip(0) for image in images]
        with self._autocast():
            outputs = self.model.predict(images)
        return [self._finish(output) for output in outputs]

    def _finish(self, output: dict) -> dict:
        if "sem_seg" in output:
            return self._finish_segmentation(output)
        boxes = output["boxes"].float().cpu()
        scores = output["scores"].float().cpu()
        labels = output["labels"].to(torch.int64).cpu()
        keep = torch.argsort(scores, descending=True, stable=True)
        if self.score_thresh is not None:
            keep = keep[scores[keep] >= self.score_thresh]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        bad = (labels < 1) | (labels > len(self.class_names))
        if bad.any():
            raise ValueError(
                f"the model returned label {int(labels[bad][0])} outside 1..{len(self.class_names)}; "
                "does the class list match the model?"
            )
        names = [self.class_names[k - 1] for k in labels.tolist()]
        return {"boxes": boxes, "scores": scores, "labels": labels, "class_names": names}

    def _finish_segmentation(self, output: dict) -> dict:
        logits = output["sem_seg"]
        if logits.dim() != 3 or logits.shape[0] != len(self.class_names) + 1:
            raise ValueError(
                f"the model returned sem_seg of shape {tuple(logits.shape)}; expected "
                f"[{len(self.class_names) + 1}, H, W] (background + {len(self.class_names)} classes): does the class list match the model?"
            )
        label_map = logits.argmax(dim=0).to(torch.int64).cpu()  # on the model's device: moves H*W, not C*H*W
        return {"sem_seg": logits.float().cpu(), "label_map": label_map,
                "class_names": ["background", *self.class_names]}


def _no_score_thresh(model, value) -> str:
    return (f"score_thresh={value} (--score-thresh) filters detections, but {type(model).__name__} is a semantic "
            "segmentation model that labels every pixel; leave it unset")


def detections_to_json(detections: dict) -> list[dict]:
    """Plain-data form of one image's detections: ``[{box, score, label, class_name}]``."""
    return [
        {"box": [round(v, 2) for v in box], "score": round(score, 5), "label": label, "class_name": name}
        for box, score, label, name in zip(
            detections["boxes"].tolist(), detections["scores"].tolist(), detections["labels"].tolist(),
            detections["class_names"],
        )
    ]


__all__ = ["Predictor", "detections_to_json", "resolve_device"]
