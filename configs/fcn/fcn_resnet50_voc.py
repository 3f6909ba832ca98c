"""FCN-ResNet50 on Pascal VOC 2012 with torchvision's recipe (``references/segmentation``,
``--model fcn_resnet50 --aux-loss --dataset voc``): train on VOC 2012 ``train`` (1464 images
with SegmentationClass masks), evaluate on ``val`` (1449), mIoU.

- Network: ``torchvision.models.segmentation.fcn_resnet50``'s layout: ResNet-50 with ImageNet
  weights dilated in layer3/layer4 (output stride 8), FCNHead (3x3 conv to 512, BatchNorm,
  ReLU, dropout 0.1, 1x1) and the auxiliary FCNHead on c4 with loss weight 0.5.
- Data: torchvision's presets: shorter side resized at random to 0.5-2x of 520, horizontal
  flip, padded (mask 255) and cropped to 480 x 480 for training; shorter side 520 for
  evaluation (``seg_train`` / ``seg_eval``).
- Schedule: SGD, lr 0.02 at batch 32 (torchvision: 8 GPUs x 4), momentum 0.9, weight decay
  1e-4, poly decay ``(1 - it / total) ** 0.9`` per iteration, 30 epochs, no warm-up.
  (torchvision gives the aux head 10x the lr; our engine has no per-module lr, so it shares
  the base lr.)
- To start from torchvision's COCO-with-VOC-labels weights (60.5 mIoU on COCO val) instead:
  ``--set model.weights=fcn_resnet50_coco-1167a1af.pth`` (see detect.modeling.meta_arch.fcn).

    python tools/train.py configs/fcn/fcn_resnet50_voc.py --set data.root=/data/VOCdevkit/VOC2012
"""
config = dict(
    model=dict(
        name="fcn",
        backbone="resnet50",
        backbone_weights="torchvision",
        layout="torchvision",
        aux_loss=True,
        aux_weight=0.5,
        num_classes=20,
    ),
    data=dict(
        format="voc",
        root="data/VOCdevkit/VOC2012",
        train=dict(split="train"),
        val=dict(split="val"),
        masks=True,
        class_names=None,            # the 20 VOC classes
        batch_size=32,
        num_workers=8,
        aspect_ratio_grouping=False,
        transforms=dict(train=dict(name="seg_train", base_size=520, scale=(0.5, 2.0), crop_size=480),
                        val=dict(name="seg_eval", base_size=520)),
    ),
    train=dict(
        epochs=30,
        optimizer=dict(name="sgd", lr=0.02, momentum=0.9, weight_decay=1e-4),
        scheduler=dict(name="poly", power=0.9, warmup_iters=0),
        log_interval=20,
    ),
    eval=dict(metric="miou", interval=1, best_metric="sem_seg/mIoU"),
    output_dir="runs/fcn_resnet50_voc",
)
