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


def test_a_training_run_logs_what_metrics_jsonl_holds(tmp_path, standins):
    train(tiny_config(tmp_path / "run", epochs=2, tensorboard=True))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    scalars = read_scalars(tmp_path / "run" / "tensorboard")
    train_records = [r for r in records if r["type"] == "train"]
    val_records = [r for r in records if r["type"] == "val"]
    assert train_records and val_records
    assert scalars["train/loss"] == [(r["iteration"], pytest.approx(r["loss"], rel=1e-6)) for r in train_records]
    assert scalars["val/bbox/AP50"] == [(r["iteration"], pytest.approx(r["bbox/AP50"], rel=1e-6)) for r in val_records]
