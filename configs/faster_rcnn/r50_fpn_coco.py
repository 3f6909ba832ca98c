"""Faster R-CNN R50-FPN 1x on COCO 2017: the recipe of torchvision's fasterrcnn_resnet50_fpn
(37.0 box AP) and detectron2's faster_rcnn_R_50_FPN_1x (37.9).

    torchrun --nproc_per_node=8 tools/train.py configs/faster_rcnn/r50_fpn_coco.py
    # fewer GPUs: keep the per-GPU batch, scale the lr: 2 GPUs -> --set train.optimizer.lr=0.005
"""
config = dict(
    _base_=["../_base/faster_rcnn_r50_fpn.py", "../_base/coco.py", "../_base/schedule_1x.py"],
    output_dir="runs/faster_rcnn_r50_fpn_coco",
)
