"""The engine with the real parts: Faster R-CNN (ResNet-18 FPN, tiny settings) on a tiny
generated shapes set, read by the real COCO reader and loader, evaluated by the real VOC
evaluator: train -> checkpoints -> evaluate -> fine-tune with --weights -> Predictor."""
import json

import pytest
import torch

from detect.engine.checkpoint import load_checkpoint
from detect.engine.launch import evaluate, train

TINY_FASTER_RCNN = dict(
    name="faster_rcnn", backbone="resnet18", fpn=True, num_classes=None, fpn_channels=32, min_size=64, max_size=64,
    rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=100,
    rpn_post_nms_top_n_test=50, rpn_batch_size_per_image=32, box_batch_size_per_image=16,
    box_representation_size=32, box_score_thresh=0.0,
)


def shapes_config(root, out, classes=("circle", "square", "triangle"), **train):
    return dict(
        model=dict(TINY_FASTER_RCNN),
        data=dict(format="shapes", root=str(root), train=dict(split="train"), val=dict(split="val"),
                  shapes=dict(num_images=10, image_size=64, seed=0, classes=classes, val_fraction=0.3),
                  batch_size=2, num_workers=0, transforms=dict(train="eval", val="eval")),
        train=dict(dict(epochs=1, max_iters=2, device="cpu", deterministic=True, progress_bar=False, tensorboard=False,
                        plots=False, optimizer=dict(name="sgd", lr=0.01), scheduler=dict(warmup_iters=1)), **train),
        eval=dict(metric="voc_area", interval=1, best_metric="bbox/AP50"),
        output_dir=str(out),
    )


@pytest.mark.slow
def test_faster_rcnn_train_evaluate_finetune_predict(tmp_path, capsys):
    cfg = shapes_config(tmp_path / "shapes", tmp_path / "run")
    summary = train(cfg)
    assert summary["iteration"] == 2 and summary["best_checkpoint"] is not None
    metrics = summary["metrics"]
    assert set(metrics) >= {"bbox/AP50", "val/loss", "val/loss_classifier", "val/loss_box_reg",
                            "val/loss_objectness", "val/loss_rpn_box_reg"}
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if k.startswith("val/"))
    best = load_checkpoint(summary["best_checkpoint"])
    assert best["class_names"] == ["circle", "square", "triangle"]
    assert best["config"]["model"]["num_classes"] == 3

    # evaluating the checkpoint alone reproduces the metrics of the run's last validation
    results = tmp_path / "detections.json"
    again = evaluate(checkpoint=summary["best_checkpoint"], save_results=results)
    assert again["val/loss"] == pytest.approx(metrics["val/loss"], rel=1e-5)
    assert again["bbox/AP50"] == pytest.approx(metrics["bbox/AP50"], abs=1e-6)
    detections = json.loads(results.read_text())
    assert detections and {"image_id", "category_id", "bbox", "score"} <= set(detections[0])

    # fine-tune on a 4-class set: the predictor is re-initialised, the rest loaded
    capsys.readouterr()
    cfg4 = shapes_config(tmp_path / "shapes4", tmp_path / "tuned", classes=("circle", "square", "triangle", "star"),
                         max_iters=0)
    cfg4["eval"]["interval"] = 0
    train(cfg4, weights=summary["best_checkpoint"])
    out = capsys.readouterr().out
    assert out.count("re-initialised roi_heads.box_predictor for 4 classes") == 1  # said once, by the loader
    assert "every other layer was loaded" in out
    tuned = load_checkpoint(tmp_path / "tuned" / "last.pth")["model"]
    for key, value in best["model"].items():
        if key.startswith("roi_heads.box_predictor."):
            assert tuned[key].shape[0] in (5, 20)  # (4 + 1) classes, x4 for the box deltas
        elif not key.endswith("num_batches_tracked"):  # a counter the loader leaves alone
            assert torch.equal(tuned[key], value), key

    # the inference side rebuilds the model from the checkpoint alone
    from detect import Predictor

    predictor = Predictor.from_checkpoint(summary["best_checkpoint"], device="cpu")
    (result,) = predictor([torch.rand(3, 64, 64)])
    assert result["boxes"].shape[1] == 4
