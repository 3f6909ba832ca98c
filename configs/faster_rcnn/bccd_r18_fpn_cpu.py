"""Faster R-CNN R18-FPN on BCCD trained from scratch on a CPU (no downloads).

The BCCD recipe for machines with neither a GPU nor network access: ResNet-18 with
trainable BatchNorm from random weights, images at 384x512 (BCCD is 640x480), a 128-wide
FPN, fewer proposals and sampled RoIs than the COCO defaults, AdamW with a cosine decay.
docs/training.md records the mAP and the wall time measured with it. With ImageNet
weights and a GPU, configs/faster_rcnn/bccd_r50_fpn.py is the better recipe.

    python tools/train.py configs/faster_rcnn/bccd_r18_fpn_cpu.py
    python tools/eval.py --checkpoint runs/faster_rcnn_bccd_r18_cpu/best.pth --split test
"""
config = dict(
    _base_=["../_base/bccd.py"],
    model=dict(
        name="faster_rcnn",
        backbone="resnet18",
        fpn=True,
        fpn_channels=128,
        min_size=384,
        max_size=512,
        rpn_pre_nms_top_n_train=1000,
        rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=500,
        rpn_post_nms_top_n_test=300,
        box_batch_size_per_image=128,
        box_roi_pool="roi_align",
        box_sampling_ratio=1,
        box_representation_size=512,
        box_detections_per_img=100,
        channels_last=True,
    ),
    data=dict(num_workers=1),
    train=dict(
        epochs=24,
        device="cpu",
        optimizer=dict(name="adamw", lr=1e-3, weight_decay=1e-4, norm_weight_decay=0.0),
        scheduler=dict(name="cosine", warmup_iters=100, warmup_factor=0.01, min_lr_ratio=0.05),
        clip_grad_norm=10.0,
        log_interval=20,
    ),
    eval=dict(interval=4),
    output_dir="runs/faster_rcnn_bccd_r18_cpu",
)
