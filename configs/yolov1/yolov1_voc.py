"""YOLOv1 on Pascal VOC as in the paper (Redmon et al. 2016, section 2.2).

The paper's network (24 convolutions, FC 4096, dropout 0.5, FC to 7 x 7 x 30) on images
warped to 448 x 448; the ``yolo`` augmentation preset (random scaling and translation up to
20% of the image, exposure and saturation up to 1.5x in HSV, horizontal flip). Schedule:
135 epochs at batch 64, SGD momentum 0.9, weight decay 5e-4; the learning rate rises from
1e-3 to 1e-2 over the first epochs, stays at 1e-2 for 75 epochs, then 1e-3 for 30 and 1e-4
for 30. The paper trains on VOC 2007 + 2012 trainval (16.5k images) and tests on VOC 2007
test (63.4 mAP); its first 20 convolutions were pre-trained on ImageNet
(``backbone_weights=PATH`` for a ``yolov1_darknet`` state dict). Point ``data.root`` at a
VOC folder (here VOC2007 trainval / test, as the other VOC recipes).

    python tools/train.py configs/yolov1/yolov1_voc.py --set data.root=/data/VOCdevkit/VOC2007
"""
config = dict(
    model=dict(
        name="yolov1",
        backbone="yolov1",       # the paper's network
        num_classes=20,
        input_size=(448, 448),
        grid_size=7,
        boxes_per_cell=2,
        lambda_coord=5.0,
        lambda_noobj=0.5,
        dropout=0.5,
    ),
    data=dict(
        format="voc",
        root="data/VOCdevkit/VOC2007",
        train=dict(split="trainval"),
        val=dict(split="test"),
        class_names=None,        # the 20 VOC classes
        batch_size=64,
        num_workers=8,
        aspect_ratio_grouping=False,  # every image is warped to 448 x 448
        transforms=dict(train="yolo", val="eval"),
    ),
    train=dict(
        epochs=135,
        optimizer=dict(name="sgd", lr=1e-2, momentum=0.9, weight_decay=5e-4),
        # 1e-3 -> 1e-2 over the first ~2 epochs (VOC07+12: ~260 iterations per epoch at batch 64),
        # then x0.1 after 75 and after 105 epochs.
        scheduler=dict(name="multistep", milestones=(75, 105), gamma=0.1, warmup_iters=520, warmup_factor=0.1),
    ),
    eval=dict(metric="voc07_11pt", interval=5, best_metric="bbox/AP50"),
    output_dir="runs/yolov1_voc",
)
