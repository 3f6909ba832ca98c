"""Datasets serving target["proposals"]: lookup by image id, alignment through flips and scales."""
import numpy as np
import pytest
import torch

from detect.data.build import build_dataset
from detect.data.transforms import build_transforms
from detect.errors import UserInputError
from detect.proposals.files import ProposalSet, save_proposals

# Boxes added after the ground truth of every image: inside, the whole image, half outside.
EXTRA = torch.tensor([[10.0, 12.0, 40.0, 30.0], [0.0, 0.0, 96.0, 96.0], [80.0, 70.0, 130.0, 120.0]])
NO_COLOUR = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)


def _proposal_file(path, dataset, empty_id=None):
    """Per image: its ground-truth boxes, then EXTRA (an image ``empty_id`` gets none)."""
    ids, boxes = [], []
    for i in range(len(dataset)):
        gt = dataset.get_ground_truth(i)
        ids.append(gt["image_id"])
        boxes.append(torch.zeros(0, 4) if gt["image_id"] == empty_id else torch.cat([gt["boxes"], EXTRA]))
    return save_proposals(path, image_ids=ids, boxes=boxes, method="test")


def _dataset(cfg, transforms, proposal_file):
    cfg = dict(cfg, transforms=dict(train=transforms))
    cfg["train"] = dict(cfg["train"], proposal_file=str(proposal_file))
    return build_dataset(cfg, "train")


def test_eval_items_carry_the_files_boxes_clipped(shapes_data_cfg, tmp_path):
    plain = build_dataset(dict(shapes_data_cfg, transforms=dict(train="eval")), "train")
    path = _proposal_file(tmp_path / "p.pth", plain, empty_id=plain.image_ids[1])
    ds = _dataset(shapes_data_cfg, "eval", path)
    for i in range(len(ds)):
        image, target = ds[i]
        gt = ds.get_ground_truth(i)["boxes"]
        proposals = target["proposals"]
        assert proposals.dtype == torch.float32
        if i == 1:
            assert proposals.shape == (0, 4)  # no proposals is valid
            continue
        expected = torch.cat([gt, EXTRA.clone()])
        expected[-1] = torch.tensor([80.0, 70.0, 96.0, 96.0])  # clipped to the 96 x 96 image
        assert torch.equal(proposals, expected)


def test_flip_mirrors_proposals_like_boxes(shapes_data_cfg, tmp_path):
    plain = build_dataset(dict(shapes_data_cfg, transforms=dict(train="eval")), "train")
    path = _proposal_file(tmp_path / "p.pth", plain)
    ds = _dataset(shapes_data_cfg, dict(name="train", flip=1.0, scale=1.0, **NO_COLOUR), path)
    for i in range(len(ds)):
        image, target = ds[i]
        width = image.shape[-1]
        n = len(target["boxes"])
        assert n == len(ds.get_ground_truth(i)["boxes"])
        # The ground-truth copies among the proposals land exactly where the boxes do ...
        assert torch.equal(target["proposals"][:n], target["boxes"])
        # ... and every proposal is mirrored: x1' = W - x2, x2' = W - x1, y unchanged.
        original = torch.cat([ds.get_ground_truth(i)["boxes"], EXTRA])
        original[-1] = torch.tensor([80.0, 70.0, 96.0, 96.0])
        mirrored = torch.stack([width - original[:, 2], original[:, 1], width - original[:, 0], original[:, 3]], 1)
        torch.testing.assert_close(target["proposals"], mirrored, atol=1e-4, rtol=0)


@pytest.mark.parametrize("scale", [0.6, 1.4])
def test_scale_moves_proposals_like_boxes(shapes_data_cfg, tmp_path, scale):
    plain = build_dataset(dict(shapes_data_cfg, transforms=dict(train="eval")), "train")
    path = _proposal_file(tmp_path / "p.pth", plain)
    spec = dict(name="train", flip=0.5, scale=(scale, scale), **NO_COLOUR)
    ds = _dataset(shapes_data_cfg, spec, path)
    reference = build_transforms(spec)
    for i in range(len(ds)):
        torch.manual_seed(100 + i)
        image, target = ds[i]
        # The same transform with the same seed on the proposals given as plain boxes.
        torch.manual_seed(100 + i)
        reference.set_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
        raw = ds.load_image(i)
        boxes = np.concatenate([ds.get_ground_truth(i)["boxes"].numpy(), EXTRA.numpy()])
        boxes[-1] = [80.0, 70.0, 96.0, 96.0]
        _, expected, _, _ = reference(raw, boxes, np.arange(1, len(boxes) + 1), None)
        torch.testing.assert_close(target["proposals"], torch.from_numpy(expected), atol=1e-4, rtol=0)
        n = len(target["boxes"])
        if scale < 1:  # nothing leaves the frame: the gt copies are the boxes, the whole image shrinks
            assert len(target["proposals"]) == n + 3
            assert torch.equal(target["proposals"][:n], target["boxes"])
            whole = target["proposals"][n + 1]
            torch.testing.assert_close((whole[2:] - whole[:2]), torch.tensor([96.0 * scale] * 2), atol=0.51, rtol=0)
        proposals = target["proposals"]
        assert (proposals >= 0).all() and (proposals[:, 0::2] <= image.shape[-1]).all()
        assert (proposals[:, 0::2] <= image.shape[-1]).all() and (proposals[:, 1::2] <= image.shape[-2]).all()
        assert ((proposals[:, 2:] - proposals[:, :2]) >= 1).all()


def test_missing_image_id_raises_at_build(shapes_data_cfg, tmp_path):
    plain = build_dataset(dict(shapes_data_cfg, transforms=dict(train="eval")), "train")
    ids = plain.image_ids
    path = save_proposals(tmp_path / "partial.pth", image_ids=ids[1:], boxes=[torch.zeros(0, 4)] * (len(ids) - 1))
    with pytest.raises(UserInputError, match=rf"\[{ids[0]}\]") as info:
        _dataset(shapes_data_cfg, "eval", path)
    assert str(path) in str(info.value)


def test_attach_proposal_set_and_detach(shapes_data_cfg):
    ds = build_dataset(dict(shapes_data_cfg, transforms=dict(train="eval")), "train")
    ds.attach_proposals(ProposalSet(ds.image_ids, [torch.tensor([[1.0, 2.0, 30.0, 40.0]])] * len(ds)))
    assert ds[0][1]["proposals"].tolist() == [[1.0, 2.0, 30.0, 40.0]]
    ds.attach_proposals(None)
    assert "proposals" not in ds[0][1]
