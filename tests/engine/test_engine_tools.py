"""tools/train.py and tools/eval.py, and 2-process DDP through torchrun, on the stand-ins.

The config files written here call ``engine_standins.install()`` so that the tools, run
as real subprocesses, build the stand-in detector and data through detect.engine.launch.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detect.engine.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def write_config(path: Path, *, shuffle=None, **changes) -> Path:
    """A config file for the stand-ins; ``changes`` are python source for extra train options."""
    extra = "".join(f"config['train'][{k!r}] = {v!r}\n" for k, v in changes.items())
    path.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "import engine_standins\n"
        f"engine_standins.install(shuffle={shuffle!r})\n"
        f"config = engine_standins.tiny_config({str(path.parent / 'run')!r})\n"
        + extra
    )
    return path


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
                          **kwargs)


@pytest.mark.slow
def test_train_then_eval_command_lines(tmp_path):
    cfg = write_config(tmp_path / "tiny.py")
    out = tmp_path / "cli_run"
    done = run(["tools/train.py", str(cfg), "--set", "train.epochs=1", "train.optimizer.lr=0.05",
                "--output-dir", str(out), "--device", "cpu"])
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["epochs"] == 1 and saved["train"]["optimizer"]["lr"] == 0.05 and saved["output_dir"] == str(out)
    assert load_checkpoint(out / "last.pth")["iteration"] == 4

    results = tmp_path / "detections.json"
    done = run(["tools/eval.py", str(cfg), "--checkpoint", str(out / "best.pth"), "--save-results", str(results)])
    assert done.returncode == 0, done.stderr[-3000:]
    detections = json.loads(results.read_text())
    assert len(detections) == 8 and {d["image_id"] for d in detections} == set(range(100, 108))  # one per val image
    assert all(len(d["bbox"]) == 4 and d["category_id"] in (1, 2) for d in detections)
    assert "bbox/AP50" in done.stdout + done.stderr


def test_tools_report_bad_input_clearly(tmp_path, capsys):
    cfg = write_config(tmp_path / "tiny.py")
    train_tool, eval_tool = load_tool("train"), load_tool("eval")
    with pytest.raises(SystemExit, match=r"error: override 'train.optimizer.lrr=0.1': unknown key .*did you mean train.optimizer.lr"):
        train_tool.main([str(cfg), "--set", "train.optimizer.lrr=0.1"])
    with pytest.raises(SystemExit, match=r"error: override 'train.epochs=many': 'many' is not a Python literal"):
        train_tool.main([str(cfg), "--set", "train.epochs=many"])
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(SystemExit, match=rf"error: checkpoint {broken}: cannot be read, the file is corrupt or truncated"):
        train_tool.main([str(cfg), "--resume", str(broken)])
    with pytest.raises(SystemExit, match=rf"error: checkpoint {tmp_path / 'none.pth'}: no such file"):
        eval_tool.main(["--checkpoint", str(tmp_path / "none.pth")])
    with pytest.raises(SystemExit):
        eval_tool.main([])
    assert "give a CONFIG, a --checkpoint, or both" in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    """torchrun, gloo on CPU: 2 processes x batch 2 == 1 process x batch 4, within 1e-5.

    The order is sequential (no shuffle) so that the global batches are the same images
    (DistributedSampler deals 0,2 to rank 0 and 1,3 to rank 1); the stand-in has no
    dropout and GroupNorm (BatchNorm statistics would be per process without SyncBN,
    which needs CUDA), and its loss is a mean over images, which DDP's gradient averaging
    reproduces exactly up to float summation order.
    """
    cfg = write_config(tmp_path / "ddp.py", shuffle=False, epochs=1, log_interval=1, deterministic=False)
    text = cfg.read_text() + (
        "config['model'].update(dropout=0.0, norm='gn')\n"
        "config['data']['train']['augment'] = False\n"
    )
    cfg.write_text(text)
    single = run(["tools/train.py", str(cfg), "--output-dir", str(tmp_path / "one")])
    assert single.returncode == 0, single.stderr[-3000:]
    double = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "tools/train.py", str(cfg),
                  "--output-dir", str(tmp_path / "two"), "--set", "data.batch_size=2"])
    assert double.returncode == 0, double.stderr[-3000:]

    one, two = load_checkpoint(tmp_path / "one" / "last.pth"), load_checkpoint(tmp_path / "two" / "last.pth")
    assert one["iteration"] == two["iteration"] == 4
    assert len(two["rng_per_rank"]) == 2 and two["data_order"]["world_size"] == 2
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)

    def records(run_dir, kind):
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["type"] == kind]

    losses_one = [r["loss"] for r in records(tmp_path / "one", "train")]
    losses_two = [r["loss"] for r in records(tmp_path / "two", "train")]
    assert len(losses_one) == 4 and losses_two == pytest.approx(losses_one, rel=1e-5)
    val_one, val_two = records(tmp_path / "one", "val")[-1], records(tmp_path / "two", "val")[-1]
    assert val_two["val/loss"] == pytest.approx(val_one["val/loss"], rel=1e-5)
    assert val_two["bbox/AP50"] == pytest.approx(val_one["bbox/AP50"], abs=1e-6)
    # only rank 0 writes the log
    assert (tmp_path / "two" / "log.txt").read_text().count("training tiny_test_detector") == 1
