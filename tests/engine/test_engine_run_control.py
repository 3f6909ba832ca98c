"""Runs that fit the user: a time budget (fake clock), early stopping, Ctrl+C with an exact
resume, log lines without a progress bar, metrics.jsonl after a resume, tensorboard
missing, messages printed once, --print-config."""
import json
import math
import signal
import sys

import pytest
import torch

from detect.engine import hooks, launch, loggers
from detect.engine.checkpoint import load_checkpoint
from detect.engine.hooks import HookBase
from detect.engine.launch import train
from detect.engine.trainer import Trainer, TrainingInterrupted
from engine_standins import SimulatedKill, kill_training_at, tiny_config
from test_engine_tools import load_tool, write_config


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def records(run, kind):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


@pytest.fixture
def fake_clock(monkeypatch):
    """hooks.clock reads ``now``; a step costs ``step_s`` seconds, a validation ``val_s``."""
    clock = {"now": 0.0, "step_s": 1.0, "val_s": 5.0}
    monkeypatch.setattr(hooks, "clock", lambda: clock["now"])
    real_step, real_eval = Trainer.run_step, launch.evaluate_model

    def timed_step(self, images, targets):
        clock["now"] += clock["step_s"](self.iteration) if callable(clock["step_s"]) else clock["step_s"]
        return real_step(self, images, targets)

    def timed_eval(*args, **kwargs):
        clock["now"] += clock["val_s"]
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(Trainer, "run_step", timed_step)
    monkeypatch.setattr(launch, "evaluate_model", timed_eval)
    return clock


def test_time_budget_fits_the_epochs_and_stretches_the_schedule(tmp_path, standins, fake_clock):
    # 4 iterations/epoch at 1 s + 5 s of validation = 9 s per epoch; after epoch 1 (9 s) 41 s remain: 4 more epochs
    cosine = dict(name="cosine", min_lr_ratio=0.0, warmup_iters=0)
    summary = train(tiny_config(tmp_path / "run", epochs=10, time_budget="50s", scheduler=cosine, log_interval=1))
    assert summary["epoch"] == 5 and summary["iteration"] == 20
    assert fake_clock["now"] == 45.0  # 20 steps + 5 validations, within the budget
    log = (tmp_path / "run" / "log.txt").read_text()
    assert ("time budget 0:00:50: 1 s/iteration x 4 iterations/epoch + 5 s of validation and checkpoints per epoch; "
            "training 5 epochs instead of 10 (about 0:00:45), the LR schedule fitted to 20 iterations") in log
    # the cosine completes its decay over the 20 iterations: lr of the last step (iteration 19)
    lrs = [r["lr"] for r in records(tmp_path / "run", "train")]
    assert lrs[-1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 19 / 20)), rel=1e-9)
    assert lrs[9] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 9 / 20)), rel=1e-9)
    assert load_checkpoint(tmp_path / "run" / "last.pth")["scheduler"]["last_iter"] == 20


def test_time_budget_stops_when_spent_with_a_resumable_checkpoint(tmp_path, standins, fake_clock):
    # fitted on 1 s steps to 5 epochs; then the steps slow to 20 s: 9 + 20 + 20 = 49, 69 > 50 at iteration 7
    fake_clock["step_s"] = lambda iteration: 1.0 if iteration < 4 else 20.0
    summary = train(tiny_config(tmp_path / "run", epochs=10, time_budget=50))
    assert summary["iteration"] == 7 and summary["epoch"] == 1
    last = load_checkpoint(tmp_path / "run" / "last.pth")
    assert last["iteration"] == 7 and last["data_order"]["next_batch"] == 3
    assert len(records(tmp_path / "run", "val")) == 1  # no final validation: the budget is spent
    assert "time budget of 0:00:50 used up at iteration 7 (epoch 1, batch 3 of 4): stopping here" in (
        tmp_path / "run" / "log.txt").read_text()
    fake_clock["step_s"] = 1.0
    assert train(tiny_config(tmp_path / "run", epochs=2), resume="auto")["iteration"] == 8


def test_resuming_a_budget_stopped_run_continues_its_fitted_plan_and_schedule(tmp_path, standins, fake_clock):
    cosine = dict(name="cosine", min_lr_ratio=0.0, warmup_iters=0)
    # the uninterrupted fitted run: 5 epochs of 4 iterations, the cosine over 20 (the test above)
    train(tiny_config(tmp_path / "ref", epochs=10, time_budget="50s", scheduler=cosine, log_interval=1))
    reference = [r["lr"] for r in records(tmp_path / "ref", "train")]
    # the same plan, stopped by the budget at iteration 7 when the steps slow down
    fake_clock["now"] = 0.0
    fake_clock["step_s"] = lambda iteration: 1.0 if iteration < 4 else 20.0
    cfg = tiny_config(tmp_path / "run", epochs=10, time_budget="50s", scheduler=cosine, log_interval=1)
    assert train(cfg)["iteration"] == 7
    assert load_checkpoint(tmp_path / "run" / "last.pth")["epochs"] == 5
    # resumed with the config unchanged (no budget this time): the 5 fitted epochs, not the config's 10
    fake_clock["step_s"] = 1.0
    resumed = train(tiny_config(tmp_path / "run", epochs=10, scheduler=cosine, log_interval=1), resume="auto")
    assert resumed["iteration"] == 20 and resumed["epoch"] == 5
    lrs = [r["lr"] for r in records(tmp_path / "run", "train")]
    assert lrs == pytest.approx(reference, rel=1e-12)
    assert "continuing the checkpoint's plan of 5 epochs (fitted by its time budget; the config says 10)" in (
        tmp_path / "run" / "log.txt").read_text()


def test_early_stopping_by_patience(tmp_path, standins):
    # the stand-in's bbox/AP50 stays 0.0: the first validation sets the reference, two more do not improve
    summary = train(tiny_config(tmp_path / "run", epochs=6, early_stop_patience=2))
    assert summary["epoch"] == 3 and summary["iteration"] == 12
    log = (tmp_path / "run" / "log.txt").read_text()
    assert log.count("early stopping") == 1
    assert ("early stopping at epoch 3 (iteration 12): bbox/AP50 has not improved by more than 0 for 2 validations "
            "(train.early_stop_patience=2); best bbox/AP50=0.0000 at iteration 4") in log
    assert load_checkpoint(tmp_path / "run" / "last.pth")["early_stop"] == {"reference": 0.0, "evaluations": 2,
                                                                             "iteration": 4}
    # resuming the stopped run keeps it stopped
    assert train(tiny_config(tmp_path / "run", epochs=6, early_stop_patience=2), resume="auto")["iteration"] == 12
    # a looser patience trains on
    assert train(tiny_config(tmp_path / "more", epochs=3, early_stop_patience=3))["epoch"] == 3


def test_ctrl_c_saves_the_partial_epoch_and_resumes_exactly(tmp_path, standins, monkeypatch):
    train(tiny_config(tmp_path / "ref", epochs=2))
    cfg = tiny_config(tmp_path / "run", epochs=2)
    real_step = Trainer.run_step

    def ctrl_c_at_iteration_6(self, images, targets):
        if self.iteration == 6:
            raise KeyboardInterrupt
        return real_step(self, images, targets)

    monkeypatch.setattr(Trainer, "run_step", ctrl_c_at_iteration_6)
    with pytest.raises(TrainingInterrupted, match=r"^interrupted at iteration 6; resume with --resume auto$"):
        train(cfg)
    monkeypatch.setattr(Trainer, "run_step", real_step)
    saved = load_checkpoint(tmp_path / "run" / "last.pth")
    assert saved["iteration"] == 6 and saved["epoch"] == 1 and saved["data_order"]["next_batch"] == 2
    assert (tmp_path / "run" / "log.txt").read_text().count("interrupted at iteration 6; resume with --resume auto") == 1
    assert train(cfg, resume="auto")["iteration"] == 8
    assert_same_weights(load_checkpoint(tmp_path / "run" / "last.pth")["model"],
                        load_checkpoint(tmp_path / "ref" / "last.pth")["model"])
    # metrics.jsonl holds each training record once
    assert [r["iteration"] for r in records(tmp_path / "run", "train")] == [2, 4, 6, 8]


def test_sigint_stops_after_the_step_in_progress(tmp_path, standins):
    """A real SIGINT (as Ctrl+C sends) during step 3 is acted on after it, at a consistent point."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not Python's default handler here")

    class SendSigint(HookBase):
        def before_step(self):
            if self.trainer.iteration == 2:
                signal.raise_signal(signal.SIGINT)  # handled at once: sets the flag, the step still runs

    real_init = Trainer.__init__

    def with_hook(self, *args, hooks=(), **kwargs):
        real_init(self, *args, hooks=[*hooks, SendSigint()], **kwargs)

    Trainer.__init__ = with_hook
    try:
        with pytest.raises(TrainingInterrupted, match="interrupted at iteration 3;"):
            train(tiny_config(tmp_path / "run", epochs=1))
    finally:
        Trainer.__init__ = real_init
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    saved = load_checkpoint(tmp_path / "run" / "last.pth")
    assert saved["iteration"] == 3 and saved["data_order"]["next_batch"] == 3
    assert saved["scheduler"]["last_iter"] == 3


def test_train_tool_exits_130_on_ctrl_c_and_prints_the_config(tmp_path, monkeypatch, capsys):
    cfg = write_config(tmp_path / "tiny.py")
    tool = load_tool("train")
    tool.main([str(cfg), "--set", "train.epochs=3", "--time-budget", "20m", "--print-config"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["train"]["epochs"] == 3 and printed["train"]["time_budget"] == 1200.0
    assert printed["model"]["name"] == "tiny_test_detector" and not (tmp_path / "run").exists()

    def interrupted(self, images, targets):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "run_step", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        tool.main([str(cfg)])
    assert exit_info.value.code == 130
    assert "interrupted at iteration 0; resume with --resume auto" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "run" / "last.pth")["iteration"] == 0


def test_log_lines_without_a_progress_bar(tmp_path, standins):
    train(tiny_config(tmp_path / "run", epochs=2, progress_bar=False, log_interval=3))
    lines = [line.split(" ", 2)[2] for line in (tmp_path / "run" / "log.txt").read_text().splitlines()
             if " iteration " in line and "it/s" in line]
    assert [line.split(":")[0] for line in lines] == ["iteration 3/8 epoch 0", "iteration 6/8 epoch 1",
                                                      "iteration 8/8 epoch 1"]
    assert all("loss=" in line and "loss_cls=" in line and "lr=" in line and ", ETA " in line for line in lines)
    assert lines[-1].endswith("ETA 0:00:00")


def test_metrics_after_a_resume_hold_each_iteration_once(tmp_path, standins, monkeypatch):
    cfg = tiny_config(tmp_path / "run", epochs=2, log_interval=1, checkpoint_interval_iters=3)
    restore_step = kill_training_at(monkeypatch, 7)
    with pytest.raises(SimulatedKill):
        train(cfg)
    restore_step()
    assert [r["iteration"] for r in records(tmp_path / "run", "train")] == [1, 2, 3, 4, 5, 6, 7]  # 7 is past last.pth
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"type": "train", "itera')  # a line cut off by the kill
    train(cfg, resume="auto")
    assert [r["iteration"] for r in records(tmp_path / "run", "train")] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [r["iteration"] for r in records(tmp_path / "run", "val")] == [4, 8]
    assert "metrics.jsonl: removed 2 record(s) after iteration 6" in (tmp_path / "run" / "log.txt").read_text()


def test_missing_tensorboard_warns_exactly_once(tmp_path, standins, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as when not installed
    monkeypatch.setattr(loggers, "_warned_no_tensorboard", False)
    train(tiny_config(tmp_path / "run", epochs=2, tensorboard=True))
    log = (tmp_path / "run" / "log.txt").read_text()
    assert log.count("the tensorboard package is not installed") == 1


def test_summaries_and_reinitialisation_are_reported_once(tmp_path, standins):
    train(tiny_config(tmp_path / "two", epochs=1))
    cfg = tiny_config(tmp_path / "three", epochs=1)
    cfg["model"]["num_classes"] = None
    cfg["data"]["train"]["num_classes"] = cfg["data"]["val"]["num_classes"] = 3
    train(cfg, weights=tmp_path / "two" / "last.pth")
    log = (tmp_path / "three" / "log.txt").read_text()
    assert log.count("re-initialised cls_score") == 1
    assert log.count("training tiny_test_detector on 16 images (3 classes)") == 1
    assert log.count("validation after epoch 1") == 1 and log.count("done: 4 iterations") == 1
