"""Proposal files: round trip with weights_only=True, validation, lookup by image id."""
import argparse
import pickle

import pytest
import torch

from detect.errors import UserInputError
from detect.proposals.files import FORMAT, ProposalFileError, ProposalSet, load_proposals, save_proposals


def _example():
    boxes = [torch.tensor([[0.0, 1.0, 10.0, 12.0], [2.5, 3.5, 4.5, 9.0]]), torch.zeros(0, 4),
             torch.tensor([[5.0, 5.0, 6.0, 7.0]])]
    scores = [torch.tensor([0.9, 0.2]), torch.zeros(0), torch.tensor([0.5])]
    return ProposalSet([7, 0, 42], boxes, scores, "selective_search", {"ks": [50, 100], "sigma": 0.8},
                       file_names=["a/x.jpg", "y.jpg", "z.png"])


def test_round_trip_weights_only(tmp_path):
    path = save_proposals(tmp_path / "p.pth", _example())
    raw = torch.load(path, weights_only=True)  # plain data and tensors only
    assert raw["format"] == FORMAT == "detect.proposals/1"
    assert raw["image_ids"] == [7, 0, 42] and raw["method"] == "selective_search"
    assert raw["params"] == {"ks": [50, 100], "sigma": 0.8}
    assert raw["file_names"] == ["x.jpg", "y.jpg", "z.png"]
    loaded = load_proposals(path)
    original = _example()
    for image_id in (7, 0, 42):
        assert torch.equal(loaded.get(image_id), original.get(image_id))
        assert loaded.get(image_id).dtype == torch.float32
        assert torch.equal(loaded.get_scores(image_id), original.get_scores(image_id))
    assert loaded.get(0).shape == (0, 4)
    assert loaded.source == str(path) and len(loaded) == 3 and 42 in loaded and 3 not in loaded
    assert loaded.num_boxes().tolist() == [2, 0, 1]


def test_save_from_fields_without_scores(tmp_path):
    path = save_proposals(tmp_path / "q.pth", image_ids=[1], boxes=[[[1, 2, 3, 4]]], method="rpn")
    loaded = load_proposals(path)
    assert loaded.scores is None and loaded.get_scores(1) is None
    assert loaded.get(1).tolist() == [[1.0, 2.0, 3.0, 4.0]]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary file


def test_missing_image_id_names_id_and_file(tmp_path):
    path = save_proposals(tmp_path / "p.pth", _example())
    loaded = load_proposals(path)
    with pytest.raises(UserInputError, match=r"no proposals for image id 5 .*") as info:
        loaded.get(5)
    assert str(path) in str(info.value)
    with pytest.raises(ProposalFileError, match=r"2 image id\(s\).*\[1, 3\]") as info:
        loaded.require([0, 1, 3, 7])
    assert str(path) in str(info.value)


def test_top_k_keeps_the_first(tmp_path):
    top = _example().top(1)
    assert top.get(7).tolist() == [[0.0, 1.0, 10.0, 12.0]] and top.get_scores(7).tolist() == [pytest.approx(0.9)]
    assert top.get(0).shape == (0, 4) and top.params["top_k"] == 1


def test_file_names_guard_another_split():
    ps = _example()
    ps.check_file_names([7, 0], ["/data/x.jpg", "/other/y.jpg"])  # basenames agree
    with pytest.raises(ProposalFileError, match=r"image id 0 is y.jpg there but /d/w.jpg"):
        ps.check_file_names([7, 0], ["/data/x.jpg", "/d/w.jpg"])


@pytest.mark.parametrize("boxes, message", [
    ([torch.tensor([[0.0, 0.0, 1.0]])], r"\[P, 4\]"),
    ([torch.tensor([[5.0, 0.0, 1.0, 1.0]])], r"image id 3: box 0 .* x2 < x1"),
    ([torch.tensor([[0.0, 0.0, float("nan"), 1.0]])], r"NaN"),
])
def test_bad_boxes_raise(boxes, message):
    with pytest.raises(ProposalFileError, match=message):
        ProposalSet([3], boxes)


def test_duplicate_ids_and_length_mismatch_raise():
    with pytest.raises(ProposalFileError, match="image id 1 appears twice"):
        ProposalSet([1, 1], [torch.zeros(0, 4)] * 2)
    with pytest.raises(ProposalFileError, match="2 boxes but 1 scores"):
        ProposalSet([1], [torch.zeros(2, 4)], [torch.zeros(1)])


def test_pickle_in_the_proposal_path_is_refused(tmp_path):
    path = tmp_path / "d2.pkl"
    with open(path, "wb") as f:
        pickle.dump({"ids": [1], "boxes": [[[0, 0, 1, 1]]]}, f)
    with pytest.raises(UserInputError, match=r"pickle.*--allow-pickle") as info:
        load_proposals(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_zip_with_code_is_refused_and_foreign_dict_too(tmp_path):
    # A class outside weights_only's allow-list: loading it would mean running its unpickling code.
    torch.save({"format": FORMAT, "x": argparse.Namespace(a=1)}, tmp_path / "evil.pth")
    with pytest.raises(UserInputError, match="weights_only=True"):
        load_proposals(tmp_path / "evil.pth")
    torch.save({"boxes": []}, tmp_path / "other.pth")
    with pytest.raises(UserInputError, match="not in the format 'detect.proposals/1'"):
        load_proposals(tmp_path / "other.pth")
    with pytest.raises(UserInputError, match="does not exist"):
        load_proposals(tmp_path / "absent.pth")
