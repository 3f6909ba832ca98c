"""Checkpoint files: round trip with weights_only, atomic writes, clear errors."""
import os
import random

import numpy as np
import pytest
import torch

from detect.engine import checkpoint as ckpt
from detect.engine.checkpoint import CheckpointError, inference_state_dict, load_checkpoint, save_checkpoint, state_dict_from_file
from detect.engine.rng import get_rng_state, set_rng_state
from engine_standins import TinyDetector


def payload(model):
    return {"format_version": 1, "model": model.state_dict(), "epoch": 3, "iteration": 42, "rng": get_rng_state(),
            "config": {"model": {"name": "tiny_test_detector", "min_size": (800,)}}, "class_names": ["a", "b"],
            "metrics": {"bbox/AP50": float("nan"), "val/loss": 0.5}, "optimizer": None}


def test_round_trip_loads_with_weights_only(tmp_path):
    torch.manual_seed(0)
    model = TinyDetector()
    path = save_checkpoint(tmp_path / "sub" / "last.pth", payload(model))
    # the file is a plain torch.save file that the strict loader accepts
    raw = torch.load(path, weights_only=True)
    assert raw["iteration"] == 42 and raw["config"]["model"]["min_size"] == (800,)
    loaded = load_checkpoint(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["model"][key], value)
    assert loaded["class_names"] == ["a", "b"] and np.isnan(loaded["metrics"]["bbox/AP50"])
    assert not list(tmp_path.joinpath("sub").glob(".*.tmp")), "temporary file left behind"


def test_rng_states_round_trip_exactly():
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # leaves a cached Gaussian in NumPy's state
    state = get_rng_state()
    expected = (torch.rand(3), np.random.rand(3), np.random.randn(), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    set_rng_state(torch.load(_saved(state), weights_only=True))
    got = (torch.rand(3), np.random.rand(3), np.random.randn(), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and got[3] == expected[3]


def _saved(obj):
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_crash_during_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = TinyDetector()
    path = save_checkpoint(tmp_path / "last.pth", payload(model))
    before = path.read_bytes()

    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)  # half-written file...
        raise OSError("No space left on device")  # ...and the process fails mid-write

    monkeypatch.setattr(ckpt.torch, "save", dying_save)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {**payload(model), "iteration": 43})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["iteration"] == 42
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]


def test_crash_between_write_and_rename_keeps_previous(tmp_path, monkeypatch):
    model = TinyDetector()
    path = save_checkpoint(tmp_path / "last.pth", payload(model))

    def dying_replace(src, dst):
        raise KeyboardInterrupt  # killed just before the rename

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {**payload(model), "iteration": 43})
    monkeypatch.undo()
    assert load_checkpoint(path)["iteration"] == 42
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def flip_bytes_in_tensor_data(data: bytes) -> bytes:
    # the conv weight is the first stored tensor; flip bytes inside its data record
    start = data.index(b"data/0") + 200
    return data[:start] + bytes(b ^ 0xFF for b in data[start:start + 16]) + data[start + 16:]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "bit flips"])
def test_corrupt_or_truncated_file_names_the_file(tmp_path, damage):
    path = save_checkpoint(tmp_path / "last.pth", payload(TinyDetector()))
    data = path.read_bytes()
    damaged = {"truncate": lambda: data[: len(data) // 2], "garbage": lambda: os.urandom(2048), "empty": lambda: b"",
               "bit flips": lambda: flip_bytes_in_tensor_data(data)}[damage]()
    path.write_bytes(damaged)
    with pytest.raises(CheckpointError, match=rf"checkpoint {path}: cannot be read, the file is corrupt or truncated"):
        load_checkpoint(path)


class PickledThing:  # a class instance: refused by torch.load(weights_only=True)
    pass


def test_other_bad_files(tmp_path):
    with pytest.raises(CheckpointError, match=rf"checkpoint {tmp_path / 'nope.pth'}: no such file"):
        load_checkpoint(tmp_path / "nope.pth")
    torch.save({"weights": [1, 2]}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"other\.pth: no 'model' state dict"):
        load_checkpoint(tmp_path / "other.pth")
    torch.save({"model": {}, "obj": PickledThing()}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match=r"pickled\.pth: holds pickled Python objects.*PickledThing"):
        load_checkpoint(tmp_path / "pickled.pth")


def test_inference_weights_prefer_the_ema(tmp_path):
    model = TinyDetector()
    ema_state = {k: v + 1 for k, v in model.state_dict().items()}
    plain = save_checkpoint(tmp_path / "plain.pth", payload(model))
    with_ema = save_checkpoint(tmp_path / "ema.pth", {**payload(model), "ema": {"state_dict": ema_state, "updates": 3}})
    assert torch.equal(inference_state_dict(load_checkpoint(plain))["conv.weight"], model.conv.weight)
    assert torch.equal(state_dict_from_file(with_ema)["conv.weight"], ema_state["conv.weight"])
    torch.save(model.state_dict(), tmp_path / "bare.pth")  # a bare state dict is accepted for --weights
    assert torch.equal(state_dict_from_file(tmp_path / "bare.pth")["conv.weight"], model.conv.weight)
