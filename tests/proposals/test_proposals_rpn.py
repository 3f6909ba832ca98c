"""--method rpn: a Faster R-CNN's RPN proposals written as a proposal file (seeded random weights)."""
import pytest
import torch

from detect import build_detector
from detect.data.build import build_dataset
from detect.data.image_io import read_image, to_tensor
from detect.errors import UserInputError
from detect.proposals.files import load_proposals
from detect.proposals.make import RPNProposer, make_proposals


def _model():
    torch.manual_seed(0)
    return build_detector("faster_rcnn", backbone="resnet18", fpn=True, num_classes=3, fpn_channels=32,
                          min_size=96, max_size=96, rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=50,
                          box_representation_size=64)


def test_rpn_proposals_file_matches_propose(shapes_data_cfg, tmp_path):
    dataset = build_dataset(dict(shapes_data_cfg, transforms=dict(val="eval")), "val")
    model = _model()
    output = tmp_path / "rpn.pth"
    result = make_proposals(dataset, output, RPNProposer(model, max_proposals=40), method="rpn",
                            params={"max_proposals": 40}, workers=0, batch_size=2, progress=False)
    loaded = load_proposals(output)
    assert loaded.image_ids == dataset.image_ids and loaded.scores is not None
    images = [to_tensor(read_image(dataset.get_image_info(i)["file_name"])) for i in range(len(dataset))]
    boxes, scores = model.propose(images)
    for i in range(len(dataset)):
        torch.testing.assert_close(loaded.boxes[i], boxes[i][:40])
        torch.testing.assert_close(loaded.scores[i], scores[i][:40])
        assert len(loaded.boxes[i]) <= 40
        assert (loaded.scores[i][:-1] >= loaded.scores[i][1:]).all()  # best first
        h, w = images[i].shape[-2:]
        assert (loaded.boxes[i][:, 0::2] <= w).all() and (loaded.boxes[i][:, 1::2] <= h).all()
    assert result.method == "rpn"


def test_rpn_needs_a_two_stage_model():
    with pytest.raises(UserInputError, match="region proposal network"):
        RPNProposer(torch.nn.Linear(2, 2))
