"""`--data PATH` on tools/train.py and tools/eval.py: any recipe on the user's own folder."""
import json
import sys
from pathlib import Path

import pytest

from detect.data.shapes import make_shapes

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests" / "inference"))

import eval as eval_tool  # noqa: E402
import train as train_tool  # noqa: E402
from inference_stand_in import CLASS_NAMES, save_stand_in_checkpoint  # noqa: E402


def voc_folder_without_val(tmp_path, rename=None):
    """The shapes set as a VOC folder with only train and test splits (val renamed to test)."""
    root = make_shapes(tmp_path / "shapes", num_images=20, image_size=64, seed=3)
    main = root / "ImageSets" / "Main"
    (main / "val.txt").rename(main / "test.txt")
    if rename:
        for xml in (root / "Annotations").glob("*.xml"):
            text = xml.read_text()
            for old, new in rename.items():
                text = text.replace(f"<name>{old}</name>", f"<name>{new}</name>")
            xml.write_text(text)
    return root


def test_train_data_option_detects_the_layout_and_draws_a_seeded_validation_split(tmp_path, capsys):
    root = voc_folder_without_val(tmp_path)
    recipe = str(ROOT / "configs" / "faster_rcnn" / "bccd_r18_fpn_cpu.py")  # written for BCCD's 3 classes
    argv = [recipe, "--data", str(root), "--set", "data.batch_size=3", "--print-config"]
    train_tool.main(argv)
    out = capsys.readouterr().out
    config = json.loads(out[out.index("{"):])
    data = config["data"]
    assert data["format"] == "voc" and data["root"] == str(root)
    assert data["class_names"] == ["circle", "square", "triangle"]  # derived from the annotations
    assert config["model"]["num_classes"] == 3
    assert data["batch_size"] == 3  # --set applies on top of --data
    assert data["check_policy"] == "drop"  # a format-independent key of the recipe survives
    train_images, val_images = data["train"]["images"], data["val"]["images"]
    test_stems = set((root / "ImageSets" / "Main" / "test.txt").read_text().split())
    assert len(val_images) == 2 and len(train_images) == 14  # 10% of the 16 training images, at least 1
    assert not set(train_images) & set(val_images)
    assert not {Path(name).stem for name in train_images + val_images} & test_stems
    assert "no validation split: 2 of 16 training images" in out
    # the same seed draws the same split
    train_tool.main(argv)
    again = capsys.readouterr().out
    assert json.loads(again[again.index("{"):])["data"]["val"]["images"] == val_images


def test_eval_data_option_on_a_checkpoint(tmp_path, capsys):
    root = voc_folder_without_val(tmp_path, rename=dict(zip(["circle", "square", "triangle"], CLASS_NAMES)))
    checkpoint = save_stand_in_checkpoint(tmp_path / "model.pth")
    metrics = eval_tool.main(["--checkpoint", str(checkpoint), "--data", str(root), "--split", "test",
                              "--set", "eval.metric=voc_area", "data.num_workers=0", "--no-report"])
    assert 0.0 <= metrics["bbox/AP50"] <= 1.0
    assert set(k for k in metrics if k.startswith("bbox/AP50-")) == {f"bbox/AP50-{n}" for n in CLASS_NAMES}
    out = capsys.readouterr().out
    assert "voc layout with splits ['train', 'test']" in out
    # the folder's derived order is alphabetical; the checkpoint's order wins so labels keep their meaning
    assert f"class order of the checkpoint kept: {CLASS_NAMES}" in out
    assert f"test/bbox/AP50={metrics['bbox/AP50']:.4f}" in out


def test_eval_data_option_with_other_classes_is_refused_naming_both_lists(tmp_path, capsys):
    root = voc_folder_without_val(tmp_path)
    checkpoint = save_stand_in_checkpoint(tmp_path / "model.pth")
    with pytest.raises(SystemExit) as exit_info:
        eval_tool.main(["--checkpoint", str(checkpoint), "--data", str(root), "--split", "test",
                        "--set", "data.num_workers=0", "--no-report"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert str(CLASS_NAMES) in err and "['circle', 'square', 'triangle']" in err
