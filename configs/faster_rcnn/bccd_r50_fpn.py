"""Faster R-CNN R50-FPN on BCCD (blood cells: RBC, WBC, Platelets; 640x480 microscope images,
VOC layout) from ImageNet weights: train on train (205 images), validate on val (87); test
(72) with --split test. The set lives beside the repository in ../shared/data/BCCD.

    python tools/train.py configs/faster_rcnn/bccd_r50_fpn.py
    python tools/eval.py --checkpoint runs/faster_rcnn_bccd/best.pth --split test

The images are used at their native size; two annotated boxes have zero size and are
dropped at load (check_policy="drop"). lr 0.01 for a batch of 4 (0.0025 per image).
The backbone starts from torchvision's ImageNet ResNet-50 (fetched once through
torchvision's weights API); offline, point --set model.backbone_weights=/path/to/resnet50.pth
at a saved copy.
"""
config = dict(
    _base_=["../_base/faster_rcnn_r50_fpn.py", "../_base/schedule_1x.py", "../_base/bccd.py"],
    model=dict(min_size=480, max_size=640, box_detections_per_img=100),
    data=dict(num_workers=2),
    train=dict(
        epochs=24,
        optimizer=dict(lr=0.01),
        scheduler=dict(milestones=(16, 22), warmup_iters=100),
    ),
    eval=dict(interval=2),
    output_dir="runs/faster_rcnn_bccd",
)
