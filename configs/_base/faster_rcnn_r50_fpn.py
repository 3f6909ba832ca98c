"""Faster R-CNN R50-FPN as torchvision's fasterrcnn_resnet50_fpn (v1): 800/1333 images,
RPN 2000/1000 proposals, 512 sampled RoIs per image, 7x7 RoIAlign, two-FC 1024 head.
Backbone from torchvision's ImageNet weights (frozen BN, stem and first stage frozen)."""
config = dict(
    model=dict(
        name="faster_rcnn",
        backbone="resnet50",
        fpn=True,
        num_classes=None,            # filled in by the recipe (foreground classes only)
        backbone_weights="torchvision",
        min_size=800,
        max_size=1333,
        rpn_pre_nms_top_n_train=2000,
        rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=1000,
        rpn_post_nms_top_n_test=1000,
        box_batch_size_per_image=512,
        box_roi_pool="roi_align",
        box_score_thresh=0.05,
        box_detections_per_img=100,
        channels_last=True,          # NHWC convolutions (faster with oneDNN on CPU and tensor cores on GPU)
    ),
)
