"""Checkpoints and configs that cannot hurt: no code from a stored config, no NaN weights
written or stepped into, no run overwritten, resumes that keep labels' meaning, legacy
files read, bad values refused before anything is built, a deployable best.pth."""
import os

import pytest
import torch

from detect.config import ConfigError, config_from_checkpoint, load_config, parse_duration
from detect.engine import launch
from detect.engine.checkpoint import (
    CheckpointError,
    NonFiniteWeightsError,
    load_checkpoint,
    nonfinite_entries,
    save_checkpoint,
)
from detect.engine.launch import evaluate, train
from detect.engine.trainer import NonFiniteLossError, Trainer
from detect.filesystem import atomic_write, remove_stale_temporary_files
from engine_standins import TinyDataset, TinyDetector, standin_build_dataloader, tiny_config


# ------------------------------------------------------------ 1. stored config is data
def planted_base(tmp_path):
    marker = tmp_path / "marker.txt"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\nconfig = dict()\n")
    return evil, marker


def test_a_stored_config_never_runs_the_file_its_base_names(tmp_path, standins):
    evil, marker = planted_base(tmp_path)
    train(tiny_config(tmp_path / "run", epochs=1))
    payload = load_checkpoint(tmp_path / "run" / "last.pth")
    clean = config_from_checkpoint(payload["config"])
    assert clean == load_config(payload["config"])  # a resolved config comes back as it was
    assert clean["train"]["epochs"] == 1 and clean["model"]["name"] == "tiny_test_detector"

    payload["config"]["_base_"] = str(evil)
    planted = tmp_path / "planted.pth"
    save_checkpoint(planted, payload)
    stored = load_checkpoint(planted)["config"]
    with pytest.raises(ConfigError, match=rf"{planted}: its stored config has _base_; .*never runs the files"):
        config_from_checkpoint(stored, where=f"checkpoint {planted}")
    stored["model"]["_base_"] = str(evil)  # nested too
    with pytest.raises(ConfigError, match=r"has model._base_, _base_;"):
        config_from_checkpoint(stored)
    # the resume path reads the checkpoint's state, never its config
    train(tiny_config(tmp_path / "run", epochs=2), resume=planted)
    assert not marker.exists()
    # (what the loader of config *files* does with the same dict: proof that the test can fail)
    load_config({"_base_": str(evil)})
    assert marker.read_text() == "ran"


# ------------------------------------------------------- 2. non-finite gradients, weights
class NaNGradDetector(TinyDetector):
    """A finite loss whose gradient is NaN for batches holding image 103: d sqrt(u)/du at u=0 is inf."""

    def _compute_losses(self, images, targets):
        losses = super()._compute_losses(images, targets)
        if any(int(t["image_id"]) == 103 for t in targets):
            losses["loss_box"] = losses["loss_box"] + torch.sqrt(self.cls_score.weight.sum() * 0.0)
        return losses


@pytest.mark.parametrize("clip", [None, 10.0])
def test_finite_loss_with_nonfinite_gradient_is_skipped_and_named(clip, capsys):
    dataset = TinyDataset(6, augment=False)
    torch.manual_seed(0)
    model = NaNGradDetector(dropout=0.0)
    loader = standin_build_dataloader(dataset, batch_size=2, train=True, shuffle=False)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, epochs=1, clip_grad_norm=clip)
    batches = list(loader)
    trainer.run_step(*batches[0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.run_step(*batches[1])  # images 102, 103
    assert trainer.step_info.skipped and trainer.total_skips == 1 and trainer.consecutive_skips == 1
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # no step, BatchNorm statistics put back
    out = capsys.readouterr().out
    assert "non-finite gradient at iteration 0 (epoch 0) with a finite loss (loss_cls=" in out
    assert "on image ids [102, 103]; step skipped (1 in a row)" in out
    trainer.run_step(*batches[2])
    assert not trainer.step_info.skipped and trainer.consecutive_skips == 0
    assert trainer.step_info.grad_norm is not None and trainer.step_info.grad_norm > 0  # measured without clipping too
    assert not nonfinite_entries(model.state_dict())

    stop = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, epochs=1, nonfinite_loss="stop")
    with pytest.raises(NonFiniteLossError, match=r"non-finite gradient at iteration 1 .*image ids \[102, 103\]\. Stopping"):
        stop.train()


def test_a_checkpoint_with_nonfinite_weights_is_never_written(tmp_path, standins, monkeypatch):
    model = TinyDetector()
    good = save_checkpoint(tmp_path / "last.pth", {"model": model.state_dict(), "iteration": 4})
    kept = good.read_bytes()
    state = model.state_dict()
    state["bbox_pred.bias"] = state["bbox_pred.bias"].clone().fill_(float("inf"))
    assert nonfinite_entries(state) == ["bbox_pred.bias"]
    with pytest.raises(NonFiniteWeightsError, match=r"last.pth not written: the model weights hold NaN/inf "
                                                     r"\(bbox_pred.bias\) at iteration 5; the previous last.pth"):
        save_checkpoint(good, {"model": state, "iteration": 5})
    assert good.read_bytes() == kept and not list(tmp_path.glob(".*.tmp"))

    # in training: weights turned NaN after iteration 5 -> the epoch-end last.pth (iteration 8) is refused
    real_step = Trainer.run_step

    def poisoned(self, images, targets):
        real_step(self, images, targets)
        if self.iteration == 5:
            with torch.no_grad():
                self.module.conv.weight.fill_(float("nan"))

    monkeypatch.setattr(Trainer, "run_step", poisoned)
    with pytest.raises(CheckpointError, match=r"not written: the model weights hold NaN/inf \(conv.weight"):
        train(tiny_config(tmp_path / "run", epochs=2))
    last = load_checkpoint(tmp_path / "run" / "last.pth")
    assert last["iteration"] == 4 and not nonfinite_entries(last["model"])


# ------------------------------------------------------------- 3. no silent overwrite
def test_a_second_fresh_run_into_the_same_directory_is_refused(tmp_path, standins):
    cfg = tiny_config(tmp_path / "run", epochs=1)
    train(cfg)
    last = tmp_path / "run" / "last.pth"
    stamp = last.stat().st_mtime_ns
    with pytest.raises(CheckpointError, match=rf"^{tmp_path / 'run'} already holds a run \(last.pth, iteration 4\); "
                                              r"continue it with --resume auto, or choose another --output-dir$"):
        train(cfg)
    with pytest.raises(CheckpointError, match="already holds a run"):
        train(cfg, weights=last)
    assert last.stat().st_mtime_ns == stamp
    assert train(tiny_config(tmp_path / "run", epochs=2), resume="auto")["iteration"] == 8


# -------------------------------------------------------- 4. stale temporary files
def test_stale_temporary_files_of_atomic_write_are_removed(tmp_path, standins):
    out = tmp_path / "run"
    out.mkdir()
    with atomic_write(out / "x.json", "w") as f:  # the name atomic_write really gives, with a dead writer's pid
        (real,) = [p.name for p in out.iterdir() if p.name.startswith(".x.json.")]
        f.write("{}")
    dead_pid = "4194999"  # beyond any pid_max: no such process
    stale = [out / real.replace(f".{os.getpid()}.", f".{dead_pid}."), out / f".last.pth.{dead_pid}.0badcafe.tmp"]
    alive = out / f".best.pth.{os.getpid()}.12345678.tmp"  # its writer (this process) is still running
    other = out / ".notes.tmp"  # not a name atomic_write makes
    for path in (*stale, alive, other):
        path.write_bytes(b"partial")
    assert remove_stale_temporary_files(tmp_path / "missing") == []
    train(tiny_config(out, epochs=1))
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == sorted([alive.name, other.name])
    log = (out / "log.txt").read_text()
    assert f"removed 2 temporary file(s) left in {out} by an interrupted write: " in log
    assert all(path.name in log for path in stale)


# ------------------------------------------------------- 5. resume with other classes
def test_resume_refuses_other_class_names_or_counts(tmp_path, standins):
    cfg = tiny_config(tmp_path / "run", epochs=1)
    train(cfg)
    last = tmp_path / "run" / "last.pth"
    swapped_train, swapped_val = TinyDataset(16, seed=0), TinyDataset(8, seed=1, augment=False)
    swapped_train.class_names = swapped_val.class_names = ["green", "red"]
    with pytest.raises(CheckpointError, match=r"trained on \['red', 'green'\] but this run's data has \['green', 'red'\] "
                                              r"\(the same classes in another order, so label k would change meaning\)"):
        train(tiny_config(tmp_path / "run", epochs=2), resume="auto",
              datasets={"train": swapped_train, "val": swapped_val})
    three = tiny_config(tmp_path / "run", epochs=2)
    three["model"]["num_classes"] = None
    three["data"]["train"]["num_classes"] = three["data"]["val"]["num_classes"] = 3
    with pytest.raises(CheckpointError, match=r"\(2 classes in the checkpoint, 3 in this run's data\); .*"
                                              rf"--weights {last} instead of --resume"):
        train(three, resume="auto")
    # a model that does not fit for another reason: what differs, and --weights
    torch.manual_seed(0)
    wider = TinyDetector(hidden=16)
    loader = standin_build_dataloader(TinyDataset(4), batch_size=2, train=True)
    trainer = Trainer(wider, torch.optim.SGD(wider.parameters(), lr=0.1), loader, epochs=1)
    with pytest.raises(CheckpointError, match=r"do not fit this run's model \(Error\(s\) in loading state_dict.*--weights"):
        trainer.load_state(load_checkpoint(last))


# ---------------------------------------------------------------- 6. legacy files
def test_a_legacy_torch_save_file_loads_with_weights_only(tmp_path):
    torch.manual_seed(0)
    model = TinyDetector()
    legacy = tmp_path / "legacy.pth"
    torch.save({"format_version": 1, "model": model.state_dict(), "iteration": 7, "class_names": ["a", "b"]},
               legacy, _use_new_zipfile_serialization=False)
    assert not legacy.read_bytes().startswith(b"PK")
    loaded = load_checkpoint(legacy)
    assert loaded["iteration"] == 7 and loaded["class_names"] == ["a", "b"]
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["model"][key], value)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(legacy.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=rf"checkpoint {cut}: a legacy \(non-zip\) torch.save file that "
                                              r"torch.load\(weights_only=True\) cannot read"):
        load_checkpoint(cut)


# ----------------------------------------------------------- 7. values checked early
@pytest.mark.parametrize("override, message", [
    ("train.nonfinite_loss='ignore'", r"train.nonfinite_loss='ignore': expected 'skip' or 'stop'"),
    ("data.batch_size=0", r"data.batch_size=0: expected an integer >= 1 \(images per process\)"),
    ("train.epochs=-1", r"train.epochs=-1: expected an integer >= 1"),
    ("train.optimizer.lr=0.0", r"train.optimizer.lr=0.0: expected a number > 0"),
    ("train.optimizer.name='adam'", r"train.optimizer.name='adam': expected 'sgd' or 'adamw'"),
    ("train.log_interval=0", r"train.log_interval=0: expected an integer >= 1"),
    ("train.early_stop_patience=0", r"train.early_stop_patience=0: expected None \(off\) or an integer >= 1"),
    ("train.time_budget='soon'", r"train.time_budget='soon': expected a positive duration such as 90s, 20m, 1.5h"),
])
def test_bad_values_are_refused_before_anything_is_built(override, message, tmp_path, standins, monkeypatch):
    built = []
    monkeypatch.setattr(launch, "build_model", lambda cfg: built.append(cfg))
    with pytest.raises(ConfigError, match=message + r".*--set"):
        load_config(tiny_config(tmp_path / "run"), [override])
    cfg = tiny_config(tmp_path / "run")
    section, _, rest = override.partition(".")
    node = cfg[section]
    keys, value = rest.split("=")
    *parents, leaf = keys.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = eval(value)
    with pytest.raises(ConfigError, match=message):
        train(cfg)
    assert built == [] and not (tmp_path / "run").exists()


def test_durations():
    assert [parse_duration(v) for v in ("90s", "20m", "1.5h", "3600", 45, 2.5)] == [90, 1200, 5400, 3600, 45, 2.5]
    for bad in ("0", "-5m", "1d", "", True):
        with pytest.raises(ConfigError, match="expected a positive duration"):
            parse_duration(bad)


# --------------------------------------------------------- 9. deployable best.pth
def test_best_checkpoint_is_deployable_and_loads_everywhere_but_resume(tmp_path, standins):
    from detect.inference.predictor import Predictor

    cfg = tiny_config(tmp_path / "run", epochs=1, ema=dict(enabled=True, decay=0.5, tau=None))
    train(cfg)
    best_path, last_path = tmp_path / "run" / "best.pth", tmp_path / "run" / "last.pth"
    best, last = load_checkpoint(best_path), load_checkpoint(last_path)
    assert best["deployable"] is True and "deployable" not in last
    assert best["optimizer"] is best["scheduler"] is best["scaler"] is best["ema"] is None
    assert not {"rng", "rng_per_rank", "data_order"} & set(best)
    assert last["optimizer"]["state"] and last["ema"] is not None  # last.pth stays complete
    for key, value in last["ema"]["state_dict"].items():  # the EMA (evaluated) weights are the model
        assert torch.equal(best["model"][key], value), key
    assert best["class_names"] == ["red", "green"] and best["config"] == last["config"]
    assert best["iteration"] == 4 and best["best"]["metric"] == "bbox/AP50" and best["library_version"]
    assert best_path.stat().st_size < 0.75 * last_path.stat().st_size

    metrics = evaluate(checkpoint=best_path)
    assert metrics["val/loss"] == pytest.approx(evaluate(checkpoint=last_path)["val/loss"], rel=1e-12)
    predictor = Predictor.from_checkpoint(best_path, device="cpu")
    assert predictor.class_names == ["red", "green"]
    assert train(tiny_config(tmp_path / "tuned", epochs=1), weights=best_path)["iteration"] == 4
    with pytest.raises(CheckpointError, match=rf"{best_path}: a deployable checkpoint .* resume from {last_path}"):
        train(tiny_config(tmp_path / "run", epochs=2), resume=best_path)
