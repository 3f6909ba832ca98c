"""A semantic segmentation model through the engine and tools/train.py / tools/eval.py:
the metric is the model's ``default_metric`` (mIoU), best.pth is picked by
``sem_seg/mIoU``, the validation loop compares label maps and masks of the same size,
tools/eval.py prints the per-class IoU table and writes the pixel confusion matrix, and
``--save-results`` is refused in one line.

The model is the real FCN family when it is registered (ResNet-18, random weights),
else the stand-in of ``tests/inference/segmentation_stand_in.py``.
"""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "inference"))

from segmentation_stand_in import ColourSegmenter, expected_label_map, make_regions_image, register  # noqa: E402

from detect.data.image_io import to_tensor  # noqa: E402
from detect.engine.checkpoint import load_checkpoint  # noqa: E402
from detect.engine.evaluation import evaluate_model  # noqa: E402
from detect.engine.launch import evaluate, resolve_eval_choice, train  # noqa: E402
from detect.evaluation import SemSegEvaluator, build_evaluator  # noqa: E402
from detect.modeling.registry import list_detectors  # noqa: E402

register()


def model_config():
    if "fcn" in list_detectors():
        return dict(name="fcn", backbone="resnet18", num_classes=None, min_size=64, max_size=64)
    return dict(name="test_colour_segmenter", num_classes=None, colour_init=False)


def shapes_config(tmp_path, epochs=2):
    return dict(
        model=model_config(),
        data=dict(format="shapes", root=str(tmp_path / "shapes"), shapes=dict(num_images=15, image_size=64, seed=0),
                  train=dict(split="train"), val=dict(split="val"), masks=True, batch_size=4, num_workers=0,
                  aspect_ratio_grouping=False),
        train=dict(epochs=epochs, device="cpu", optimizer=dict(name="sgd", lr=0.05), progress_bar=False,
                   plots=True, log_interval=1, seed=0),
        eval=dict(interval=1),
        output_dir=str(tmp_path / "run"),
    )


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_train_and_eval_a_segmenter_by_miou(tmp_path, capsys):
    summary = train(shapes_config(tmp_path))
    run = Path(summary["output_dir"])
    # eval.metric / best_metric "auto": the model's own choice
    assert summary["best"]["metric"] == "sem_seg/mIoU"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in records if r["type"] == "val"]
    assert len(validations) == 2
    best = max(validations, key=lambda r: r["sem_seg/mIoU"])
    assert summary["best"]["value"] == best["sem_seg/mIoU"] and summary["best"]["iteration"] == best["iteration"]
    assert {"sem_seg/mIoU", "sem_seg/fwIoU", "sem_seg/mAcc", "sem_seg/pAcc", "sem_seg/IoU-background"} <= set(best)
    payload = load_checkpoint(summary["best_checkpoint"])
    assert payload["best"]["metric"] == "sem_seg/mIoU" and payload["iteration"] == best["iteration"]
    report = json.loads((run / "plots" / "val_metrics.json").read_text())
    matrix = np.array(report["confusion_matrix"]["matrix"])
    assert report["confusion_matrix"]["names"] == ["background", "circle", "square", "triangle"]
    assert matrix.shape == (4, 4) and matrix.sum() == 3 * 64 * 64  # every pixel of the 3 val images, once
    assert (run / "plots" / "val_confusion_matrix.png").is_file()

    # tools/eval.py on best.pth: the same numbers as the evaluator run by hand on the model's predictions
    capsys.readouterr()
    metrics = load_tool("eval").main(["--checkpoint", summary["best_checkpoint"]])
    out = capsys.readouterr().out
    assert "| class | IoU (%) | Acc (%) |" in out and "| background |" in out and "val/sem_seg/mIoU=" in out
    from detect.data.build import build_dataset
    from detect.modeling.registry import build_detector
    from detect.engine.checkpoint import inference_state_dict

    config = dict(payload["config"]["model"])
    model = build_detector(config.pop("name"), **config)
    model.load_state_dict(inference_state_dict(payload))
    model.eval()
    val_set = build_dataset(payload["config"]["data"], "val")
    evaluator = SemSegEvaluator(val_set.class_names)
    for image, target in val_set:
        evaluator.process([target], model.predict([image]))
    by_hand = evaluator.evaluate()
    for key, value in by_hand.items():
        assert metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert metrics["sem_seg/mIoU"] == pytest.approx(best["sem_seg/mIoU"], rel=1e-9)
    saved = json.loads((run / "eval_val" / "val_metrics.json").read_text())
    assert saved["metrics"]["val/sem_seg/mIoU"] == pytest.approx(metrics["sem_seg/mIoU"])
    assert np.array(saved["confusion_matrix"]["matrix"]).sum() == 3 * 64 * 64

    # --save-results writes box detections: refused for a segmenter, in one line, before evaluating
    with pytest.raises(SystemExit) as info:
        load_tool("eval").main(["--checkpoint", summary["best_checkpoint"], "--save-results",
                                str(tmp_path / "r.json"), "--no-report"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: --save-results") and "label PNGs" in err
    assert not (tmp_path / "r.json").exists()


def test_eval_choice_auto_is_the_models_own():
    model = ColourSegmenter()
    assert resolve_eval_choice("auto", model, "default_metric") == "miou"
    assert resolve_eval_choice("auto", model, "default_best_metric") == "sem_seg/mIoU"
    assert resolve_eval_choice("miou", model, "default_metric") == "miou"


class ResizedLoader:
    """One batch whose images an evaluation transform resized: ``orig_size`` is the file's
    size, the masks (transformed with the image) are at the image's size."""

    def __init__(self, images, masks, orig_sizes):
        self.batch = (images, [{"image_id": i, "masks": m, "orig_size": torch.tensor(s)}
                               for i, (m, s) in enumerate(zip(masks, orig_sizes))])

    def __iter__(self):
        return iter([self.batch])

    def __len__(self):
        return 1


def test_validation_compares_label_maps_and_masks_of_the_same_size():
    rgb = make_regions_image(20, 30)  # 150 pixels per quarter: red 1, green 2, blue 3, dark 0
    predicted = expected_label_map(rgb)
    mask = predicted.copy()
    mask[0, :10] = 2  # 10 red pixels whose truth is green
    mask[-1, -5:] = 255  # 5 ignored background pixels
    model = ColourSegmenter()
    images = [to_tensor(rgb)]
    # the "file" was 40 x 60: outputs must not be resampled to it, the mask is at 20 x 30
    metrics = evaluate_model(model, ResizedLoader(images, [torch.from_numpy(mask)], [(40, 60)]),
                             evaluator=SemSegEvaluator(["red", "green", "blue"]), compute_loss=True)
    # M[true, predicted]: background 145 right; red 140 right; green 150 right + 10 predicted red; blue 150
    #   IoU: 1, 140/150, 150/160, 1 -> mIoU (1 + 14/15 + 15/16 + 1) / 4; pAcc 585/595
    assert metrics["sem_seg/mIoU"] == pytest.approx((2 + 14 / 15 + 15 / 16) / 4, rel=1e-12)
    assert metrics["sem_seg/pAcc"] == pytest.approx(585 / 595, rel=1e-12)
    assert metrics["sem_seg/mAcc"] == pytest.approx((3 + 150 / 160) / 4, rel=1e-12)
    assert np.isfinite(metrics["val/loss"])
    # a mask that is not at the image's size is an error naming the image
    with pytest.raises(ValueError, match=r"image 0: prediction of size \(20, 30\) for a mask of size \(40, 60\)"):
        evaluate_model(model, ResizedLoader(images, [torch.zeros(40, 60, dtype=torch.int64)], [(40, 60)]),
                       evaluator=SemSegEvaluator(["red", "green", "blue"]), compute_loss=False)


def test_miou_evaluator_refuses_results_path():
    class Data:
        class_names = ["a"]

    with pytest.raises(ValueError, match="--save-results out.json writes box detections .* label PNGs"):
        build_evaluator("miou", Data(), results_path="out.json")


def test_an_evaluation_choice_of_the_other_task_is_a_config_error(tmp_path):
    from detect.config import ConfigError

    segmenter = ColourSegmenter()
    with pytest.raises(ConfigError, match=r"eval.metric='voc_area' does not fit ColourSegmenter, a semantic "
                                          r"segmentation model; set eval.metric=auto \(its own: 'miou'\)"):
        resolve_eval_choice("voc_area", segmenter, "default_metric")
    with pytest.raises(ConfigError, match=r"eval.best_metric='bbox/AP50' does not fit .* \(its own: 'sem_seg/mIoU'\)"):
        resolve_eval_choice("bbox/AP50", segmenter, "default_best_metric")
    assert resolve_eval_choice("val/loss", segmenter, "default_best_metric") == "val/loss"
    assert resolve_eval_choice("my_own", segmenter, "default_metric") == "my_own"  # a user's evaluator_factory
    from inference_stand_in import ChannelMeanDetector

    with pytest.raises(ConfigError, match="eval.metric='miou' does not fit ChannelMeanDetector, a detector"):
        resolve_eval_choice("miou", ChannelMeanDetector(), "default_metric")
    with pytest.raises(ConfigError, match="eval.best_metric='sem_seg/mIoU' does not fit ChannelMeanDetector"):
        resolve_eval_choice("sem_seg/mIoU", ChannelMeanDetector(), "default_best_metric")
    # through train(): refused before any training, in the tools' one-line form
    config = shapes_config(tmp_path)
    config["eval"]["metric"] = "voc_area"
    with pytest.raises(ConfigError, match="eval.metric='voc_area' does not fit"):
        train(config)
    assert not (tmp_path / "run" / "last.pth").exists()
