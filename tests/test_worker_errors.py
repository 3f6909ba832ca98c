"""Bad data met inside a DataLoader worker reads as it does in the main process: one line
``error: ...`` naming the file, not torch's "Caught ... in DataLoader worker process 0 ...
Original Traceback" block; a COCO file that is not JSON, or whose images repeat an id, is one
line too (issue 19)."""
import importlib.util
import json
from pathlib import Path

import pytest

from detect.cli import one_line, worker_message
from detect.data.shapes import make_shapes

REPO = Path(__file__).resolve().parents[1]


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"worker_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def error_line(capsys, main, argv) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("data:", "training "))]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err and "DataLoader worker" not in err, err
    return errors[0]


def test_worker_message_recovers_the_original_message():
    wrapped = ("Caught ImageReadError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 3, in f\n    raise ImageReadError(msg)\n'
               "detect.data.image_io.ImageReadError: a.jpg: cannot decode; line two\n")
    assert worker_message(wrapped) == "a.jpg: cannot decode; line two\n"
    assert one_line(RuntimeError(wrapped)) == "a.jpg: cannot decode; line two"
    assert worker_message("plain message") == "plain message"


@pytest.fixture(scope="module")
def truncated_set(tmp_path_factory):
    root = make_shapes(tmp_path_factory.mktemp("worker") / "shapes", num_images=6, image_size=48, seed=0)
    train_names = [image["file_name"] for image in
                   json.loads((root / "annotations" / "instances_train.json").read_text())["images"]]
    victim = root / "JPEGImages" / train_names[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])  # a valid header, the scan cut short
    return root, victim


@pytest.mark.slow
def test_a_truncated_image_in_a_loader_worker_is_the_same_one_line(truncated_set, tmp_path, capsys):
    root, victim = truncated_set
    train = load_tool("train").main
    lines = []
    for workers in (0, 1):
        lines.append(error_line(capsys, train, [
            "configs/faster_rcnn/shapes_demo.py", "--output-dir", str(tmp_path / f"run{workers}"), "--set",
            f"data.root={root}", "data.shapes.num_images=6", "data.shapes.image_size=48",
            f"data.num_workers={workers}", "data.batch_size=6", "train.epochs=1", "train.progress_bar=False",
            "model.min_size=48", "model.max_size=48"]))
    assert lines[0] == lines[1]
    assert victim.name in lines[1]


def coco_config(tmp_path, ann_file: Path) -> Path:
    path = tmp_path / "coco.py"
    path.write_text(
        "config = dict(model=dict(name='yolov1', backbone='resnet18', head='conv', input_size=(64, 64), grid_size=2),\n"
        f"    data=dict(format='coco', train=dict(image_dir={str(tmp_path)!r}, ann_file={str(ann_file)!r}),\n"
        "              batch_size=1, num_workers=0), train=dict(device='cpu', epochs=1))\n")
    return path


def test_coco_file_that_is_not_json_is_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    line = error_line(capsys, load_tool("train").main, [str(coco_config(tmp_path, broken)),
                                                         "--output-dir", str(tmp_path / "run")])
    assert line.startswith(f"error: {broken} is not valid JSON (line 1, column 13)")


def test_coco_images_with_a_repeated_id_are_one_line(tmp_path, capsys):
    ann = tmp_path / "repeat.json"
    image = {"id": 7, "file_name": "a.jpg", "height": 10, "width": 10}
    ann.write_text(json.dumps({"images": [image, {**image, "file_name": "b.jpg"}], "annotations": [],
                               "categories": [{"id": 1, "name": "cat"}]}))
    line = error_line(capsys, load_tool("train").main, [str(coco_config(tmp_path, ann)),
                                                         "--output-dir", str(tmp_path / "run")])
    assert str(ann) in line and "image ids [7] appear more than once" in line
