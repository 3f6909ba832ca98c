"""collate, aspect-ratio grouping, distributed sharding and deterministic seeding."""
import numpy as np
import pytest
import torch
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from detect.data import CocoDetection, GroupedBatchSampler, InferenceSampler, collate
from detect.data.build import build_dataloader
from detect.data.samplers import aspect_ratio_group_ids
from detect.data.transforms import build_transforms


class Sized(Dataset):
    """Items are (tiny image, target) with the given (H, W) in the annotations."""

    def __init__(self, sizes):
        self.image_sizes = np.asarray(sizes)

    def __len__(self):
        return len(self.image_sizes)

    def __getitem__(self, i):
        return torch.full((3, 2, 2), float(i)), {"image_id": i, "noise": torch.rand(()).item()}


def test_collate_keeps_lists():
    batch = [(torch.zeros(3, 4, 5), {"image_id": 1}), (torch.zeros(3, 6, 2), {"image_id": 2})]
    images, targets = collate(batch)
    assert isinstance(images, list) and [im.shape for im in images] == [(3, 4, 5), (3, 6, 2)]
    assert [t["image_id"] for t in targets] == [1, 2]


def test_grouped_batches_exact():
    groups = [0, 1, 0, 0, 1, 1, 0, 1, 0, 0]
    sampler = GroupedBatchSampler(list(range(10)), groups, batch_size=3)
    assert list(sampler) == [[0, 2, 3], [1, 4, 5], [6, 8, 9], [7]] and len(sampler) == 4
    dropping = GroupedBatchSampler(list(range(10)), groups, batch_size=3, drop_last=True)
    assert list(dropping) == [[0, 2, 3], [1, 4, 5], [6, 8, 9]] and len(dropping) == 3
    mixed_tail = GroupedBatchSampler(list(range(8)), [0, 0, 1, 1, 0, 1, 0, 1], batch_size=3)
    assert list(mixed_tail) == [[0, 1, 4], [2, 3, 5], [6, 7]]  # leftovers of both groups share the last batch


def test_group_ids_from_sizes():
    assert aspect_ratio_group_ids(Sized([(10, 20), (20, 10), (5, 5)])).tolist() == [0, 1, 0]


def test_grouping_under_distributed_sampler_same_batch_count_on_every_rank():
    groups = np.random.default_rng(0).integers(0, 2, 23)
    dataset = Sized(np.where(groups[:, None] == 1, [[20, 10]], [[10, 20]]))
    seen, counts = [], []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=5)
        batches = GroupedBatchSampler(sampler, aspect_ratio_group_ids(dataset), batch_size=4)
        batches.set_epoch(3)
        listed = list(batches)
        counts.append((len(listed), len(batches)))
        for batch in listed[:-2]:  # full single-group batches before the leftovers
            assert len(batch) == 4 and len({int(groups[i]) for i in batch}) == 1
        seen += [i for batch in listed for i in batch]
    assert counts[0] == counts[1] == (3, 3)
    assert sorted(set(seen)) == list(range(23)) and len(seen) == 24  # DistributedSampler pads one


def test_inference_sampler_shards_exactly():
    shards = [list(InferenceSampler(10, rank, 3)) for rank in range(3)]
    assert shards == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    assert sum(len(InferenceSampler(10, r, 3)) for r in range(3)) == 10
    with pytest.raises(ValueError):
        InferenceSampler(10, 3, 3)


def _batches(loader):
    return [(torch.stack([im.flatten()[:50] for im in images]), [t["image_id"] for t in targets])
            for images, targets in loader]


def test_order_is_a_function_of_seed_and_epoch():
    dataset = Sized([(10, 20)] * 9 + [(20, 10)] * 8)
    a = build_dataloader(dataset, batch_size=4, train=True, seed=1)
    first, second = [ids for _, ids in _batches(a)], [ids for _, ids in _batches(a)]
    assert first != second and a.epoch == 1  # each new iteration is the next epoch
    b = build_dataloader(dataset, batch_size=4, train=True, seed=1)
    b.set_epoch(1)
    assert [ids for _, ids in _batches(b)] == second  # resumable: epoch 1 without epoch 0
    c = build_dataloader(dataset, batch_size=4, train=True, seed=2)
    assert [ids for _, ids in _batches(c)] != first
    for ids in first:
        assert len({dataset.image_sizes[i][1] > dataset.image_sizes[i][0] for i in ids}) == 1 or len(ids) < 4
    # The engine reads the batch sampler directly after set_epoch: same order.
    a.batch_sampler.set_epoch(1)
    assert [list(map(int, ids)) for ids in a.batch_sampler] == second
    assert sorted(i for ids in first for i in ids) == list(range(17))


def test_eval_loader_keeps_order():
    dataset = Sized([(10, 20)] * 5)
    loader = build_dataloader(dataset, batch_size=2, train=False)
    assert [ids for _, ids in _batches(loader)] == [[0, 1], [2, 3], [4]]


def test_worker_augmentation_is_a_function_of_seed_and_epoch(shapes_root):
    dataset = CocoDetection(shapes_root / "JPEGImages", shapes_root / "annotations" / "instances_train.json",
                            transforms=build_transforms("train"))

    def run(seed, epoch):
        loader = build_dataloader(dataset, batch_size=3, train=True, num_workers=2, seed=seed)
        loader.set_epoch(epoch)
        return _batches(loader)

    first, again, later = run(0, 0), run(0, 0), run(0, 1)
    assert all(torch.equal(x, y) and i == j for (x, i), (y, j) in zip(first, again))
    assert [i for _, i in first] != [i for _, i in later]
    # the same image in two epochs is augmented differently
    pixels = {}
    for run_batches in (first, later):
        for images, ids in run_batches:
            for row, image_id in zip(images, ids):
                pixels.setdefault(image_id, []).append(row)
    assert any(not torch.equal(*rows) for rows in pixels.values())
    with pytest.raises(RuntimeError, match="torch.distributed initialised"):
        build_dataloader(dataset, batch_size=2, train=True, distributed=True)


def test_workers_do_not_repeat_each_other(shapes_root, tmp_path):
    import shutil

    from data_fixtures import write_voc
    from detect.data import VOCDetection

    write_voc(tmp_path, {f"same{i}": (96, 96, [("circle", 10, 10, 60, 60, 0)]) for i in range(4)})
    for i in range(4):  # four copies of one textured image
        shutil.copy(shapes_root / "JPEGImages" / "000001.jpg", tmp_path / "JPEGImages" / f"same{i}.jpg")
    dataset = VOCDetection(tmp_path, "train", class_names=["circle"],
                           transforms=build_transforms(dict(name="train", flip=0.0)))
    loader = build_dataloader(dataset, batch_size=1, train=True, num_workers=2, seed=0, aspect_ratio_grouping=False)
    rows = [row for images, _ in _batches(loader) for row in images]
    assert len(rows) == 4 and all(not torch.equal(rows[0], r) for r in rows[1:])
