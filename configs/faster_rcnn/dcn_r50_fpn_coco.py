"""Faster R-CNN with a deformable-convolution ResNet-50 (DCN in stages c3-c5) and FPN, 1x on
COCO 2017; otherwise the R50-FPN recipe. The offsets start at zero, so from ImageNet weights
the network starts as the plain R50 and learns its sampling offsets (mmdetection's
faster_rcnn_r50_fpn_dconv_c3-c5_1x reaches 41.3 box AP)."""
config = dict(
    _base_="r50_fpn_coco.py",
    model=dict(backbone="dcn_resnet50"),
    output_dir="runs/faster_rcnn_dcn_r50_fpn_coco",
)
