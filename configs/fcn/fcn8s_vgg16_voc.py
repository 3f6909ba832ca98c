"""FCN-8s (at once) on VGG-16, Pascal VOC, as the FCN paper (Long, Shelhamer, Darrell 2015;
PAMI 2017): train on SBD ``train`` (8498 images, Hariharan et al.'s VOC 2011 annotations),
validate on ``seg11valid`` (736 VOC 2011 segmentation val images not in SBD train), mIoU.

- Network: the paper's convolutionalised VGG-16 with ImageNet weights (fc6 7x7, fc7 1x1 from
  the classifier, dropout 0.5), zero-initialised score layers, the at-once FCN-8s (pool4 and
  pool3 scaled by 0.01 and 0.0001, all skips trained from the start; the PAMI paper reports it
  as accurate as the staged 32s -> 16s -> 8s training, in one stage and one config), learned
  2x upsamplings from bilinear, the last 8x fixed bilinear. Images at their own size (no
  resize), no augmentation (the paper found none to help), batch of one image.
- Schedule: the reference implementation's "heavy" online learning (PAMI, section 4.3;
  fcn.berkeleyvision.org ``voc-fcn8s-atonce``): SGD with momentum 0.99, one image per batch,
  the *unnormalised* per-pixel loss (``loss_reduction="sum"``: summed over the ~190k pixels of
  a VOC image), hence lr 1e-10, weight decay 5e-4, 100k iterations (~12 epochs of SBD train).
  The CVPR paper's equivalent statement is "minibatch 20 images, lr 1e-4, momentum 0.9"
  (our engine has no per-parameter lr multiplier, so Caffe's doubled bias lr is not applied).
  The staged nets use lr 1e-10 (32s), 1e-12 (16s), 1e-14 (8s) with this summed loss.

    python tools/train.py configs/fcn/fcn8s_vgg16_voc.py \\
        --set data.root=/data/SBD/benchmark_RELEASE/dataset data.val.voc_root=/data/VOCdevkit/VOC2011
"""
config = dict(
    model=dict(
        name="fcn",
        backbone="vgg16",            # the paper's network (tv:vgg16 pools + fc6/fc7 as convolutions)
        backbone_weights="torchvision",
        layout="skip",
        variant="8s",
        at_once=True,
        loss_reduction="sum",
        num_classes=20,
    ),
    data=dict(
        format="sbd",
        root="data/SBD/benchmark_RELEASE/dataset",
        train=dict(split="train"),
        val=dict(split="seg11valid", voc_root="data/VOCdevkit/VOC2011"),
        masks=True,
        class_names=None,            # the 20 VOC classes
        batch_size=1,
        num_workers=4,
        aspect_ratio_grouping=False,
        transforms=dict(train="eval", val="eval"),
    ),
    train=dict(
        epochs=12,                   # ~100k iterations at batch 1
        optimizer=dict(name="sgd", lr=1e-10, momentum=0.99, weight_decay=5e-4),
        scheduler=dict(name="constant", warmup_iters=0),
        log_interval=100,
    ),
    eval=dict(metric="miou", interval=1, best_metric="sem_seg/mIoU"),
    output_dir="runs/fcn8s_vgg16_voc",
)
