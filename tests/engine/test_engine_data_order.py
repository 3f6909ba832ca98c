"""The epoch's batch order depends on (seed, epoch) only and can start at any batch."""
import pytest
import torch
from torch.utils.data import DataLoader

from detect.data.build import build_dataloader
from detect.engine.data_order import iterate_epoch
from engine_standins import TinyDataset, collate


def image_ids(batches):
    return [[t["image_id"] for t in targets] for _, targets in batches]


@pytest.mark.parametrize("kind", ["detect.data", "torch RandomSampler"])
def test_order_is_a_function_of_seed_and_epoch_and_resumable(kind):
    dataset = TinyDataset(10, augment=False)
    if kind == "detect.data":
        loader = build_dataloader(dataset, batch_size=3, train=True, seed=0, aspect_ratio_grouping=False)
    else:  # draws its permutation from the global RNG
        loader = DataLoader(dataset, batch_size=3, shuffle=True, collate_fn=collate)
    torch.manual_seed(1)
    epoch3 = image_ids(iterate_epoch(loader, epoch=3, seed=7))
    rng_after = torch.get_rng_state()
    torch.manual_seed(2)  # another global RNG state: same order
    assert image_ids(iterate_epoch(loader, epoch=3, seed=7)) == epoch3
    assert image_ids(iterate_epoch(loader, epoch=3, seed=7, start_batch=2)) == epoch3[2:]
    assert image_ids(iterate_epoch(loader, epoch=4, seed=7)) != epoch3
    assert sorted(sum(epoch3, [])) == list(range(100, 110)) and [len(b) for b in epoch3] == [3, 3, 3, 1]
    # listing and loading batches leaves the global RNG alone
    torch.manual_seed(1)
    image_ids(iterate_epoch(loader, epoch=3, seed=7, start_batch=1))
    assert torch.equal(torch.get_rng_state(), rng_after)
