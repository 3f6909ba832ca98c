"""tools/make_proposals.py end to end on a tiny shapes set: make, interrupt, resume, recall."""
import sys
from pathlib import Path

import pytest
import torch

from detect.proposals.files import load_proposals
from detect.proposals.make import partial_path
from detect.proposals.selective_search import SelectiveSearch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import make_proposals as tool  # noqa: E402


@pytest.fixture
def config_file(shapes_data_cfg, tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text(f"config = dict(data={shapes_data_cfg!r})\n")
    return path


def test_interrupted_tool_run_continues(config_file, tmp_path, monkeypatch, capsys):
    output = tmp_path / "train_ss.pth"
    seen = []
    original = SelectiveSearch.__call__

    def counting(self, image):
        if len(seen) == 3 and not getattr(counting, "resumed", False):
            raise KeyboardInterrupt  # Ctrl+C after three images
        seen.append(float(image.mean()))
        return original(self, image)

    monkeypatch.setattr(SelectiveSearch, "__call__", counting)
    argv = [str(config_file), "--split", "train", "--workers", "0", "--save-every", "2", "--output", str(output)]
    with pytest.raises(SystemExit) as info:
        tool.main(argv)
    assert info.value.code == 130
    assert not output.exists() and len(torch.load(partial_path(output), weights_only=True)["image_ids"]) == 3
    counting.resumed = True
    result = tool.main(argv)
    assert len(seen) == 6 and len(set(seen)) == 6  # six training images, each computed once
    out = capsys.readouterr().out
    assert "R@100 IoU0.5" in out and result["images"] == 6
    loaded = load_proposals(output)
    monkeypatch.setattr(SelectiveSearch, "__call__", original)
    # Identical to an uninterrupted run (the search is deterministic per image).
    again = tool.main(argv[:-1] + [str(tmp_path / "again.pth"), "--no-recall"])
    assert again["images"] == 6
    for a, b in zip(loaded.boxes, load_proposals(tmp_path / "again.pth").boxes):
        assert torch.equal(a, b)
    assert loaded.method == "selective_search" and loaded.params["ks"] == [50, 100]
    # A finished file stays unless --overwrite.
    with pytest.raises(SystemExit) as info:
        tool.main(argv)
    assert info.value.code == 2 and "--overwrite" in capsys.readouterr().err
    # --recall on the existing file prints the table and computes nothing.
    result = tool.main([str(config_file), "--split", "train", "--recall", "--output", str(output)])
    assert set(result["recall"]) == {"train_ss.pth"}
    assert 0.0 <= result["recall"]["train_ss.pth"]["recall@100/iou0.5"] <= 1.0


@pytest.mark.slow
def test_worker_processes_with_selective_search(config_file, tmp_path):
    from detect.config import load_config
    from detect.data.image_io import read_image
    from detect.proposals.tool import split_dataset_for_proposals

    output = tmp_path / "val_ss.pth"
    result = tool.main([str(config_file), "--split", "val", "--workers", "2", "--output", str(output),
                        "--no-progress"])
    loaded = load_proposals(output)
    assert result["workers"] == 2 and len(loaded) == 2
    dataset = split_dataset_for_proposals(load_config(str(config_file))["data"], "val")
    assert loaded.image_ids == dataset.image_ids
    # Worker results equal an in-process search of the same files.
    direct = SelectiveSearch()
    for i, boxes in enumerate(loaded.boxes):
        assert torch.equal(direct(read_image(dataset.get_image_info(i)["file_name"])), boxes)
