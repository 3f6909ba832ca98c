"""The five-family contract (../shared/DESIGN.md): attributes every model states, the per-task
target check, and the image transform's two resize modes."""
import pytest
import torch

from detect import build_detector, list_detectors
from detect.modeling import registry
from detect.modeling.base import Detector
from detect.modeling.transform import ImageTransform, resized_size
from detect.modeling.weights import load_detector_weights

# Small, fast instances of every registered family.
SMALL = {
    "faster_rcnn": dict(backbone="resnet18", fpn=True, min_size=96, max_size=128, fpn_channels=32,
                        box_representation_size=64),
    "yolov1": dict(backbone="resnet18", head="conv", input_size=(128, 128), grid_size=4),
    "fast_rcnn": dict(backbone="resnet18", fpn=True, min_size=96, max_size=128, fpn_channels=32,
                      box_representation_size=64),
    "rcnn": dict(backbone="resnet18", crop_size=32, context_pad=2.0),
    "fcn": dict(backbone="resnet18", variant="8s", min_size=96, max_size=128),
}


# The library's own families (tests register stand-ins as callables beside them).
BUILT_IN = [name for name in list_detectors() if isinstance(registry._BUILDERS[name], str)]


def small_model(name, num_classes=3, **extra):
    torch.manual_seed(0)
    return build_detector(name, num_classes=num_classes, **{**SMALL[name], **extra})


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_family_states_the_contract(name):
    assert name in SMALL, f"add a small configuration of {name!r} to SMALL"
    model = small_model(name)
    assert isinstance(model, Detector)
    assert model.task in ("detection", "semantic_segmentation")
    assert model.num_classes == 3
    from detect.evaluation import METRICS

    assert model.default_metric in METRICS
    assert isinstance(model.default_best_metric, str) and model.default_best_metric
    keys = list(model.state_dict())
    assert model.class_specific_prefixes, "a detector has class-specific layers"
    for prefix in model.class_specific_prefixes:
        assert any(k.startswith(prefix) for k in keys), f"{prefix} names no state-dict key"
    if model.task == "detection":
        model.score_thresh = 0.3
        assert model.score_thresh == pytest.approx(0.3)
        with pytest.raises(ValueError, match="score_thresh must lie in 0..1"):
            model.score_thresh = 1.5


def test_faster_rcnn_score_thresh_is_the_roi_heads_threshold_and_filters_predictions():
    model = small_model("faster_rcnn").eval()
    model.score_thresh = 0.0
    assert model.roi_heads.score_thresh == 0.0
    image = [torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(1))]
    scores = model.predict(image)[0]["scores"]
    assert scores.numel() > 0
    cut = float(scores.median())
    model.score_thresh = cut
    kept = model.predict(image)[0]["scores"]
    assert kept.numel() == int((scores > cut).sum())
    assert bool((kept > cut).all())


@pytest.mark.parametrize("name", BUILT_IN)
def test_weights_for_another_class_count_reinitialise_exactly_the_class_specific_layers(name, caplog):
    source = small_model(name, num_classes=5)
    target = small_model(name, num_classes=3)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with caplog.at_level("WARNING"):
        report = load_detector_weights(target, source.state_dict(), where="five-class model")
    prefixes = target.class_specific_prefixes
    assert report["reinitialized"] == [p.rstrip(".") for p in prefixes]
    assert "re-initialised" in caplog.text and "for 3 classes" in caplog.text
    theirs = source.state_dict()
    for key, value in target.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith(prefixes):
            assert torch.equal(value, before[key]), f"{key} should keep its fresh initialisation"
        else:
            assert torch.equal(value, theirs[key]), f"{key} should be loaded"


def test_loss_runs_the_family_target_check():
    calls = []

    class Checked(Detector):
        num_classes = 2

        def validate_targets(self, targets, images):
            calls.append(len(images))
            raise ValueError("target 0: checked by the family")

    with pytest.raises(ValueError, match="checked by the family"):
        Checked().loss([torch.rand(3, 8, 8)], [{"masks": torch.zeros(8, 8, dtype=torch.int64)}])
    assert calls == [1]


def test_detection_targets_are_checked_by_default():
    model = small_model("faster_rcnn").train()
    bad = [{"boxes": torch.tensor([[5.0, 5.0, 20.0, 30.0]]), "labels": torch.tensor([0])}]
    with pytest.raises(ValueError, match=r"target 0, box 0: label 0 is outside 1..3"):
        model.loss([torch.rand(3, 96, 128)], bad)


# ---------------------------------------------------------------------- image transform
def test_fixed_size_warps_every_image_and_scales_boxes_per_axis():
    transform = ImageTransform(fixed_size=(448, 448), size_divisibility=64, image_mean=(0, 0, 0), image_std=(1, 1, 1))
    images = [torch.rand(3, 300, 500), torch.rand(3, 480, 200)]
    boxes = [torch.tensor([[10.0, 20.0, 300.0, 290.0]]), torch.tensor([[0.0, 0.0, 200.0, 480.0]])]
    targets = [{"boxes": b, "labels": torch.tensor([1])} for b in boxes]
    batch, scaled = transform(images, targets)
    assert tuple(batch.tensor.shape) == (2, 3, 448, 448)
    assert batch.image_sizes == [(448, 448), (448, 448)]
    assert batch.original_sizes == [(300, 500), (480, 200)]
    # x scaled by 448 / W, y by 448 / H: the aspect is not kept
    expected = torch.tensor([[10 * 448 / 500, 20 * 448 / 300, 300 * 448 / 500, 290 * 448 / 300]])
    torch.testing.assert_close(scaled[0]["boxes"], expected, rtol=0, atol=1e-4)
    torch.testing.assert_close(scaled[1]["boxes"], torch.tensor([[0.0, 0.0, 448.0, 448.0]]), rtol=0, atol=1e-4)
    assert torch.equal(targets[0]["boxes"], boxes[0]), "the targets passed in are not modified"
    # and back: the round trip is exact to float rounding
    restored = transform.postprocess([{"boxes": t["boxes"]} for t in scaled], batch)
    for original, back in zip(boxes, restored):
        torch.testing.assert_close(back["boxes"], original, rtol=0, atol=1e-4)


def test_fixed_size_ignores_min_and_max_size_and_rejects_bad_sizes():
    a = ImageTransform(min_size=100, max_size=120, fixed_size=(64, 96))
    b = ImageTransform(min_size=800, max_size=1333, fixed_size=(64, 96))
    image = torch.rand(3, 50, 70)
    assert torch.equal(a([image])[0].tensor, b([image])[0].tensor)
    assert a([image])[0].image_sizes == [(64, 96)]
    for bad in [(448,), (0, 448), (448, -1)]:
        with pytest.raises(ValueError, match="fixed_size must be"):
            ImageTransform(fixed_size=bad)


def test_extreme_aspect_keeps_one_pixel_and_the_detector_runs():
    assert resized_size(10, 3000, 160, 160) == (1, 160)
    assert resized_size(3000, 10, 160, 160) == (160, 1)
    assert resized_size(480, 640, 800, 1333) == (800, 1066)  # the usual case is untouched
    model = small_model("faster_rcnn", box_score_thresh=0.0)
    target = [{"boxes": torch.tensor([[0.0, 0.0, 100.0, 9.0]]), "labels": torch.tensor([1])}]
    losses = model.train().loss([torch.rand(3, 10, 3000)], target)
    assert all(torch.isfinite(v) for v in losses.values())
    out = model.eval().predict([torch.rand(3, 10, 3000)])[0]
    assert out["boxes"].shape[1] == 4
    assert bool((out["boxes"][:, 2] <= 3000 + 1e-3).all()) and bool((out["boxes"][:, 3] <= 10 + 1e-3).all())


def test_auto_evaluation_choices_are_the_models_own():
    from detect.config import DEFAULTS
    from detect.engine.launch import resolve_eval_choice

    assert DEFAULTS["eval"]["metric"] == "auto" and DEFAULTS["eval"]["best_metric"] == "auto"
    model = small_model("yolov1")
    model.default_metric = "coco"  # a family's own choice wins over the base class's
    assert resolve_eval_choice("auto", model, "default_metric") == "coco"
    assert resolve_eval_choice("auto", model, "default_best_metric") == "bbox/AP50"
    assert resolve_eval_choice("voc07_11pt", model, "default_metric") == "voc07_11pt"
    assert resolve_eval_choice("", model, "default_metric") == ""  # no evaluator


@pytest.mark.parametrize("name", [n for n in BUILT_IN if n != "rcnn"])  # R-CNN has no fast path
def test_a_model_optimized_for_inference_refuses_to_train(name):
    model = small_model(name).optimize_for_inference(channels_last=False)
    assert not model.training
    with pytest.raises(RuntimeError, match="optimized for inference and cannot be put in training mode"):
        model.train()
    model.eval()  # eval stays allowed
