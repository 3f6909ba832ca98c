"""Every tool ends a bad input with one line ``error: ...`` on stderr and a non-zero exit,
no traceback; ``--debug`` / ``DETECT_DEBUG=1`` shows it; bugs keep their traceback;
tools/eval.py checks --save-results first, labels results by split and writes its report."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detect.cli import ToolExit, run_tool, tool_main
from detect.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
ENGINE_TESTS = REPO / "tests" / "engine"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"errors_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def expect_tool_exit(capsys, main, argv, code=2) -> str:
    """``main(argv)`` of a tool whose main raises SystemExit on errors."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == code
    line = one_error_line(capsys)
    assert str(info.value) == line
    return line


@pytest.fixture
def standin_config(tmp_path, monkeypatch):
    """A config file for the engine's tiny stand-in detector and datasets (tests/engine)."""
    import detect.engine.launch as launch
    from detect.modeling import registry

    monkeypatch.syspath_prepend(str(ENGINE_TESTS))
    # loading the config swaps launch's dataset builder for the stand-ins': undo it afterwards
    monkeypatch.setattr(launch, "build_dataset", launch.build_dataset)
    monkeypatch.setattr(launch, "build_dataloader", launch.build_dataloader)
    had = "tiny_test_detector" in registry.list_detectors()
    path = tmp_path / "tiny.py"
    path.write_text(
        "import engine_standins\n"
        "engine_standins.install()\n"
        f"config = engine_standins.tiny_config({str(tmp_path / 'run')!r}, epochs=1)\n"
    )
    yield path
    if not had:
        registry._BUILDERS.pop("tiny_test_detector", None)


def test_train_bad_override_is_one_line_and_debug_shows_the_error(standin_config, capsys):
    train = load_tool("train").main
    line = expect_tool_exit(capsys, train, [str(standin_config), "--set", "train.optimizer.lrr=0.1"])
    assert "unknown key" in line and "train.optimizer.lr" in line
    with pytest.raises(ConfigError, match="unknown key"):
        train([str(standin_config), "--set", "train.optimizer.lrr=0.1", "--debug"])


def test_eval_missing_checkpoint(tmp_path, capsys, monkeypatch):
    evaluate = load_tool("eval").main
    line = expect_tool_exit(capsys, evaluate, ["--checkpoint", str(tmp_path / "none.pth")])
    assert line == f"error: checkpoint {tmp_path / 'none.pth'}: no such file"
    monkeypatch.setenv("DETECT_DEBUG", "1")
    from detect.engine.checkpoint import CheckpointError

    with pytest.raises(CheckpointError):
        evaluate(["--checkpoint", str(tmp_path / "none.pth")])


def test_infer_missing_source_and_checkpoint(tmp_path, capsys):
    infer = load_tool("infer").main
    line = expect_tool_exit(capsys, infer, ["--checkpoint", str(tmp_path / "c.pth"), "--source",
                                            str(tmp_path / "nope.png"), "--output", str(tmp_path / "o")])
    assert "nope.png" in line and "is not an existing file, directory, glob pattern or webcam index" in line
    with pytest.raises(FileNotFoundError):
        infer(["--checkpoint", str(tmp_path / "c.pth"), "--source", str(tmp_path / "nope.png"), "--debug"])


def test_check_dataset_and_convert_dataset_return_2(tmp_path, capsys):
    check = load_tool("check_dataset").main
    assert check(["--format", "voc", "--root", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in one_error_line(capsys)
    convert = load_tool("convert_dataset").main
    assert convert(["yolo", "--image-dir", str(tmp_path / "no_images"), "--out", str(tmp_path / "o.json"),
                    "--class-names", "a"]) == 2
    assert "no_images" in one_error_line(capsys)
    with pytest.raises(Exception) as info:
        convert(["yolo", "--image-dir", str(tmp_path / "no_images"), "--out", str(tmp_path / "o.json"),
                 "--class-names", "a", "--debug"])
    assert not isinstance(info.value, SystemExit)


def test_demo_benchmark_and_backbones_table(tmp_path, capsys):
    line = expect_tool_exit(capsys, load_tool("demo").main, ["--config", str(tmp_path / "none.py"),
                                                            "--output-dir", str(tmp_path / "demo")])
    assert line == f"error: config {tmp_path / 'none.py'}: no such file"
    line = expect_tool_exit(capsys, load_tool("benchmark").main, ["backbones", "--names", "nosuch_bb"])
    assert line.startswith("error: unknown backbone 'nosuch_bb'; available: ")
    line = expect_tool_exit(capsys, load_tool("backbones_table").main, ["--names", "nosuch_bb"])
    assert line.startswith("error: unknown backbone 'nosuch_bb'")


def test_run_tool_rules(capsys):
    def multi_line(argv):
        raise ConfigError("3 problems:\n  a.xml: box 0 degenerate\n  b.xml: unknown class 'x'\n")

    with pytest.raises(ToolExit) as info:
        run_tool(multi_line, [])
    assert info.value.code == 2
    assert one_error_line(capsys) == "error: 3 problems:; a.xml: box 0 degenerate; b.xml: unknown class 'x'"

    @tool_main(return_code=True)
    def interrupted(argv):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as info:
        interrupted([])
    assert info.value.code == 130 and one_error_line(capsys) == "error: interrupted"

    def stopped(argv):
        from detect.engine.trainer import TrainingInterrupted

        raise TrainingInterrupted("stopped at iteration 7\nresume with --resume auto", 7)

    with pytest.raises(SystemExit) as info:
        run_tool(stopped, [])
    assert info.value.code == 130
    assert one_error_line(capsys) == "error: stopped at iteration 7; resume with --resume auto"

    def bug(argv):
        raise ValueError("a bug, not a user error")

    with pytest.raises(ValueError, match="a bug"):  # a bare ValueError keeps its traceback
        run_tool(bug, [])
    assert capsys.readouterr().err == ""

    def bad_target(argv):
        from detect.modeling.base import validate_targets
        import torch

        validate_targets([{"boxes": torch.tensor([[5.0, 5.0, 1.0, 9.0]]), "labels": torch.tensor([1])}], 1, 2)

    with pytest.raises(ToolExit):
        run_tool(bad_target, [])
    assert one_error_line(capsys).startswith("error: target 0, box 0: degenerate")


def test_subprocess_one_line_then_traceback_with_debug(tmp_path):
    missing = tmp_path / "none.pth"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DETECT_DEBUG", None)
    done = subprocess.run([sys.executable, str(REPO / "tools" / "eval.py"), "--checkpoint", str(missing)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: checkpoint {missing}: no such file"]
    done = subprocess.run([sys.executable, str(REPO / "tools" / "eval.py"), "--checkpoint", str(missing)],
                          capture_output=True, text=True, env={**env, "DETECT_DEBUG": "1"}, timeout=300)
    assert done.returncode != 0 and "Traceback" in done.stderr and "CheckpointError" in done.stderr


def test_eval_checks_save_results_first_labels_by_split_and_writes_the_report(standin_config, tmp_path, capsys,
                                                                              monkeypatch):
    import detect.engine.launch as launch

    load_tool("train").main([str(standin_config), "--set", "train.plots=True"])
    checkpoint = tmp_path / "run" / "last.pth"
    assert checkpoint.is_file()
    # the end of training wrote the last validation's plots and their numbers
    plots = tmp_path / "run" / "plots"
    for name in ("val_confusion_matrix.png", "val_pr_curves.png"):
        assert (plots / name).read_bytes()[:8] == PNG_SIGNATURE
    val = json.loads((plots / "val_metrics.json").read_text())
    assert "val/bbox/AP50" in val["metrics"] and "val/loss" in val["metrics"] and len(val["confusion_matrix"]["matrix"]) == 3
    evaluate = load_tool("eval").main
    capsys.readouterr()

    # an unwritable --save-results fails before any image is evaluated, with no metrics printed
    calls = []
    real = launch.evaluate_model
    monkeypatch.setattr(launch, "evaluate_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    line = expect_tool_exit(capsys, evaluate, [str(standin_config), "--checkpoint", str(checkpoint),
                                               "--save-results", str(blocker / "dets.json")])
    assert line.startswith(f"error: --save-results {blocker / 'dets.json'} cannot be written")
    assert calls == []
    line = expect_tool_exit(capsys, evaluate, [str(standin_config), "--checkpoint", str(checkpoint),
                                               "--save-results", str(tmp_path)])  # a directory
    assert "is a directory" in line and calls == []

    # results labelled by the split they were computed on, in the output and the JSON
    report = tmp_path / "report"
    metrics = evaluate([str(standin_config), "--checkpoint", str(checkpoint), "--split", "train",
                        "--output-dir", str(report)])
    assert calls == [1]
    captured = capsys.readouterr()
    (headline,) = [line for line in captured.out.splitlines() if line.startswith("train: ")]
    assert "train/bbox/AP50=" in headline and "train/loss=" in headline and "val/" not in headline
    data = json.loads((report / "train_metrics.json").read_text())
    assert data["split"] == "train"
    assert data["metrics"]["train/bbox/AP50"] == pytest.approx(metrics["bbox/AP50"])
    assert "train/loss" in data["metrics"] and not any(k.startswith("val/") for k in data["metrics"])
    matrix = data["confusion_matrix"]["matrix"]
    assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    assert data["confusion_matrix"]["names"][-1] == "background"
    for name in ("train_confusion_matrix.png", "train_pr_curves.png"):
        assert (report / name).read_bytes()[:8] == PNG_SIGNATURE


def test_eval_help_lists_metric_names_from_the_registry(capsys):
    from detect.evaluation import EVALUATORS

    with pytest.raises(SystemExit) as info:
        load_tool("eval").main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name, cls in EVALUATORS.items():
        assert f"  {name}: " + ", ".join(f"<split>/{key}" for key in cls.metric_names) in out
    assert "--debug" in out
