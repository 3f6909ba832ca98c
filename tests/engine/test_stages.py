"""Multi-stage training (detect.engine.stages) on R-CNN with a tiny CNN and an in-memory set:
every stage runs and checkpoints, the final model holds the SVMs and the regressor, a run
interrupted inside a stage and resumed ends with the same weights as an uninterrupted one,
and an output directory holding a run is refused without --resume."""
from __future__ import annotations

import json

import pytest
import torch

from detect.engine import stages as stages_module
from detect.engine.checkpoint import CheckpointError, load_checkpoint
from detect.engine.launch import train

COLOURS = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1]])


class ProposalSet(torch.utils.data.Dataset):
    """``n`` 48 x 48 images with one coloured square each (class 1 red, class 2 green), the
    proposals jittered copies of it plus background boxes; image ids 100 + index."""

    class_names = ["red", "green"]

    def __init__(self, n: int = 8, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            image = torch.rand(3, 48, 48, generator=g) * 0.2
            label = i % 2 + 1
            x, y = (torch.randint(0, 20, (2,), generator=g)).tolist()
            box = torch.tensor([[x, y, x + 24, y + 24]], dtype=torch.float32)
            image[:, y:y + 24, x:x + 24] = COLOURS[label - 1][:, None, None]
            jitter = box + torch.randn(6, 4, generator=g) * 2
            background = torch.tensor([[0.0, 0.0, 12.0, 12.0], [30.0, 30.0, 46.0, 46.0], [0.0, 30.0, 16.0, 47.0],
                                       [5.0, 5.0, 5.0, 20.0]])  # the last one is degenerate: dropped
            self.items.append((image, {"boxes": box, "labels": torch.tensor([label]), "image_id": 100 + i,
                                       "orig_size": torch.tensor([48, 48]),
                                       "proposals": torch.cat((jitter, background))}))
        self.image_ids = [100 + i for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        image, target = self.items[index]
        return image.clone(), {k: (v.clone() if torch.is_tensor(v) else v) for k, v in target.items()}


def tiny_model():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modeling"))
    from test_rcnn import tiny_rcnn

    return tiny_rcnn(num_classes=2, batch_size_per_batch=16, crop_batch_size=8)


def config(out, **svm):
    model_cfg = {"name": "rcnn", "num_classes": 2}
    return {
        "model": model_cfg,
        "data": {"batch_size": 2, "num_workers": 0, "aspect_ratio_grouping": False},
        "train": {"epochs": 2, "device": "cpu", "seed": 0, "optimizer": {"name": "sgd", "lr": 0.01},
                  "scheduler": {"name": "constant", "warmup_iters": 0}, "progress_bar": False, "tensorboard": False,
                  "plots": False, "log_interval": 2},
        "eval": {"interval": 0},
        "output_dir": str(out),
    }


def run(out, model=None, resume=None, **svm_options):
    model = model or tiny_model()
    model.stage_options = {"svm": {"retrain_every": 4, "checkpoint_every": 1, **svm_options},
                           "features": {"checkpoint_every": 2}}
    data = ProposalSet()
    return train_stages_direct(out, model, data, resume), model


def train_stages_direct(out, model, data, resume):
    return stages_module.train_stages(config(out), model=model, datasets={"train": data, "train_eval": data},
                                      resume=resume)


@pytest.mark.slow
def test_all_stages_run_and_the_final_model_holds_svms_and_regressor(tmp_path):
    summary, model = run(tmp_path / "run")
    out = tmp_path / "run"
    progress = json.loads((out / "stages.json").read_text())
    assert progress["completed"] == ["finetune", "features", "svm", "bbox_reg"]
    assert set(summary["stages"]) == set(progress["completed"])
    assert (out / "finetune" / "last.pth").is_file()
    index = load_checkpoint(out / "features" / "index.pth", require_model=False)
    # per image: 1 ground-truth box + 6 jittered + 3 valid background boxes (the degenerate one dropped)
    assert index["image_rows"] == [10] * 8 and index["num_rows"] == 80
    assert (out / "features" / "fc7.f16").stat().st_size == 80 * 16 * 2
    payload = torch.load(out / "best.pth", weights_only=True)
    state = payload["model"]
    assert bool(state["svms.trained"]) and bool(state["bbox_regressor.trained"])
    assert state["svms.weight"].abs().sum() > 0 and state["bbox_regressor.weight"].abs().sum() > 0
    assert float(state["svms.feature_scale"]) == pytest.approx(20.0 * index["feature_mean_norm_scale"])
    # the deployable model detects the squares it was trained on
    image, target = ProposalSet()[0]
    out0 = model.predict([image], proposals=[target["proposals"]])[0]
    assert out0["boxes"].shape[0] >= 1 and int(out0["labels"][0]) == int(target["labels"][0])
    with pytest.raises(CheckpointError, match="already holds a multi-stage run"):
        run(out)


def _interrupt_once(monkeypatch, cls, method, at_call):
    original = getattr(cls, method)
    calls = {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, interrupted)
    return lambda: monkeypatch.setattr(cls, method, original)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["svm", "features"])
def test_resume_mid_stage_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch, where):
    _, whole = run(tmp_path / "whole")
    reference = torch.load(tmp_path / "whole" / "best.pth", weights_only=True)["model"]

    from detect.modeling.linear_svm import HardNegativeMiner
    from detect.modeling.meta_arch.rcnn import RCNN

    if where == "svm":
        restore = _interrupt_once(monkeypatch, HardNegativeMiner, "add_image", at_call=5)
    else:
        restore = _interrupt_once(monkeypatch, RCNN, "extract_features", at_call=5)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut")
    restore()
    progress = json.loads((tmp_path / "cut" / "stages.json").read_text())
    assert where not in progress["completed"] and "finetune" in progress["completed"]
    if where == "svm":
        saved = load_checkpoint(tmp_path / "cut" / "svm" / "state.pth", require_model=False)
        assert saved["miner"]["next_image"] == 4 and not saved["done"]
    else:
        index = load_checkpoint(tmp_path / "cut" / "features" / "index.pth", require_model=False)
        assert index["next_image"] == 4  # written every 2 images; the 5th image was cut
    run(tmp_path / "cut", resume="auto")
    resumed = torch.load(tmp_path / "cut" / "best.pth", weights_only=True)["model"]
    for key in ("svms.weight", "svms.bias", "svms.feature_scale", "bbox_regressor.weight", "bbox_regressor.bias",
                "cls_score.weight"):
        torch.testing.assert_close(resumed[key], reference[key], rtol=0, atol=0, msg=key)


def test_stages_of_names_multi_stage_families_only():
    assert stages_module.stages_of({"name": "rcnn"}) == ("finetune", "features", "svm", "bbox_reg")
    assert stages_module.stages_of({"name": "faster_rcnn"}) is None
    model = tiny_model()
    model.stage_options = {"svm": {"Cee": 1}}
    with pytest.raises(Exception, match="unknown option 'Cee'"):
        stages_module.stage_options(model)


def test_train_dispatches_a_multi_stage_config_to_its_stages(tmp_path, monkeypatch):
    called = {}
    monkeypatch.setattr(stages_module, "train_stages", lambda cfg, **kw: called.setdefault("cfg", cfg) and "staged")
    assert train(config(tmp_path / "x")) == "staged"
    assert called["cfg"]["model"]["name"] == "rcnn"
