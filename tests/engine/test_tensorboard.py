"""TensorBoard: real event files, read back with TensorBoard's own reader."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from detect.engine.launch import train
from detect.engine.loggers import TensorBoardWriter
from engine_standins import tiny_config


def read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every event
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_writer_writes_numbers_at_their_steps_and_skips_the_rest(tmp_path):
    writer = TensorBoardWriter(tmp_path / "tb")
    writer.write("train", {"loss": 1.5, "lr": 0.01, "epoch": 1, "note": "text", "flag": True}, step=10)
    writer.write("train", {"loss": torch.tensor(0.75), "lr": np.float32(0.005), "epoch": 2}, step=20)
    writer.close()
    writer.close()  # idempotent
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    scalars = read_scalars(tmp_path / "tb")
    assert set(scalars) == {"train/loss", "train/lr", "train/epoch"}
    assert scalars["train/loss"] == [(10, 1.5), (20, 0.75)]
    assert [s for s, _ in scalars["train/lr"]] == [10, 20]
    assert [v for _, v in scalars["train/lr"]] == pytest.approx([0.01, 0.005])
    assert scalars["train/epoch"] == [(10, 1.0), (20, 2.0)]


def test_a_training_run_logs_what_metrics_jsonl_holds(tmp_path, standins, monkeypatch):
    """The engine's logging hook through the real SummaryWriter: every number of every
    metrics.jsonl record is in the event file at the record's iteration (as float32, which is
    what TensorBoard stores), and nothing else is; the writer is closed at the end."""
    import torch.utils.tensorboard

    writers = []

    class KeptSummaryWriter(torch.utils.tensorboard.SummaryWriter):
        """The real writer, unchanged; only kept, to look at its state after the run."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            writers.append(self)

    monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", KeptSummaryWriter)
    train(tiny_config(tmp_path / "run", epochs=2, tensorboard=True))
    assert len(writers) == 1 and writers[0].log_dir == str(tmp_path / "run" / "tensorboard")
    assert writers[0].all_writers is None  # SummaryWriter.close() clears its file writers
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))) == 1
    scalars = read_scalars(tmp_path / "run" / "tensorboard")
    train_records = [r for r in records if r["type"] == "train"]
    val_records = [r for r in records if r["type"] == "val"]
    assert [r["iteration"] for r in train_records] == [2, 4, 6, 8] and [r["iteration"] for r in val_records] == [4, 8]
    expected = {}
    for r in records:
        for key, value in r.items():
            if key in ("time", "type") or (r["type"] == "val" and key in ("iteration", "epoch")):
                continue  # the wall-clock stamp and the record's own bookkeeping are not logged
            tag = key if key.startswith(f"{r['type']}/") else f"{r['type']}/{key}"  # "val/loss", not "val/val/loss"
            expected.setdefault(tag, []).append((r["iteration"], float(np.float32(value))))
    assert {"train/loss", "train/loss_cls", "train/loss_box", "train/lr", "val/bbox/AP50", "val/loss"} <= set(expected)
    assert scalars == expected
    # the losses moved: a writer that logged one value at every step would not pass
    assert len({v for _, v in scalars["train/loss"]}) == 4 and len({v for _, v in scalars["val/loss"]}) == 2
