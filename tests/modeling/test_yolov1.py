"""YOLOv1: the paper's network, Fast YOLO and any backbone (shapes and parameter counts), the
output layout and darknet's, inference post-processing, target checks and a one-batch
overfit on the shapes set."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from detect import build_detector
from detect.evaluation.voc import voc_evaluate
from detect.modeling.meta_arch.yolov1 import (
    YOLOv1,
    class_scores,
    from_darknet_layout,
    postprocess_detections,
    to_darknet_layout,
)
from detect.modeling.yolo_loss import encode_targets

SMALL = dict(backbone="resnet18", head="conv", input_size=(128, 128), grid_size=4)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def small_model(num_classes=3, **extra):
    torch.manual_seed(0)
    return build_detector("yolov1", num_classes=num_classes, **{**SMALL, **extra})


def conv_params(layers, in_channels=3, bias=True):
    """Parameters of a chain of (kernel, filters) convolutions: k*k*c_in*c_out (+ c_out)."""
    total = 0
    for kernel, filters in layers:
        total += kernel * kernel * in_channels * filters + (filters if bias else 0)
        in_channels = filters
    return total, in_channels


# Figure 3 of the paper: the 20 pre-trained convolutions, then 4 detection convolutions.
FIGURE_3_TRUNK = (
    [(7, 64), (3, 192), (1, 128), (3, 256), (1, 256), (3, 512)]
    + [(1, 256), (3, 512)] * 4 + [(1, 512), (3, 1024)]
    + [(1, 512), (3, 1024)] * 2
)
FIGURE_3_DETECTION = [(3, 1024)] * 4


def paper_parameter_count(S=7, B=2, C=20):
    trunk, channels = conv_params(FIGURE_3_TRUNK)
    det, channels = conv_params(FIGURE_3_DETECTION, channels)
    fc1 = S * S * channels * 4096 + 4096
    fc2 = 4096 * S * S * (B * 5 + C) + S * S * (B * 5 + C)
    return trunk, det, fc1, fc2


def check_predictions(outputs, num_images, num_classes):
    assert len(outputs) == num_images
    for out in outputs:
        assert set(out) == {"boxes", "scores", "labels"}
        m = out["boxes"].shape[0]
        assert out["boxes"].shape == (m, 4) and out["boxes"].dtype == torch.float32
        assert out["scores"].shape == (m,) and out["labels"].shape == (m,) and out["labels"].dtype == torch.int64
        assert m <= 100
        if m:
            assert int(out["labels"].min()) >= 1 and int(out["labels"].max()) <= num_classes
            assert float(out["scores"].min()) > 0.001 and float(out["scores"].max()) <= 1.0


# ----------------------------------------------------------------------------- networks
@pytest.mark.slow
def test_paper_network_parameter_count_layers_and_output():
    trunk, det, fc1, fc2 = paper_parameter_count()
    assert (trunk, det, fc1, fc2) == (22_403_136, 37_752_832, 205_524_992, 6_022_590)
    model = build_detector("yolov1", num_classes=20).eval()
    assert sum(p.numel() for p in model.parameters()) == trunk + det + fc1 + fc2 == 271_703_550
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 24 and all(c.bias is not None for c in convs)
    assert [c.stride[0] for c in convs] == [2] + [1] * 20 + [2, 1, 1]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    leaky = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(leaky) == 25 and {m.negative_slope for m in leaky} == {0.1}  # 24 convs + FC 4096
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.5]
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [4096, 1470]
    with torch.no_grad():
        raw = model.head_outputs(torch.rand(1, 3, 448, 448))
    assert raw.shape == (1, 7, 7, 30)
    check_predictions(model.predict([torch.rand(3, 300, 500)]), 1, 20)


def test_bn_variant_has_batchnorm_after_every_convolution_and_no_conv_bias():
    model = build_detector("yolov1", num_classes=20, norm="bn", head="conv", input_size=(224, 224))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 21  # the 20 trunk convolutions + the 1x1 prediction
    assert all(c.bias is None for c in convs[:-1]) and convs[-1].bias is not None
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 20
    assert model.grid_size == 7


def test_fast_yolo_nine_convolutions_parameter_count_and_output():
    torch.manual_seed(0)
    model = build_detector("yolov1", num_classes=20, backbone="fast_yolo").eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 128, 256, 512, 1024, 1024, 1024]
    trunk, channels = conv_params([(3, c.out_channels) for c in convs])
    fcs = (7 * 7 * channels * 256 + 256) + (256 * 4096 + 4096) + (4096 * 1470 + 1470)
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [256, 4096, 1470]
    assert sum(p.numel() for p in model.parameters()) == trunk + fcs == 45_089_374
    with torch.no_grad():
        assert model.head_outputs(torch.rand(1, 3, 448, 448)).shape == (1, 7, 7, 30)
    check_predictions(model.predict([torch.rand(3, 448, 448)]), 1, 20)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["resnet18", "googlenet", "tv:vgg16"])
def test_any_backbone_with_the_paper_head_gives_a_7x7x30_output_at_448(backbone):
    torch.manual_seed(0)
    model = build_detector("yolov1", num_classes=20, backbone=backbone).eval()
    assert len(model.head.convs) == 4 and model.head.convs[1].conv.stride == (2, 2)
    with torch.no_grad():
        raw = model.head_outputs(model.transform([torch.rand(3, 448, 448)])[0].tensor)
    assert raw.shape == (1, 7, 7, 30)
    check_predictions(model.predict([torch.rand(3, 448, 448)]), 1, 20)


def test_conv_head_grid_is_the_feature_map():
    model = small_model(num_classes=20, input_size=(448, 448), grid_size=14)
    assert isinstance(model.head.pred, nn.Conv2d) and model.head.pred.out_channels == 30
    assert model.head.fc is None
    with torch.no_grad():
        assert model.head_outputs(torch.zeros(1, 3, 448, 448)).shape == (1, 14, 14, 30)


def test_grid_that_does_not_fit_the_input_raises_naming_the_sizes_that_work():
    with pytest.raises(ValueError, match=r"total stride is 64.*use input_size=\(448, 448\)"):
        build_detector("yolov1", num_classes=20, backbone="resnet18", input_size=(224, 224), fc_channels=16)
    with pytest.raises(ValueError, match=r"total stride is 32.*use input_size=\(224, 224\) for grid_size=7"):
        build_detector("yolov1", num_classes=20, backbone="resnet18", head="conv", input_size=(448, 448))
    with pytest.raises(ValueError, match="head must be one of"):
        build_detector("yolov1", num_classes=20, backbone="resnet18", head="mlp")
    with pytest.raises(ValueError, match="num_classes"):
        build_detector("yolov1", backbone="resnet18", head="conv", input_size=(224, 224))


def test_contract_attributes_and_defaults():
    model = small_model()
    assert isinstance(model, YOLOv1)
    assert model.task == "detection" and model.num_classes == 3
    assert model.score_thresh == pytest.approx(0.001)
    assert YOLOv1.default_predict_score_thresh == 0.2 and model.default_metric == "voc_area"
    assert model.class_specific_prefixes == ("head.pred.",)
    assert model.transform.fixed_size == (128, 128)
    loss = model.criterion
    assert (loss.lambda_coord, loss.lambda_noobj, loss.rescore) == (5.0, 0.5, True)
    assert (model.nms_thresh, model.detections_per_img) == (0.5, 100)
    # the darknet networks take 0..1 input, the others ImageNet normalisation
    fast = build_detector("yolov1", num_classes=3, backbone="fast_yolo", head="conv", input_size=(448, 448))
    assert fast.transform.image_mean == (0.0, 0.0, 0.0) and fast.transform.image_std == (1.0, 1.0, 1.0)
    assert model.transform.image_mean == (0.485, 0.456, 0.406)


def test_config_rebuilds_the_model_and_weights_load(tmp_path):
    config = dict(name="yolov1", num_classes=3, norm="bn", head_convs=1, head_channels=32, **SMALL)
    torch.manual_seed(0)
    model = build_detector(**config).eval()
    path = tmp_path / "model.pth"
    torch.save({"model": model.state_dict()}, path)
    torch.manual_seed(1)
    again = build_detector(**config, weights=str(path)).eval()
    image = [torch.rand(3, 90, 120, generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        a = model.head_outputs(model.transform(image)[0].tensor)
        b = again.head_outputs(again.transform(image)[0].tensor)
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------- layouts
def test_darknet_layout_round_trip_and_positions():
    S, B, C = 3, 2, 4
    ours = torch.randn(2, S, S, B * 5 + C)
    flat = to_darknet_layout(ours, B)
    assert flat.shape == (2, S * S * (B * 5 + C))
    assert torch.equal(from_darknet_layout(flat, S, B, C), ours)
    assert torch.equal(to_darknet_layout(from_darknet_layout(flat, S, B, C), B), flat)
    i, j, b, c, k = 2, 1, 1, 3, 2  # cell row 2, column 1; predictor 1; class 3; box field 2 (sqrt w)
    cell = i * S + j
    assert flat[0, cell * C + c] == ours[0, i, j, B * 5 + c]
    assert flat[0, S * S * C + cell * B + b] == ours[0, i, j, b * 5 + 4]
    assert flat[0, S * S * C + S * S * B + (cell * B + b) * 4 + k] == ours[0, i, j, b * 5 + k]
    with pytest.raises(ValueError):
        from_darknet_layout(flat[:, 1:], S, B, C)


# ----------------------------------------------------------------------------- inference
def hand_output(S=2, B=2, C=2):
    """Cell (0, 0): predictor 0 (.5, .5, .5, .5, conf .8), predictor 1 the same box with conf
    .6; classes (.5, .4). Everything else 0."""
    out = torch.zeros(1, S, S, B * 5 + C)
    out[0, 0, 0] = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.8, 0.5, 0.5, 0.5, 0.5, 0.6, 0.5, 0.4])
    return out


def test_scores_are_class_probability_times_confidence():
    out = hand_output()
    out[0, 1, 0, 4] = -0.3  # a negative confidence gives 0, not a positive score from (-) * (-)
    out[0, 1, 0, 10:] = torch.tensor([-0.5, 0.9])
    scores = class_scores(out, 2)
    assert scores.shape == (1, 2, 2, 2, 2)
    conf, probs = torch.tensor([0.8, 0.6]), torch.tensor([0.5, 0.4])  # float32, as the output
    assert torch.equal(scores[0, 0, 0], torch.stack([conf[0] * probs, conf[1] * probs]))  # exactly
    assert scores[0, 1, 0].abs().sum() == 0 and scores[0, 1, 1].abs().sum() == 0
    out[0, 0, 0, 4], out[0, 0, 0, 10] = 1.5, 1.2
    assert float(class_scores(out, 2)[0, 0, 0, 0, 0]) == 1.0  # at most 1


def test_nms_is_per_class():
    """Predictors 0 and 1 of cell (0, 0) give the same box (12.5 .. 37.5 px in 100 x 100):
    per class the lower score is suppressed, across classes nothing is."""
    dets = postprocess_detections(hand_output(), 2, [(100, 100)], 0.0, 0.5, 100)[0]
    assert dets["labels"].tolist() == [1, 2]
    torch.testing.assert_close(dets["scores"], torch.tensor([0.8 * 0.5, 0.8 * 0.4]))
    torch.testing.assert_close(dets["boxes"], torch.tensor([[12.5, 12.5, 37.5, 37.5]] * 2))
    # the score threshold drops what scores at most it, detections_per_img keeps the best
    assert postprocess_detections(hand_output(), 2, [(100, 100)], 0.35, 0.5, 100)[0]["labels"].tolist() == [1]
    assert postprocess_detections(hand_output(), 2, [(100, 100)], 0.0, 0.5, 1)[0]["scores"].tolist() == [pytest.approx(0.4)]
    # boxes are clipped to the input
    out = hand_output()
    out[0, 0, 0, :4] = torch.tensor([0.0, 0.0, 0.8, 0.8])  # centre (0, 0), 64 x 64 px
    boxes = postprocess_detections(out, 2, [(100, 100)], 0.0, 0.5, 100)[0]["boxes"]
    assert boxes[0].tolist() == pytest.approx([0.0, 0.0, 32.0, 32.0])


def test_predictions_in_input_coordinates_of_a_non_square_image():
    """A 300 x 500 (h x w) image is warped to 128 x 128; a box set in the 4 x 4 grid of the
    network input maps back per axis (x * 500 / 128, y * 300 / 128)."""
    model = small_model().eval()
    out = torch.zeros(1, 4, 4, 13)
    # cell row 1, column 2: centre ((2 + .5) / 4, (1 + .25) / 4) = (80, 40) px of 128; w, h = .25, .16
    out[0, 1, 2, :5] = torch.tensor([0.5, 0.25, 0.5, 0.4, 0.9])
    out[0, 1, 2, 10:] = torch.tensor([0.0, 0.0, 1.0])
    model.head_outputs = lambda tensor: out.expand(tensor.shape[0], -1, -1, -1)
    dets = model.predict([torch.rand(3, 300, 500)])[0]
    assert dets["labels"].tolist() == [3] and dets["scores"].tolist() == [pytest.approx(0.9)]
    x1, y1, x2, y2 = 80 - 16, 40 - 10.24, 80 + 16, 40 + 10.24  # in the 128 x 128 input
    expected = torch.tensor([[x1 * 500 / 128, y1 * 300 / 128, x2 * 500 / 128, y2 * 300 / 128]])
    torch.testing.assert_close(dets["boxes"], expected, rtol=0, atol=1e-3)
    model.score_thresh = 0.95
    assert model.predict([torch.rand(3, 300, 500)])[0]["boxes"].shape == (0, 4)


def test_loss_and_predict_keep_the_mode_and_empty_targets_work():
    model = small_model().train()
    images = [torch.rand(3, 100, 140), torch.rand(3, 80, 80)]
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    losses = model(images, empty)
    assert set(losses) == {"loss_xy", "loss_wh", "loss_obj", "loss_noobj", "loss_cls"}
    assert all(float(losses[k].detach()) == 0.0 for k in ("loss_xy", "loss_wh", "loss_obj", "loss_cls"))
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    check_predictions(model.predict(images), 2, 3)
    assert model.training
    model.eval()
    assert torch.isfinite(sum(model.loss(images, empty).values()))
    assert not model.training


@pytest.mark.parametrize(
    "boxes, labels, message",
    [
        ([[10.0, 10.0, 10.0, 30.0]], [1], r"target 1, box 0: degenerate"),
        ([[10.0, 10.0, 20.0, 30.0]], [0], r"target 1, box 0: label 0 is outside 1..3"),
        ([[10.0, 10.0, 20.0, 30.0], [1.0, 1.0, 5.0, 5.0]], [1, 4], r"target 1, box 1: label 4 is outside 1..3"),
    ],
)
def test_bad_targets_raise_naming_the_index(boxes, labels, message):
    model = small_model().train()
    good = {"boxes": torch.tensor([[5.0, 5.0, 50.0, 60.0]]), "labels": torch.tensor([2])}
    bad = {"boxes": torch.tensor(boxes), "labels": torch.tensor(labels)}
    with pytest.raises(ValueError, match=message):
        model.loss([torch.rand(3, 96, 96)] * 2, [good, bad])


# ----------------------------------------------------------------------------- training
@pytest.mark.slow
def test_one_batch_of_shapes_overfits(make_shapes_batch):
    """ResNet-18 + 1x1 conv head at 128 x 128 (4 x 4 grid), 4 shapes images, 60 Adam steps:
    the loss falls by > 100x and VOC AP50 on the batch exceeds 0.9 (about 15 s on one core)."""
    images, targets = make_shapes_batch([8, 9, 10, 11])
    model = small_model()
    batch, scaled = model.transform(images, targets)
    assert len(encode_targets(scaled, batch.image_sizes[0], 4)["index"]) == 8  # every object owns a cell
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    history = []
    for _ in range(60):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    assert history[-1] < history[0] / 100, history[::10]
    outputs = model.eval()(images)
    ap = voc_evaluate(outputs, targets, num_classes=3, iou_threshold=0.5)
    assert float(ap.mean()) > 0.9, ap


@pytest.mark.parity
def test_optimize_for_inference_keeps_the_outputs_and_forbids_training():
    model = small_model(norm="bn", head_convs=1, head_channels=32).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2, generator=generator)
                m.running_var.uniform_(0.5, 1.5, generator=generator)
                m.weight.uniform_(0.5, 1.5, generator=generator)
    images = [torch.rand(3, 90, 120, generator=generator)]
    with torch.no_grad():
        before = model.head_outputs(model.transform(images)[0].tensor)
    model.score_thresh = 0.0
    expected = model.predict(images)[0]
    model.optimize_for_inference()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        after = model.head_outputs(model.transform(images)[0].tensor)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    got = model.predict(images)[0]
    assert got["boxes"].shape[0] > 0 and got["boxes"].requires_grad is False
    torch.testing.assert_close(got["scores"][:10], expected["scores"][:10], rtol=0, atol=1e-4)
    target = [{"boxes": torch.tensor([[5.0, 5.0, 50.0, 60.0]]), "labels": torch.tensor([1])}]
    with pytest.raises(RuntimeError, match="optimized for inference"):
        model.loss(images, target)
    with pytest.raises(RuntimeError, match="optimized for inference"):
        model.train()
