"""Fast R-CNN on the built-in shapes set on a CPU, from scratch (no downloads): the recipe of
the Fast R-CNN shapes figures in docs/training.md.

The paper's training (hierarchical batches, 64 RoIs per image with 25 % foreground at IoU
>= 0.5 and background from IoU [0.1, 0.5), the ground-truth boxes among the RoIs, cross
entropy + smooth L1, horizontal flips, test NMS 0.3) on precomputed selective-search
proposals, with what makes it fit a 2-core CPU: the ResNet-18 FPN of
``configs/faster_rcnn/shapes_demo.py`` from random weights (trainable BatchNorm, 64 FPN
channels, a 256-wide two-FC head, RoIAlign with one sample per bin), 160 px images as
generated, AdamW with a cosine decay and batches of 4 images.

Make the proposal files first (selective search, R-CNN's "fast" mode; shapes images give
~100 boxes each), then train and evaluate; the same files serve ``configs/rcnn/shapes_cpu.py``:

    python tools/make_proposals.py configs/fast_rcnn/shapes_cpu.py --split train --output runs/proposals/shapes_train_ss.pth
    python tools/make_proposals.py configs/fast_rcnn/shapes_cpu.py --split val --output runs/proposals/shapes_val_ss.pth
    python tools/train.py configs/fast_rcnn/shapes_cpu.py
    python tools/eval.py --checkpoint runs/fast_rcnn_shapes_cpu/best.pth
    python tools/infer.py --checkpoint runs/fast_rcnn_shapes_cpu/best.pth --source data/shapes/JPEGImages  # selective search on the fly

Elsewhere: ``--set data.train.proposal_file=PATH data.val.proposal_file=PATH``.
"""
config = dict(
    model=dict(
        name="fast_rcnn",
        backbone="resnet18",
        fpn=True,
        num_classes=None,        # filled in from the shapes set's classes
        fpn_channels=64,
        min_size=160,
        max_size=160,
        box_batch_size_per_image=64,
        box_roi_pool="roi_align",
        box_sampling_ratio=1,
        box_representation_size=256,
        box_detections_per_img=50,
        channels_last=True,
        # images without given proposals (tools/infer.py, the Predictor): selective search on the fly
        proposal_generator="selective_search",
    ),
    data=dict(
        format="shapes",
        root="data/shapes",
        shapes=dict(num_images=480, image_size=160, seed=0),  # 384 train / 96 val images, 3 classes
        train=dict(split="train", proposal_file="runs/proposals/shapes_train_ss.pth"),
        val=dict(split="val", proposal_file="runs/proposals/shapes_val_ss.pth"),
        class_names=None,
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
    output_dir="runs/fast_rcnn_shapes_cpu",
)
