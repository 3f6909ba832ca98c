"""make_proposals: resumable after an interruption, no image computed twice, no silent overwrite."""
import pytest
import torch

from detect.data.build import build_dataset
from detect.errors import UserInputError
from detect.proposals.files import load_proposals
from detect.proposals.make import make_proposals, partial_path
from proposal_fakes import MeanBoxes, computed


@pytest.fixture
def dataset(shapes_data_cfg):
    return build_dataset(dict(shapes_data_cfg, transforms=dict(train="eval")), "train")


def test_interrupted_run_resumes_without_recomputing(dataset, tmp_path):
    n = len(dataset)
    output = tmp_path / "p.pth"
    with pytest.raises(KeyboardInterrupt):
        make_proposals(dataset, output, MeanBoxes(tmp_path / "first.log", fail_after=4), method="fake",
                       workers=0, save_every=3, progress=False)
    assert not output.exists() and partial_path(output).exists()
    assert len(torch.load(partial_path(output), weights_only=True)["image_ids"]) == 4  # saved at the interrupt
    first = computed(tmp_path / "first.log")
    assert len(first) == 4
    result = make_proposals(dataset, output, MeanBoxes(tmp_path / "second.log"), method="fake", workers=0,
                            save_every=3, progress=False)
    second = computed(tmp_path / "second.log")
    assert len(second) == n - 4  # only the images the partial file lacked
    assert not partial_path(output).exists()
    # The same file as one uninterrupted run, in dataset order.
    reference = make_proposals(dataset, tmp_path / "ref.pth", MeanBoxes(tmp_path / "ref.log"), method="fake",
                               workers=0, progress=False)
    # Every image computed exactly once over the two runs (the image means identify the images).
    everything = computed(tmp_path / "ref.log")
    assert len(set(everything)) == n and sorted(first + second) == sorted(everything)
    loaded = load_proposals(output)
    assert loaded.image_ids == dataset.image_ids == reference.image_ids == result.image_ids
    for a, b in zip(loaded.boxes, reference.boxes):
        assert torch.equal(a, b)
    assert [s.tolist() for s in loaded.scores] == [s.tolist() for s in reference.scores]
    assert loaded.method == "fake" and loaded.params == {"kind": "mean"}
    assert loaded.file_names == [p.split("/")[-1] for p in dataset.annotations.file_paths]


def test_finished_file_is_not_overwritten_unasked(dataset, tmp_path):
    output = tmp_path / "p.pth"
    make_proposals(dataset, output, MeanBoxes(tmp_path / "a.log"), method="fake", workers=0, progress=False)
    before = output.read_bytes()
    with pytest.raises(UserInputError, match="already exists.*--overwrite"):
        make_proposals(dataset, output, MeanBoxes(tmp_path / "b.log"), method="fake", workers=0, progress=False)
    assert output.read_bytes() == before and computed(tmp_path / "b.log") == []
    make_proposals(dataset, output, MeanBoxes(tmp_path / "c.log"), method="fake", workers=0, progress=False,
                   overwrite=True)
    assert len(computed(tmp_path / "c.log")) == len(dataset)


def test_partial_file_of_other_params_is_refused(dataset, tmp_path):
    output = tmp_path / "p.pth"
    with pytest.raises(KeyboardInterrupt):
        make_proposals(dataset, output, MeanBoxes(tmp_path / "a.log", fail_after=2), method="fake", workers=0,
                       progress=False)
    with pytest.raises(UserInputError, match="made with method 'fake' params .* --overwrite"):
        make_proposals(dataset, output, MeanBoxes(tmp_path / "b.log"), method="fake", params={"kind": "other"},
                       workers=0, progress=False)


@pytest.mark.slow
def test_worker_processes_give_the_same_file(dataset, tmp_path):
    output = tmp_path / "workers.pth"
    result = make_proposals(dataset, output, MeanBoxes(tmp_path / "w.log"), method="fake", workers=2,
                            save_every=2, progress=False)
    in_process = make_proposals(dataset, tmp_path / "one.pth", MeanBoxes(tmp_path / "o.log"), method="fake",
                                workers=0, progress=False)
    assert sorted(computed(tmp_path / "w.log")) == sorted(computed(tmp_path / "o.log"))
    assert result.image_ids == in_process.image_ids
    for a, b in zip(load_proposals(output).boxes, in_process.boxes):
        assert torch.equal(a, b)
    pids = {line.split()[0] for line in (tmp_path / "w.log").read_text().splitlines()}
    assert 1 <= len(pids) <= 2  # computed in the worker processes
    import os

    assert str(os.getpid()) not in pids
