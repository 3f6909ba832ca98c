"""The CPU demo: Faster R-CNN with a ResNet-18 FPN trained from scratch on the built-in
shapes set (generated under data/shapes on first use), sized for a 2-core CPU.

What makes it fast enough (torchvision's COCO defaults reach ~0.02 mAP50 in 10 CPU minutes):
- 160 px images as generated (no up-scaling to 800), a light two-FC head (256 wide),
- few proposals (300 train / 100 test) and 64 sampled RoIs per image (COCO: 2000 / 512),
- RoIAlign with one sample per bin, AdamW with a short warm-up and a cosine decay,
- trainable BatchNorm (no pretrained weights, so the demo needs no network), batch 4,
- channels-last convolutions; 384 training images x 10 epochs (960 steps): 5.4-5.9 min of
  training on 2 cores and val mAP50 0.988 in the fresh-clone runs of docs/training.md.

    python tools/train.py configs/faster_rcnn/shapes_demo.py
"""
config = dict(
    model=dict(
        name="faster_rcnn",
        backbone="resnet18",
        fpn=True,
        num_classes=None,        # filled in from the shapes set's classes
        fpn_channels=64,
        min_size=160,
        max_size=160,
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100,
        rpn_batch_size_per_image=128,
        box_batch_size_per_image=64,
        box_roi_pool="roi_align",
        box_sampling_ratio=1,
        box_representation_size=256,
        box_detections_per_img=50,
        channels_last=True,      # NHWC convolutions: ~0.75x the step time on this CPU
    ),
    data=dict(
        format="shapes",
        root="data/shapes",
        shapes=dict(num_images=480, image_size=160, seed=0),  # 384 train / 96 val images, 3 classes
        train=dict(split="train"),
        val=dict(split="val"),
        class_names=None,        # the shapes set's own classes
        batch_size=4,
        num_workers=1,
        aspect_ratio_grouping=False,
    ),
    train=dict(
        epochs=10,
        device="cpu",
        optimizer=dict(name="adamw", lr=1e-3, weight_decay=1e-4, norm_weight_decay=0.0),
        scheduler=dict(name="cosine", warmup_iters=50, warmup_factor=0.01, min_lr_ratio=0.05),
        clip_grad_norm=10.0,
        log_interval=10,
    ),
    eval=dict(metric="voc_area", interval=5, best_metric="bbox/AP50"),
    output_dir="runs/shapes_demo",
)
