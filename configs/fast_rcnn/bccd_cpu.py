"""Fast R-CNN R18-FPN on BCCD trained from scratch on a CPU (no downloads), on precomputed
selective-search proposals: the recipe of the Fast R-CNN BCCD figures in docs/training.md.

The network, image size and optimiser are those of ``configs/faster_rcnn/bccd_r18_fpn_cpu.py``
(ResNet-18 with trainable BatchNorm from random weights, 384 x 512 images, a 128-wide FPN,
a 512-wide two-FC head, AdamW with a cosine decay), so that the two families compare on
one backbone; the RoI sampling, loss and test NMS are the Fast R-CNN paper's (64 RoIs per
image, 25 % foreground at IoU >= 0.5, background from [0.1, 0.5), smooth L1 with beta 1,
NMS 0.3) on the ~2000 selective-search boxes of each image (R-CNN's "fast" mode).

Make the proposal files once (about 3 s per BCCD image per worker), then train and evaluate:

    python tools/make_proposals.py configs/fast_rcnn/bccd_cpu.py --split train --output runs/proposals/bccd_train_ss.pth
    python tools/make_proposals.py configs/fast_rcnn/bccd_cpu.py --split val --output runs/proposals/bccd_val_ss.pth
    python tools/make_proposals.py configs/fast_rcnn/bccd_cpu.py --split test --output runs/proposals/bccd_test_ss.pth
    python tools/train.py configs/fast_rcnn/bccd_cpu.py
    python tools/eval.py --checkpoint runs/fast_rcnn_bccd_cpu/best.pth --split test

Files elsewhere: ``--set data.train.proposal_file=PATH data.val.proposal_file=PATH`` (and
``data.test.proposal_file=PATH`` for ``tools/eval.py --split test``).
"""
config = dict(
    _base_=["../_base/bccd.py"],
    model=dict(
        name="fast_rcnn",
        backbone="resnet18",
        fpn=True,
        fpn_channels=128,
        min_size=384,
        max_size=512,
        box_batch_size_per_image=64,
        box_roi_pool="roi_align",
        box_sampling_ratio=1,
        box_representation_size=512,
        box_detections_per_img=100,
        channels_last=True,
        proposal_generator="selective_search",  # for images without a proposal file (infer, Predictor)
    ),
    data=dict(
        num_workers=1,
        train=dict(split="train", proposal_file="runs/proposals/bccd_train_ss.pth"),
        val=dict(split="val", proposal_file="runs/proposals/bccd_val_ss.pth"),
        test=dict(split="test", proposal_file="runs/proposals/bccd_test_ss.pth"),
    ),
    train=dict(
        epochs=24,
        device="cpu",
        optimizer=dict(name="adamw", lr=1e-3, weight_decay=1e-4, norm_weight_decay=0.0),
        scheduler=dict(name="cosine", warmup_iters=100, warmup_factor=0.01, min_lr_ratio=0.05),
        clip_grad_norm=10.0,
        log_interval=20,
    ),
    eval=dict(interval=4),
    output_dir="runs/fast_rcnn_bccd_cpu",
)
