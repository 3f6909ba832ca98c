"""detectron2 / mmdetection proposal pickles: refused without --allow-pickle, converted with it."""
import pickle

import numpy as np
import pytest
import torch

from detect.errors import UserInputError
from detect.proposals.convert import from_detectron2, read_proposal_pickle
from detect.proposals.files import load_proposals


@pytest.fixture
def detectron2_pickle(tmp_path):
    path = tmp_path / "d2.pkl"
    data = {"ids": [3, 11],
            "boxes": [np.array([[0, 0, 10, 10], [5, 5, 20, 30]], np.float32), np.zeros((0, 4), np.float32)],
            "objectness_logits": [np.array([-1.0, 2.0], np.float32), np.zeros(0, np.float32)],
            "bbox_mode": 0}
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


@pytest.fixture
def mmdet_pickle(tmp_path):
    path = tmp_path / "mm.pkl"
    data = [np.array([[1, 2, 3, 4, 0.1], [2, 2, 9, 9, 0.8]], np.float32), np.array([[0, 0, 5, 5, 0.3]], np.float32)]
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


def test_refused_without_allow_pickle(detectron2_pickle):
    with pytest.raises(UserInputError, match=r"unpickling runs code.*--allow-pickle"):
        read_proposal_pickle(detectron2_pickle)


def test_detectron2_converted_best_first(detectron2_pickle):
    ps = read_proposal_pickle(detectron2_pickle, allow_pickle=True)
    assert ps.method == "detectron2" and ps.image_ids == [3, 11]
    assert ps.get(3).tolist() == [[5.0, 5.0, 20.0, 30.0], [0.0, 0.0, 10.0, 10.0]]  # sorted by objectness
    assert ps.get_scores(3).tolist() == [2.0, -1.0]
    assert ps.get(11).shape == (0, 4)


def test_detectron2_xywh_mode():
    ps = from_detectron2({"ids": [1], "boxes": [np.array([[2, 3, 10, 20]], np.float32)], "bbox_mode": 1})
    assert ps.get(1).tolist() == [[2.0, 3.0, 12.0, 23.0]] and ps.scores is None


def test_mmdetection_needs_the_datasets_ids(mmdet_pickle):
    with pytest.raises(UserInputError, match="hold no image ids"):
        read_proposal_pickle(mmdet_pickle, allow_pickle=True)
    with pytest.raises(UserInputError, match="2 images but the dataset split has 3"):
        read_proposal_pickle(mmdet_pickle, allow_pickle=True, image_ids=[0, 1, 2])
    ps = read_proposal_pickle(mmdet_pickle, allow_pickle=True, image_ids=[10, 20])
    assert ps.method == "mmdetection"
    assert ps.get(10).tolist() == [[2.0, 2.0, 9.0, 9.0], [1.0, 2.0, 3.0, 4.0]]
    assert ps.get_scores(10).tolist() == pytest.approx([0.8, 0.1])
    assert ps.get(20).tolist() == [[0.0, 0.0, 5.0, 5.0]]


def test_tool_refuses_then_converts(detectron2_pickle, tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    import make_proposals as tool

    output = tmp_path / "d2.pth"
    with pytest.raises(SystemExit) as info:
        tool.main(["--convert", str(detectron2_pickle), "--output", str(output)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--allow-pickle" in err[0]
    assert not output.exists()
    tool.main(["--convert", str(detectron2_pickle), "--allow-pickle", "--output", str(output)])
    loaded = load_proposals(output)
    assert loaded.image_ids == [3, 11] and torch.equal(loaded.get(3), torch.tensor([[5.0, 5.0, 20.0, 30.0],
                                                                                      [0.0, 0.0, 10.0, 10.0]]))
    # The converted file is a proposal file; the pickle itself stays refused where a proposal file goes.
    with pytest.raises(UserInputError, match="pickle"):
        load_proposals(detectron2_pickle)


def test_tool_converts_mmdetection_with_the_dataset(mmdet_pickle, shapes_data_cfg, tmp_path, capsys):
    import sys
    from pathlib import Path

    import numpy as np

    from detect.data.build import build_dataset

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    import make_proposals as tool

    val = build_dataset(dict(shapes_data_cfg, transforms=dict(val="eval")), "val")
    assert len(val) == 2
    config = tmp_path / "cfg.py"
    config.write_text(f"config = dict(data={shapes_data_cfg!r})\n")
    output = tmp_path / "mm.pth"
    result = tool.main([str(config), "--split", "val", "--convert", str(mmdet_pickle), "--allow-pickle",
                        "--output", str(output)])
    loaded = load_proposals(output)
    assert loaded.image_ids == val.image_ids
    assert "recall" in result and "R@100 IoU0.5" in capsys.readouterr().out
