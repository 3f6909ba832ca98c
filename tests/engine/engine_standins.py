"""Tiny stand-ins for the engine tests: a detector, an in-memory dataset, a loader builder.

They follow the public contracts (docs/ABSTRACTIONS.md) so the engine is tested exactly
as it talks to the real parts, in milliseconds:

- :class:`TinyDetector` subclasses :class:`detect.modeling.base.Detector`: one conv, pooling and
  two linear heads (class of the first object, its box); dropout in training so that the
  resume tests depend on the RNG being restored.
- :class:`TinyDataset` draws one coloured rectangle per image (every 5th image is empty)
  and flips at random with the global torch RNG, so restored RNG states matter there too.
- :func:`standin_build_dataloader` has the signature of ``detect.data.build.build_dataloader``
  and a fixed order on request (sequential for the DDP comparison).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from detect.modeling.base import Detector

COLOURS = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9]])


class TinyDetector(Detector):
    class_specific_prefixes = ("cls_score.",)  # its shape depends on K: --weights re-initialises it

    def __init__(self, num_classes: int = 2, hidden: int = 8, dropout: float = 0.1, norm: str | None = "bn"):
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(3, hidden, 3, padding=1)
        self.norm = nn.BatchNorm2d(hidden) if norm == "bn" else nn.GroupNorm(2, hidden) if norm == "gn" else nn.Identity()
        self.dropout = dropout
        self.cls_score = nn.Linear(hidden, num_classes + 1)
        self.bbox_pred = nn.Linear(hidden, 4)

    def _features(self, images):
        x = torch.stack(images)
        x = F.relu(self.norm(self.conv(x)))
        x = x.mean(dim=(2, 3))
        return F.dropout(x, self.dropout, self.training)

    def _compute_losses(self, images, targets):
        feats = self._features(images)
        logits = self.cls_score(feats)
        boxes = torch.sigmoid(self.bbox_pred(feats))
        height, width = images[0].shape[-2:]
        scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=feats.device)
        has_object = torch.tensor([len(t["labels"]) > 0 for t in targets], device=feats.device)
        labels = torch.stack([t["labels"][0] if len(t["labels"]) else t["labels"].new_zeros(()) for t in targets])
        gt = torch.stack([t["boxes"][0] / scale if len(t["labels"]) else scale.new_zeros(4) for t in targets])
        loss_box = (F.smooth_l1_loss(boxes, gt, reduction="none").sum(1) * has_object).sum() / len(images)
        return {"loss_cls": F.cross_entropy(logits, labels), "loss_box": loss_box}

    def _compute_predictions(self, images):
        feats = self._features(images)
        probs = F.softmax(self.cls_score(feats), dim=1)[:, 1:]
        scores, labels = probs.max(dim=1)
        raw = torch.sigmoid(self.bbox_pred(feats))
        xy1 = torch.minimum(raw[:, :2], raw[:, 2:])
        xy2 = torch.maximum(raw[:, :2], raw[:, 2:]) + 1e-3
        outputs = []
        for image, lo, hi, score, label in zip(images, xy1, xy2, scores, labels):
            height, width = image.shape[-2:]
            scale = lo.new_tensor([width, height])
            outputs.append({"boxes": torch.cat([lo * scale, hi * scale])[None], "scores": score[None],
                            "labels": (label + 1)[None]})
        return outputs


def build_tiny_detector(**kwargs):
    return TinyDetector(**kwargs)


class TinyDataset(torch.utils.data.Dataset):
    """``n`` images of ``size`` x ``size``, image ids 100 + index."""

    def __init__(self, n: int = 16, size: int = 16, num_classes: int = 2, seed: int = 0, augment: bool = True,
                 nan_indices=()):
        g = torch.Generator().manual_seed(seed)
        self.size = size
        self.augment = augment
        self.nan_indices = set(nan_indices)
        self.class_names = ["red", "green", "blue"][:num_classes]
        self.label_to_category_id = {k: k for k in range(1, num_classes + 1)}
        self.category_id_to_label = dict(self.label_to_category_id)
        self.image_ids = [100 + i for i in range(n)]
        self.images, self.boxes, self.labels = [], [], []
        for i in range(n):
            image = torch.rand(3, size, size, generator=g) * 0.2
            if i % 5 == 4:
                boxes, labels = torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
            else:
                label = int(torch.randint(1, num_classes + 1, (1,), generator=g))
                x1, y1 = (int(v) for v in torch.randint(0, size // 2, (2,), generator=g))
                w, h = (int(v) for v in torch.randint(size // 4, size // 2, (2,), generator=g))
                image[:, y1:y1 + h, x1:x1 + w] = COLOURS[label - 1][:, None, None]
                boxes = torch.tensor([[x1, y1, x1 + w, y1 + h]], dtype=torch.float32)
                labels = torch.tensor([label])
            self.images.append(image)
            self.boxes.append(boxes)
            self.labels.append(labels)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image, boxes = self.images[i].clone(), self.boxes[i].clone()
        if i in self.nan_indices:
            image.fill_(float("nan"))
        if self.augment and bool(torch.rand(()) < 0.5):
            image = image.flip(-1)
            boxes = torch.stack([self.size - boxes[:, 2], boxes[:, 1], self.size - boxes[:, 0], boxes[:, 3]], dim=1)
        return image, {"boxes": boxes, "labels": self.labels[i].clone(), "image_id": self.image_ids[i],
                       "orig_size": torch.tensor([self.size, self.size])}

    def get_image_info(self, i):
        return {"file_name": f"{i}.png", "height": self.size, "width": self.size, "image_id": self.image_ids[i]}

    def get_ground_truth(self, i):
        n = len(self.labels[i])
        return {"boxes": self.boxes[i].clone(), "labels": self.labels[i].clone(), "image_id": self.image_ids[i],
                "difficult": torch.zeros(n, dtype=torch.bool)}


def collate(batch):
    return [item[0] for item in batch], [item[1] for item in batch]


def standin_build_dataset(data_cfg, split):
    """``data = dict(format="standin", train=dict(n=16, seed=0, ...), val=dict(...))``: TinyDataset kwargs."""
    return TinyDataset(**data_cfg[split])


def standin_build_dataloader(dataset, *, batch_size, train, num_workers=0, seed=0, distributed=False,
                             aspect_ratio_grouping=True, shuffle=None):
    shuffle = train if shuffle is None else shuffle
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed)
    else:
        sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=num_workers)


def tiny_config(output_dir, **train_changes):
    """A resolved-config-shaped dict for the stand-ins (model built through the registry)."""
    train = dict(epochs=2, seed=0, deterministic=True, device="cpu", progress_bar=False, tensorboard=False,
                 plots=False, log_interval=2,
                 optimizer=dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4),
                 scheduler=dict(name="multistep", milestones=(1,), gamma=0.1, warmup_iters=2, warmup_factor=0.1))
    train.update(train_changes)
    return dict(
        model=dict(name="tiny_test_detector", num_classes=2, hidden=8),
        data=dict(format="standin", train=dict(n=16, seed=0), val=dict(n=8, seed=1, augment=False),
                  batch_size=4, num_workers=0, aspect_ratio_grouping=True),
        train=train,
        eval=dict(metric="voc_area", interval=1, best_metric="bbox/AP50"),
        output_dir=str(output_dir),
    )


def install(shuffle=None):
    """Make ``detect.engine.launch`` build the stand-in datasets: for config files run by
    tools/train.py in a subprocess (the tests' own processes use the ``standins`` fixture).
    ``shuffle=None`` keeps detect.data's loader; True/False use the plain stand-in loader
    with that order (the DDP test needs the same images in a global batch either way)."""
    import functools

    import detect.engine.launch as launch
    from detect.modeling.registry import list_detectors, register_detector

    if "tiny_test_detector" not in list_detectors():
        register_detector("tiny_test_detector", build_tiny_detector)
    launch.build_dataset = standin_build_dataset
    if shuffle is not None:
        launch.build_dataloader = functools.partial(standin_build_dataloader, shuffle=shuffle)


class SimulatedKill(BaseException):
    """A SIGKILL: nothing runs after it (unlike Ctrl+C, which saves a checkpoint)."""


def kill_training_at(monkeypatch, iteration: int):
    """Make ``Trainer.run_step`` raise :class:`SimulatedKill` when it reaches ``iteration``;
    returns a function that puts the real step back (for the resume that follows)."""
    from detect.engine.trainer import Trainer

    real_step = Trainer.run_step

    def killed(self, images, targets):
        if self.iteration == iteration:
            raise SimulatedKill()
        return real_step(self, images, targets)

    monkeypatch.setattr(Trainer, "run_step", killed)
    return lambda: monkeypatch.setattr(Trainer, "run_step", real_step)
