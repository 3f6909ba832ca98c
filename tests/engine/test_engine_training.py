"""The training engine end to end on the stand-ins (tiny detector, in-memory data).

The stand-ins follow the Detector and dataset contracts; with the real Faster R-CNN and
datasets the engine runs the same code (see tests/engine/engine_standins.py).
"""
import json
import math

import pytest
import torch

from detect.engine import launch
from detect.engine.checkpoint import load_checkpoint, save_checkpoint
from detect.engine.evaluation import evaluate_model
from detect.engine.launch import evaluate, train
from detect.engine.trainer import NonFiniteLossError, Trainer
from engine_standins import SimulatedKill, TinyDataset, TinyDetector, kill_training_at, standin_build_dataloader, tiny_config


def state(path):
    return load_checkpoint(path)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def test_training_writes_checkpoints_metrics_and_plots(tmp_path, standins):
    cfg = tiny_config(tmp_path / "run", epochs=2, plots=True, ema=dict(enabled=True, decay=0.5, tau=None))
    summary = train(cfg)
    out = tmp_path / "run"
    assert summary["iteration"] == 8 and summary["epoch"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["best.pth", "config.json", "last.pth", "log.txt",
                                                      "metrics.jsonl", "plots"]
    # (the validation report adds its own val_* plots, see detect.evaluation.plots)
    assert {"losses.png", "metrics.png"} <= {p.name for p in (out / "plots").iterdir()}
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 2

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["type"] == "train"]
    val_records = [r for r in records if r["type"] == "val"]
    assert [r["iteration"] for r in train_records] == [2, 4, 6, 8]  # log_interval=2
    assert all(math.isfinite(r["loss"]) and r["loss"] == pytest.approx(r["loss_cls"] + r["loss_box"])
               for r in train_records)
    assert [r["epoch"] for r in val_records] == [1, 2]
    for r in val_records:
        assert 0.0 <= r["bbox/AP50"] <= 1.0 and r["val/loss"] == pytest.approx(r["val/loss_cls"] + r["val/loss_box"])
    # a record's lr is that of its last step (iterations 1, 3, 5, 7); warm-up factor 0.1 -> 1 over
    # 2 iterations, x0.1 from epoch 1 (iteration 4)
    assert [r["lr"] for r in train_records] == pytest.approx([0.1 * (0.1 * 0.5 + 0.5), 0.1, 0.01, 0.01], rel=1e-12)

    last = load_checkpoint(out / "last.pth")
    assert last["iteration"] == 8 and last["epoch"] == 2 and last["class_names"] == ["red", "green"]
    assert last["color_order"] == "RGB" and last["box_format"] == "xyxy" and last["library_version"]
    assert last["config"]["model"] == {"name": "tiny_test_detector", "num_classes": 2, "hidden": 8}
    assert last["ema"]["updates"] == 8 and last["scheduler"]["last_iter"] == 8
    assert last["metrics"]["bbox/AP50"] == val_records[-1]["bbox/AP50"]
    best = load_checkpoint(out / "best.pth")
    best_value = max(r["bbox/AP50"] for r in val_records)
    assert best["best"]["value"] == best_value and best["metrics"]["bbox/AP50"] == best_value
    # validation used the EMA weights, and so does evaluating the checkpoint
    assert not torch.equal(last["ema"]["state_dict"]["conv.weight"], last["model"]["conv.weight"])
    again = evaluate(checkpoint=out / "last.pth")
    assert again["val/loss"] == pytest.approx(val_records[-1]["val/loss"], rel=1e-12)
    raw = TinyDetector()
    raw.load_state_dict(last["model"])
    val_set = TinyDataset(8, seed=1, augment=False)
    loader = standin_build_dataloader(val_set, batch_size=4, train=False)
    assert evaluate_model(raw, loader)["val/loss"] != pytest.approx(again["val/loss"], rel=1e-6)


# TensorBoard (the real SummaryWriter, read back from its event file): tests/engine/test_tensorboard.py


def test_validation_interval(tmp_path, standins):
    train(_with_eval(tiny_config(tmp_path, epochs=3), 2))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["type"] == "val"] == [2, 3]  # every 2 epochs, and at the end


def _with_eval(cfg, interval):
    cfg["eval"]["interval"] = interval
    return cfg


def test_kill_and_resume_equals_uninterrupted_run(tmp_path, standins, monkeypatch):
    # checkpoints every 3 iterations: mid-epoch at 3 and 6, plus the epoch ends 4 and 8
    reference = train(tiny_config(tmp_path / "ref", epochs=2, checkpoint_interval_iters=3))
    cfg = tiny_config(tmp_path / "run", epochs=2, checkpoint_interval_iters=3)

    restore_step = kill_training_at(monkeypatch, 7)
    with pytest.raises(SimulatedKill):
        train(cfg)
    restore_step()
    interrupted = load_checkpoint(tmp_path / "run" / "last.pth")
    assert interrupted["iteration"] == 6 and interrupted["data_order"]["next_batch"] == 2

    resumed = train(cfg, resume="auto")
    assert resumed["iteration"] == 8
    assert_same_weights(state(tmp_path / "run" / "last.pth"), state(tmp_path / "ref" / "last.pth"))
    ref_opt = load_checkpoint(tmp_path / "ref" / "last.pth")["optimizer"]["state"]
    run_opt = load_checkpoint(tmp_path / "run" / "last.pth")["optimizer"]["state"]
    assert all(torch.equal(ref_opt[k]["momentum_buffer"], run_opt[k]["momentum_buffer"]) for k in ref_opt)
    assert resumed["metrics"] == reference["metrics"]
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "resumed from" in log and "next batch 2 of epoch 1" in log and "RNG states" in log


def test_resume_auto_extends_a_finished_run(tmp_path, standins, capsys):
    reference = train(tiny_config(tmp_path / "ref", epochs=2))
    first = train(tiny_config(tmp_path / "run", epochs=1), resume="auto")
    assert first["iteration"] == 4
    assert "no last.pth in" in capsys.readouterr().out  # nothing to resume: a fresh start
    second = train(tiny_config(tmp_path / "run", epochs=2), resume="auto")
    out = capsys.readouterr().out
    assert f"resumed from {tmp_path / 'run' / 'last.pth'}: model; optimizer; scheduler; epoch 1, iteration 4" in out
    assert second["iteration"] == 8
    assert_same_weights(state(tmp_path / "run" / "last.pth"), state(tmp_path / "ref" / "last.pth"))
    assert second["metrics"] == reference["metrics"]


def test_resuming_a_finished_run_neither_validates_nor_writes_again(tmp_path, standins, monkeypatch):
    cfg = tiny_config(tmp_path / "run", epochs=1)
    first = train(cfg)
    last, metrics_file = tmp_path / "run" / "last.pth", tmp_path / "run" / "metrics.jsonl"
    assert load_checkpoint(last)["metrics_iteration"] == first["iteration"] == 4
    written, records = (last.stat().st_ino, last.stat().st_mtime_ns), metrics_file.read_text()
    validations = []
    real_evaluate_model = launch.evaluate_model

    def counting_evaluate_model(*args, **kwargs):
        validations.append(1)
        return real_evaluate_model(*args, **kwargs)

    monkeypatch.setattr(launch, "evaluate_model", counting_evaluate_model)
    again = train(cfg, resume="auto")
    assert again["iteration"] == 4 and again["metrics"] == first["metrics"]
    assert validations == []  # the restored metrics belong to iteration 4: nothing to validate
    assert (last.stat().st_ino, last.stat().st_mtime_ns) == written  # last.pth not rewritten
    assert metrics_file.read_text() == records  # no second val record


def test_evaluating_an_fp16_run_on_the_cpu_falls_back_to_float32(tmp_path, standins, capsys):
    train(tiny_config(tmp_path / "run", epochs=1))
    payload = load_checkpoint(tmp_path / "run" / "last.pth")
    payload["config"]["train"]["amp"] = "fp16"  # as trained on a GPU
    save_checkpoint(tmp_path / "fp16.pth", payload)
    expected = evaluate(checkpoint=tmp_path / "run" / "last.pth")
    capsys.readouterr()
    metrics = evaluate(checkpoint=tmp_path / "fp16.pth", device="cpu")
    assert "train.amp='fp16' needs CUDA: evaluating on cpu in float32" in capsys.readouterr().out
    assert metrics["val/loss"] == expected["val/loss"] and metrics["bbox/AP50"] == expected["bbox/AP50"]


def test_unwritable_output_dir_is_a_clear_error(tmp_path, standins):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=rf"output directory {blocker / 'run'} cannot be written .*--output-dir"):
        train(tiny_config(blocker / "run"))


def test_resume_and_weights_are_exclusive(tmp_path, standins):
    with pytest.raises(ValueError, match="give one of them"):
        train(tiny_config(tmp_path), weights=tmp_path / "a.pth", resume=tmp_path / "b.pth")


def test_num_classes_is_filled_in_or_checked(tmp_path, standins):
    cfg = tiny_config(tmp_path / "a", max_iters=1)
    cfg["model"]["num_classes"] = None
    train(cfg)
    assert load_checkpoint(tmp_path / "a" / "last.pth")["config"]["model"]["num_classes"] == 2
    cfg["model"]["num_classes"] = 3
    with pytest.raises(ValueError, match=r"model.num_classes=3 but the training set has 2 classes \['red', 'green'\]"):
        train(cfg)


def make_trainer(dataset, policy, max_skips=20, batch_size=2):
    torch.manual_seed(0)
    model = TinyDetector(dropout=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = standin_build_dataloader(dataset, batch_size=batch_size, train=True, shuffle=False)
    return model, Trainer(model, optimizer, loader, epochs=1, nonfinite_loss=policy, max_nonfinite_skips=max_skips)


def test_nonfinite_loss_is_skipped_and_named(capsys):
    dataset = TinyDataset(6, augment=False, nan_indices=[3])
    model, trainer = make_trainer(dataset, "skip")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.train_loader = standin_build_dataloader(dataset, batch_size=2, train=True, shuffle=False)
    batches = list(trainer.train_loader)
    trainer.run_step(*batches[0])
    after_first = {k: v.clone() for k, v in model.state_dict().items()}
    assert not torch.equal(after_first["conv.weight"], before["conv.weight"])
    trainer.run_step(*batches[1])  # images 102, 103: 103 is NaN
    assert trainer.step_info.skipped and trainer.total_skips == 1
    assert_same_weights(model.state_dict(), after_first)
    message = capsys.readouterr().out
    assert "non-finite loss at iteration 0 (epoch 0): loss_cls=nan, loss_box=nan on image ids [102, 103]" in message
    assert "step skipped (1 in a row)" in message
    trainer.run_step(*batches[2])
    assert not trainer.step_info.skipped and trainer.consecutive_skips == 0
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_nonfinite_loss_stop_and_too_many_skips():
    _, trainer = make_trainer(TinyDataset(4, augment=False, nan_indices=[1]), "stop")
    with pytest.raises(NonFiniteLossError, match=r"loss_cls=nan, loss_box=nan on image ids \[100, 101\]\. Stopping"):
        trainer.train()
    _, trainer = make_trainer(TinyDataset(8, augment=False, nan_indices=range(8)), "skip", max_skips=2)
    with pytest.raises(NonFiniteLossError, match=r"3 steps in a row were non-finite \(train.max_nonfinite_skips=2\)"):
        trainer.train()


def test_gradient_clipping_bounds_the_norm():
    dataset = TinyDataset(4, augment=False)
    torch.manual_seed(0)
    model = TinyDetector(dropout=0.0)
    loader = standin_build_dataloader(dataset, batch_size=4, train=True, shuffle=False)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), loader, epochs=1, clip_grad_norm=1e-3)
    trainer.run_step(*next(iter(loader)))
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert trainer.step_info.grad_norm > 1e-3  # the norm before clipping
    assert clipped.item() == pytest.approx(1e-3, rel=1e-4)


def test_bf16_autocast_on_cpu_trains():
    dataset = TinyDataset(4, augment=False)
    torch.manual_seed(0)
    model = TinyDetector(dropout=0.0)
    loader = standin_build_dataloader(dataset, batch_size=4, train=True, shuffle=False)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, epochs=1, amp="bf16")
    trainer.run_step(*next(iter(loader)))
    assert not trainer.step_info.skipped and math.isfinite(trainer.step_info.loss)
    assert not trainer.scaler.is_enabled()
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(ValueError, match="needs a CUDA device; on the CPU use train.amp='bf16'"):
        launch.resolve_amp("fp16", torch.device("cpu"))
    # amp=True is fp16 on CUDA and off on the CPU, so GPU recipes run unchanged there
    assert launch.resolve_amp(True, torch.device("cpu")) is None
    assert launch.resolve_amp(True, torch.device("cuda")) == "fp16"
    assert launch.resolve_amp("bf16", torch.device("cpu")) == "bf16"
