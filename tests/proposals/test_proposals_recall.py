"""Recall of a proposal set against the ground truth, on a hand-made case."""
import pytest
import torch

from detect.errors import UserInputError
from detect.proposals.files import ProposalSet
from detect.proposals.recall import format_recall_table, proposal_recall


def _case():
    # Image 1: gt A = [0,0,10,10], gt B = [20,20,40,40].
    #   proposal 0 overlaps A at IoU 0.64 ([0,0,8,8]), proposal 1 matches B exactly,
    #   proposal 2 matches A exactly. Image 2: gt C = [0,0,10,20] and no proposals.
    #   Image 3: no ground truth (does not count), one proposal.
    proposals = ProposalSet(
        [1, 2, 3],
        [torch.tensor([[0.0, 0.0, 8.0, 8.0], [20.0, 20.0, 40.0, 40.0], [0.0, 0.0, 10.0, 10.0]]),
         torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 5.0, 5.0]])])
    ground_truth = {1: torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]]),
                    2: torch.tensor([[0.0, 0.0, 10.0, 20.0]]), 3: torch.zeros(0, 4)}
    return proposals, ground_truth


def test_recall_by_budget_and_iou():
    proposals, gt = _case()
    r = proposal_recall(proposals, gt, top_ks=(1, 2, 3), iou_thresholds=(0.5, 0.7))
    # k=1: A at 0.64 -> hit at 0.5, miss at 0.7; B missed; C missed.
    assert r["recall@1/iou0.5"] == pytest.approx(1 / 3) and r["recall@1/iou0.7"] == 0.0
    # k=2: B found exactly.
    assert r["recall@2/iou0.5"] == pytest.approx(2 / 3) and r["recall@2/iou0.7"] == pytest.approx(1 / 3)
    # k=3: A found exactly as well; C never (its image has no proposals).
    assert r["recall@3/iou0.5"] == pytest.approx(2 / 3) and r["recall@3/iou0.7"] == pytest.approx(2 / 3)
    assert r["num_gt"] == 3 and r["num_images"] == 3 and r["mean_proposals"] == pytest.approx(4 / 3)


def test_default_budgets_beyond_the_proposals_use_them_all():
    proposals, gt = _case()
    r = proposal_recall(proposals, gt)
    assert r["recall@100/iou0.7"] == r["recall@2000/iou0.7"] == pytest.approx(2 / 3)
    table = format_recall_table({"case": r})
    assert table.splitlines()[2].startswith("| case | 1 | 0.667 |")
    assert "R@100 IoU0.5" in table and "R@2000 IoU0.7" in table


def test_dataset_ground_truth_leaves_out_crowd_and_difficult():
    class Tiny:
        def __len__(self):
            return 1

        def get_ground_truth(self, index):
            return {"image_id": 4, "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]]),
                    "iscrowd": torch.tensor([False, False]), "difficult": torch.tensor([False, True])}

    r = proposal_recall(ProposalSet([4], [torch.tensor([[0.0, 0.0, 10.0, 10.0]])]), Tiny(), top_ks=(1,))
    assert r["num_gt"] == 1 and r["recall@1/iou0.5"] == 1.0


def test_image_missing_from_the_proposals_raises():
    proposals, gt = _case()
    with pytest.raises(UserInputError, match="image id 9"):
        proposal_recall(proposals, {**gt, 9: torch.zeros(1, 4)})
