"""The contract parts the segmentation and proposal-classifying families share: mask targets,
``predict(images, proposals=...)``, and masks / proposals / ``sem_seg`` through the image
transform (../shared/DESIGN.md, "five families, one contract")."""
import pytest
import torch

from detect.errors import UserInputError
from detect.modeling.base import Detector, SemanticSegmenter, validate_mask_targets, validate_proposals
from detect.modeling.transform import ImageTransform, resize_mask


def _masks(*shapes, value=0):
    return [{"masks": torch.full(shape, value, dtype=torch.int64)} for shape in shapes]


def test_valid_mask_targets_pass_with_ignore_and_all_classes():
    images = [torch.rand(3, 4, 5), torch.rand(3, 2, 3)]
    targets = _masks((4, 5), (2, 3))
    targets[0]["masks"][0, :4] = torch.tensor([0, 1, 2, 255])
    validate_mask_targets(targets, images, num_classes=2)


@pytest.mark.parametrize("bad_value", [3, 254, -1])
def test_mask_value_outside_classes_names_the_image_and_value(bad_value):
    images = [torch.rand(3, 4, 5), torch.rand(3, 4, 5)]
    targets = _masks((4, 5), (4, 5))
    targets[1]["masks"][2, 3] = bad_value
    with pytest.raises(UserInputError, match=rf"target 1: mask values \[{bad_value}\] are outside 0..2 and not 255"):
        validate_mask_targets(targets, images, num_classes=2)


def test_mask_of_the_wrong_size_or_dtype_or_missing_is_named():
    images = [torch.rand(3, 4, 5)]
    with pytest.raises(UserInputError, match=r"target 0: mask of shape \(5, 4\) does not match its image \(4, 5\)"):
        validate_mask_targets(_masks((5, 4)), images, 2)
    with pytest.raises(UserInputError, match="target 0: masks must be int64, got torch.uint8"):
        validate_mask_targets([{"masks": torch.zeros(4, 5, dtype=torch.uint8)}], images, 2)
    with pytest.raises(UserInputError, match="build the dataset with masks=True"):
        validate_mask_targets([{"boxes": torch.zeros(0, 4)}], images, 2)
    with pytest.raises(UserInputError, match="expected a list of 1 target dicts"):
        validate_mask_targets(_masks((4, 5), (4, 5)), images, 2)


class _Constant(SemanticSegmenter):
    """A segmenter that predicts class 1 everywhere; its loss is the mean target value."""

    num_classes = 2

    def _compute_losses(self, images, targets):
        return {"loss_mean": torch.stack([t["masks"].float().mean() for t in targets]).mean()}

    def _compute_predictions(self, images):
        return [{"sem_seg": torch.stack([torch.zeros(i.shape[1:]), torch.ones(i.shape[1:]), torch.zeros(i.shape[1:])])}
                for i in images]


def test_segmenter_states_its_task_metric_and_has_no_score_threshold():
    model = _Constant()
    assert model.task == "semantic_segmentation"
    assert (model.default_metric, model.default_best_metric) == ("miou", "sem_seg/mIoU")
    assert model.score_thresh is None
    model.score_thresh = None  # a no-op, so generic code may reset it
    with pytest.raises(UserInputError, match="labels every pixel; it has no score threshold"):
        model.score_thresh = 0.5


def test_segmenter_loss_checks_masks_against_the_images():
    model = _Constant()
    assert model.loss([torch.rand(3, 2, 2)], [{"masks": torch.tensor([[0, 1], [2, 255]])}])["loss_mean"].item() == 64.5
    with pytest.raises(UserInputError, match=r"target 0: mask values \[7\]"):
        model.loss([torch.rand(3, 2, 2)], [{"masks": torch.tensor([[0, 7], [2, 255]])}])


def test_proposals_are_refused_by_a_family_that_does_not_take_them():
    with pytest.raises(UserInputError, match="is for R-CNN and Fast R-CNN"):
        _Constant().predict([torch.rand(3, 4, 4)], proposals=[torch.zeros(0, 4)])


def test_proposals_reach_a_family_that_accepts_them_and_are_validated():
    seen = []

    class Classifier(Detector):
        num_classes = 1
        accepts_proposals = True

        def _compute_predictions(self, images, proposals=None):
            seen.append(proposals)
            return [{"boxes": p, "scores": torch.ones(len(p)), "labels": torch.ones(len(p), dtype=torch.int64)}
                    for p in (proposals or [torch.zeros(0, 4)] * len(images))]

    model = Classifier()
    boxes = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert torch.equal(model.predict([torch.rand(3, 8, 8)], proposals=[boxes])[0]["boxes"], boxes)
    model.predict([torch.rand(3, 8, 8)])
    assert seen[-1] is None  # no proposals: the family's own generator (or its error)
    with pytest.raises(UserInputError, match="proposals must be a list of 2 Tensor"):
        model.predict([torch.rand(3, 8, 8)] * 2, proposals=[boxes])
    with pytest.raises(UserInputError, match=r"proposals of image 0: expected a float Tensor \[P, 4\]"):
        validate_proposals([torch.zeros(3, 4, dtype=torch.int64)], 1)


def test_transform_resizes_masks_nearest_and_scales_proposals_per_axis():
    transform = ImageTransform(min_size=20, max_size=1000, size_divisibility=16)
    mask = torch.zeros(10, 15, dtype=torch.int64)
    mask[2:6, 3:9] = 2
    mask[0, 0] = 255
    proposals = torch.tensor([[3.0, 2.0, 9.0, 6.0]])
    targets = [{"boxes": proposals.clone(), "labels": torch.tensor([2]), "masks": mask, "proposals": proposals}]
    batch, out = transform([torch.rand(3, 10, 15)], targets)
    assert batch.image_sizes == [(20, 30)]
    resized = out[0]["masks"]
    assert resized.shape == (20, 30) and resized.dtype == torch.int64
    assert set(resized.unique().tolist()) == {0, 2, 255}  # nearest neighbour never blends labels
    assert torch.equal(resized, mask.repeat_interleave(2, 0).repeat_interleave(2, 1))  # exact 2x upsampling
    assert torch.equal(out[0]["proposals"], proposals * 2)
    assert torch.equal(targets[0]["masks"], mask)  # the caller's targets are untouched
    padded = ImageTransform.pad_masks([resized], batch)
    assert padded.shape == (1, 32, 32)
    assert bool((padded[0, 20:] == 255).all()) and bool((padded[0, :, 30:] == 255).all())
    assert torch.equal(padded[0, :20, :30], resized)


def test_transform_maps_given_proposals_into_network_pixels_and_sem_seg_back():
    transform = ImageTransform(min_size=20, max_size=1000, size_divisibility=16)
    images = [torch.rand(3, 10, 15), torch.rand(3, 7, 9)]
    batch, _ = transform(images)
    scaled = transform.scale_proposals([torch.tensor([[1.0, 1.0, 5.0, 5.0]]), torch.zeros(0, 4)], batch)
    assert torch.allclose(scaled[0], torch.tensor([[2.0, 2.0, 10.0, 10.0]]))
    assert scaled[1].shape == (0, 4)
    # logits constant per channel survive the crop + bilinear resize exactly, at each input's size
    logits = torch.arange(3.0)[None, :, None, None].expand(2, 3, *batch.padded_size).clone()
    logits[:, :, batch.image_sizes[1][0]:, :] = 99.0  # the padding must not leak into image 1
    out = transform.postprocess_sem_seg(logits, batch)
    assert [tuple(o.shape) for o in out] == [(3, 10, 15), (3, 7, 9)]
    assert torch.allclose(out[1], torch.arange(3.0)[:, None, None].expand(3, 7, 9))


def test_resize_mask_identity_keeps_the_tensor():
    mask = torch.randint(0, 3, (5, 6))
    assert resize_mask(mask, (5, 6)) is mask
