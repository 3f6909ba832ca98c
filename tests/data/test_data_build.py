"""build_dataset / build_dataloader from a config's data section."""
import pytest
import torch

from data_fixtures import write_voc
from detect.data import CocoDetection, VOCDetection, YoloDetection
from detect.data.build import build_dataloader, build_dataset
from detect.data.transforms import DetectionTransform


def test_shapes_config_generates_then_reads_with_the_coco_reader(tmp_path):
    data = dict(format="shapes", root=str(tmp_path / "shapes"), shapes=dict(num_images=10, image_size=64, seed=4),
                train=dict(), val=dict(), transforms=dict(train="train", val="eval"), batch_size=2)
    train, val = build_dataset(data, "train"), build_dataset(data, "val")
    assert isinstance(train, CocoDetection) and (len(train), len(val)) == (8, 2)
    assert isinstance(train.transforms, DetectionTransform) and val.transforms is None
    assert train.class_names == val.class_names == ["circle", "square", "triangle"]
    images, targets = next(iter(build_dataloader(train, batch_size=3, train=True, seed=0)))
    assert len(images) == 3 and images[0].shape == (3, 64, 64) and targets[0]["boxes"].dtype == torch.float32
    with pytest.raises(ValueError, match="other parameters"):
        build_dataset({**data, "shapes": dict(num_images=12, image_size=64, seed=4)}, "train")
    with pytest.raises(TypeError, match=r"keys \['colour'\] that the shapes set does not take"):
        build_dataset({**data, "train": dict(colour="red")}, "train")


def test_voc_config_derives_validation_classes_from_train(tmp_path):
    write_voc(tmp_path, {"a": (20, 20, [("zebra", 1, 1, 5, 5, 0), ("ant", 2, 2, 9, 9, 0)])}, split="train")
    write_voc(tmp_path, {"b": (20, 20, [("zebra", 1, 1, 5, 5, 0)])}, split="val")
    data = dict(format="voc", root=str(tmp_path), class_names="derive", train=dict(), val=dict(),
                check_policy="raise", transforms=dict(train="yolo"))
    train, val = build_dataset(data, "train"), build_dataset(data, "val")
    assert isinstance(train, VOCDetection) and train.transforms.name == "yolo"
    assert val.class_names == train.class_names == ["ant", "zebra"]  # not ["zebra"] from val alone
    assert val[0][1]["labels"].tolist() == [2]
    with pytest.raises(TypeError, match=r"keys \['image_dir'\] that the 'voc' reader does not take"):
        build_dataset({**data, "val": dict(image_dir="x")}, "val")
    with pytest.raises(KeyError, match="no 'test' section") as missing:
        build_dataset(data, "test")
    from detect.config import ConfigError

    assert isinstance(missing.value, ConfigError)  # so the tools print it as one line
    assert str(missing.value).startswith("data config has no 'test' section")  # not KeyError's quoted form
    with pytest.raises(ValueError, match="data.format is 'pascal'"):
        build_dataset({**data, "format": "pascal"}, "train")


def test_coco_and_yolo_configs(coco_fixture, tmp_path):
    image_dir, ann_file = coco_fixture
    source = dict(image_dir=str(image_dir), ann_file=str(ann_file))
    # image 7 has no annotation here: filtered for training, kept for validation
    (tmp_path / "instances.json").write_text(ann_file.read_text().replace('"image_id": 7', '"image_id": 0'))
    data = dict(format="coco", train=source, val=source, filter_empty=True)
    assert build_dataset(data, "train").image_ids == [0] and build_dataset(data, "val").image_ids == [0, 7]
    with pytest.raises(KeyError, match=r"needs \['ann_file'\]"):
        build_dataset(dict(format="coco", train=dict(image_dir=str(image_dir))), "train")
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    yolo_cfg = dict(format="yolo", class_names=["thing"], transforms=dict(train="eval"),
                    train=dict(image_dir=str(image_dir), label_dir=str(labels)))
    yolo = build_dataset(yolo_cfg, "train")
    assert isinstance(yolo, YoloDetection) and yolo[0][1]["boxes"].tolist() == [[15, 10, 45, 30]]
