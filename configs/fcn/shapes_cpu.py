"""FCN-8s on the built-in shapes set (with masks), from scratch on a CPU (no downloads): the
recipe of the FCN shapes figure in docs/training.md.

What makes it fit a 2-core CPU (the paper's VGG-16 FCN takes ~190 GFLOPs at 500 x 500):
- a ResNet-18 with trainable BatchNorm and the paper's skip fusion from c5, c4 and c3
  (FCN-8s: zero-initialised 1x1 score layers, learned 2x upsamplings from a bilinear start,
  the last 8x upsampling fixed bilinear), at the images' own 160 x 160 (no resize in the model);
- the ``seg_shapes`` augmentation (scale 0.75-1.25, 128 x 128 crops, flips, colour jitter),
  validation on whole images;
- per-pixel cross entropy averaged over valid pixels, AdamW with a short warm-up and a cosine
  decay (the paper's SGD at lr 1e-4 needs ImageNet weights to start from).

    python tools/train.py configs/fcn/shapes_cpu.py
    python tools/eval.py --checkpoint runs/fcn_shapes_cpu/best.pth
"""
config = dict(
    model=dict(
        name="fcn",
        backbone="resnet18",
        layout="skip",
        variant="8s",
        num_classes=None,        # filled in from the shapes set's classes
    ),
    data=dict(
        format="shapes",
        root="data/shapes_seg",
        shapes=dict(num_images=480, image_size=160, seed=0),  # 384 train / 96 val images, 3 classes
        train=dict(split="train"),
        val=dict(split="val"),
        masks=True,
        class_names=None,
        batch_size=8,
        num_workers=1,
        aspect_ratio_grouping=False,
        transforms=dict(train=dict(name="seg_shapes", crop_size=128), val="eval"),
    ),
    train=dict(
        epochs=20,
        device="cpu",
        optimizer=dict(name="adamw", lr=2e-3, weight_decay=1e-4, norm_weight_decay=0.0),
        scheduler=dict(name="cosine", warmup_iters=50, warmup_factor=0.01, min_lr_ratio=0.02),
        clip_grad_norm=10.0,
        log_interval=20,
    ),
    eval=dict(metric="miou", interval=5, best_metric="sem_seg/mIoU"),
    output_dir="runs/fcn_shapes_cpu",
)
