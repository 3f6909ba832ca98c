"""detect.config: base files, defaults, dotted overrides, errors, the resolved config."""
import json
from pathlib import Path

import pytest

from detect.config import DEFAULTS, ConfigError, apply_overrides, load_config, merge_configs, save_config

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def recipe(tmp_path):
    write(tmp_path / "_base" / "model.py", "config = dict(model=dict(name='faster_rcnn', backbone='resnet50', "
          "fpn=True, num_classes=20, min_size=(800,)), train=dict(epochs=12, optimizer=dict(lr=0.02)))\n")
    return write(tmp_path / "recipe.py", "from pathlib import Path\n"
                 "config = dict(_base_='_base/model.py', model=dict(backbone='resnet18'),\n"
                 "              data=dict(format='voc', train=dict(root=str(Path(__file__).parent / 'VOC'))),\n"
                 "              train=dict(optimizer=dict(lr=0.01)), output_dir='runs/x')\n")


def test_base_merge_defaults_and_file_relative_paths(recipe, tmp_path):
    cfg = load_config(recipe)
    # the file's values win, the base fills the rest, nested dicts merge key by key
    assert cfg["model"] == dict(name="faster_rcnn", backbone="resnet18", fpn=True, num_classes=20, min_size=(800,))
    assert cfg["train"]["optimizer"]["lr"] == 0.01
    assert cfg["train"]["optimizer"]["momentum"] == DEFAULTS["train"]["optimizer"]["momentum"] == 0.9
    assert cfg["train"]["epochs"] == 12
    assert cfg["eval"] == DEFAULTS["eval"]
    assert cfg["data"]["train"]["root"] == str(tmp_path / "VOC")
    assert cfg["data"]["batch_size"] == 2
    assert "_base_" not in cfg


def test_replace_instead_of_merge():
    merged = merge_configs({"a": {"x": 1, "y": 2}}, {"a": {"_replace_": True, "z": 3}})
    assert merged == {"a": {"z": 3}}


def test_overrides_are_parsed_as_literals(recipe):
    cfg = load_config(recipe, [
        "train.optimizer.lr=0.005", "train.epochs=3", "train.deterministic=True", "train.clip_grad_norm=10",
        "train.scheduler.milestones=[2, 3]", "model.min_size=(640, 672)", "data.train.root=/data/VOC 2007",
        "model.backbone=tv:mobilenet_v3_large", "eval.metric='voc07_11pt'", "train.max_iters=None",
        "+model.rpn_batch_size_per_image=64", "train.optimizer.weight_decay=0",
    ])
    assert cfg["train"]["optimizer"]["lr"] == 0.005
    assert cfg["train"]["epochs"] == 3 and isinstance(cfg["train"]["epochs"], int)
    assert cfg["train"]["deterministic"] is True
    assert cfg["train"]["clip_grad_norm"] == 10
    assert cfg["train"]["scheduler"]["milestones"] == [2, 3]
    assert cfg["model"]["min_size"] == (640, 672)
    assert cfg["data"]["train"]["root"] == "/data/VOC 2007"   # not a literal, key holds a str: plain string
    assert cfg["model"]["backbone"] == "tv:mobilenet_v3_large"
    assert cfg["eval"]["metric"] == "voc07_11pt"
    assert cfg["train"]["max_iters"] is None
    assert cfg["model"]["rpn_batch_size_per_image"] == 64
    # an int for a float key becomes a float
    assert cfg["train"]["optimizer"]["weight_decay"] == 0.0 and isinstance(cfg["train"]["optimizer"]["weight_decay"], float)


def test_unknown_key_lists_close_matches(recipe):
    with pytest.raises(ConfigError, match=r"unknown key 'train\.optimizer\.lrr'.*did you mean train\.optimizer\.lr"):
        load_config(recipe, ["train.optimizer.lrr=0.1"])
    # the right leaf under the wrong parent
    with pytest.raises(ConfigError, match=r"did you mean .*train\.optimizer\.momentum"):
        load_config(recipe, ["train.momentum=0.8"])
    with pytest.raises(ConfigError, match=r"model\.backbon.*did you mean model\.backbone.*\+model\.backbon="):
        load_config(recipe, ["model.backbon=resnet18"])


def test_bad_values_give_clear_errors(recipe):
    with pytest.raises(ConfigError, match=r"train\.epochs expects a int.*got float 2\.5"):
        load_config(recipe, ["train.epochs=2.5"])
    with pytest.raises(ConfigError, match=r"train\.deterministic expects True or False.*got int 1"):
        load_config(recipe, ["train.deterministic=1"])
    with pytest.raises(ConfigError, match=r"'fast' is not a Python literal and train\.optimizer\.lr holds float"):
        load_config(recipe, ["train.optimizer.lr=fast"])
    with pytest.raises(ConfigError, match=r"train\.scheduler\.milestones expects a list or tuple"):
        load_config(recipe, ["train.scheduler.milestones=8"])
    with pytest.raises(ConfigError, match=r"expected dotted\.key=value"):
        load_config(recipe, ["train.epochs"])
    with pytest.raises(ConfigError, match=r"'train\.epochs' holds int, not a section"):
        load_config(recipe, ["train.epochs.x=1"])
    # "+" adds keys to builder sections only; the engine's sections are fixed
    with pytest.raises(ConfigError, match=r"unknown option 'train\.lr'.*optimizer\.lr"):
        load_config(recipe, ["+train.lr=0.1"])


def test_errors_in_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.py")
    with pytest.raises(ConfigError, match=r"must define `config = dict\(...\)`"):
        load_config(write(tmp_path / "empty.py", "x = 1\n"))
    with pytest.raises(ConfigError, match=r"unknown option 'train\.epoch'; did you mean train\.epochs"):
        load_config(write(tmp_path / "typo.py", "config = dict(train=dict(epoch=3))\n"))
    with pytest.raises(ConfigError, match=r"unknown config section 'trian'; did you mean train"):
        load_config(write(tmp_path / "section.py", "config = dict(trian=dict(epochs=3))\n"))
    with pytest.raises(ConfigError, match=r"obj\.py: model\.backbone: Linear is not plain data"):
        load_config(write(tmp_path / "obj.py", "import torch\nconfig = dict(model=dict(backbone=torch.nn.Linear(1, 1)))\n"))
    write(tmp_path / "a.py", "config = dict(_base_='b.py')\n")
    with pytest.raises(ConfigError, match="_base_ chain loops"):
        load_config(write(tmp_path / "b.py", "config = dict(_base_='a.py')\n"))


def test_resolved_config_round_trips_through_json(recipe, tmp_path):
    cfg = load_config(recipe, ["train.epochs=2"])
    path = save_config(cfg, tmp_path / "run" / "config.json")
    loaded = json.loads(path.read_text())
    assert loaded["train"]["epochs"] == 2
    assert loaded["model"]["min_size"] == [800]
    # the saved file is itself a valid config source
    assert load_config(loaded)["train"]["epochs"] == 2


def test_save_config_is_atomic(recipe, tmp_path, monkeypatch):
    import os

    path = save_config(load_config(recipe, ["train.epochs=2"]), tmp_path / "run" / "config.json")
    before = path.read_text()

    def killed_before_rename(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed_before_rename)
    with pytest.raises(KeyboardInterrupt):
        save_config(load_config(recipe, ["train.epochs=3"]), path)
    monkeypatch.undo()
    assert path.read_text() == before  # the previous file, complete
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temporary file left


def test_apply_overrides_does_not_mutate_its_input():
    cfg = merge_configs(DEFAULTS, {})
    changed = apply_overrides(cfg, ["train.epochs=1"])
    assert changed["train"]["epochs"] == 1 and cfg["train"]["epochs"] == DEFAULTS["train"]["epochs"] == 12


RECIPES = sorted(p for p in (REPO / "configs").rglob("*.py") if "_base" not in p.parts)


def test_recipes_exist():
    names = {p.relative_to(REPO / "configs").as_posix() for p in RECIPES}
    assert {"faster_rcnn/r50_fpn_coco.py", "faster_rcnn/r50_fpn_voc.py", "faster_rcnn/dcn_r50_fpn_coco.py",
            "faster_rcnn/bccd_r50_fpn.py", "faster_rcnn/shapes_demo.py"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg["model"]["name"] and cfg["data"]["format"] in ("coco", "voc", "yolo", "shapes", "pennfudan", "sbd")
    # None: filled in from the training set's classes
    assert cfg["model"]["num_classes"] is None or cfg["model"]["num_classes"] >= 1


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_shipped_configs_build_their_models(path):
    """Every model option of every recipe is one the builder takes (no weights are fetched)."""
    from detect.engine.launch import build_model

    cfg = load_config(path, ["model.num_classes=3"] + (["model.backbone_weights=None"]
                                                       if "backbone_weights" in load_config(path)["model"] else []))
    model = build_model(cfg["model"])
    assert model.num_classes == 3
