"""Faster R-CNN R50-FPN on Pascal VOC 2007: train on trainval (5011 images), evaluate on test
(4952) with the VOC2007 11-point mAP. Schedule as detectron2's VOC recipe scaled to VOC07:
lr 0.02 at batch 16, 18 epochs (~5.6k iterations), x0.1 at epochs 12 and 16.

    tools/train.py configs/faster_rcnn/r50_fpn_voc.py --set data.root=/data/VOCdevkit/VOC2007
"""
config = dict(
    _base_=["../_base/faster_rcnn_r50_fpn.py", "../_base/schedule_1x.py"],
    model=dict(num_classes=20, min_size=(480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800), max_size=1333),
    data=dict(
        format="voc",
        root="data/VOCdevkit/VOC2007",
        train=dict(split="trainval"),
        val=dict(split="test"),
        class_names=None,        # the 20 VOC classes
    ),
    train=dict(epochs=18, scheduler=dict(milestones=(12, 16), warmup_iters=500)),
    eval=dict(metric="voc07_11pt", interval=2, best_metric="bbox/AP50"),
    output_dir="runs/faster_rcnn_r50_fpn_voc",
)
