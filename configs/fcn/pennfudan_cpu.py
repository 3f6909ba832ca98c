"""FCN-8s on Penn-Fudan pedestrians (person vs background), from scratch on a CPU: the FCN
real-data CPU figure in docs/training.md. The data (``../shared/data/PennFudanPed``, read by
:mod:`detect.data.pennfudan`; internal use only, never committed) has no official split: the
seeded 80 / 20 % split of the reader.

- a ResNet-18 with trainable BatchNorm from random weights (no downloads here; with network
  access ``--set model.backbone_weights=torchvision`` starts from ImageNet and does far better),
  the paper's FCN-8s skip fusion from c5, c4 and c3;
- torchvision's ``seg_train`` preset scaled down for the CPU: shorter side drawn in 0.5-2x of
  256, flips, 224 x 224 crops (mask padding 255); evaluation with the shorter side at 256
  (``seg_eval``), where the metrics are computed, as torchvision does;
- per-pixel cross entropy averaged over valid pixels, AdamW with a warm-up and a cosine decay.

    python tools/train.py configs/fcn/pennfudan_cpu.py
"""
config = dict(
    model=dict(
        name="fcn",
        backbone="resnet18",
        layout="skip",
        variant="8s",
        num_classes=None,            # 1 (person), from the reader's class names
    ),
    data=dict(
        format="pennfudan",
        root="../shared/data/PennFudanPed",
        val_fraction=0.2,
        split_seed=0,
        train=dict(split="train"),
        val=dict(split="val"),
        masks=True,
        class_names=None,
        batch_size=8,
        num_workers=1,
        aspect_ratio_grouping=False,
        transforms=dict(train=dict(name="seg_train", base_size=256, scale=(0.5, 2.0), crop_size=224),
                        val=dict(name="seg_eval", base_size=256)),
    ),
    train=dict(
        epochs=40,
        device="cpu",
        optimizer=dict(name="adamw", lr=2e-3, weight_decay=1e-4, norm_weight_decay=0.0),
        scheduler=dict(name="cosine", warmup_iters=30, warmup_factor=0.01, min_lr_ratio=0.02),
        clip_grad_norm=10.0,
        log_interval=10,
    ),
    eval=dict(metric="miou", interval=5, best_metric="sem_seg/mIoU"),
    output_dir="runs/fcn_pennfudan_cpu",
)
