"""YOLOv1 on the built-in shapes set, from scratch on a CPU (no downloads): the recipe of
``tools/demo.py --model yolov1`` and of the YOLOv1 figures in docs/training.md.

What makes it fit a 2-core CPU (the paper's net at 448 px takes ~40 GFLOPs a forward pass):
- a ResNet-18 with trainable BatchNorm and the fully-convolutional head (two 3x3
  convolutions, then a 1x1 convolution to B * 5 + C outputs per cell) at the images' own
  160 x 160, so c5 is a 5 x 5 grid (S = 5; objects are 24-72 px, one or two cells wide);
- the paper's loss (lambda_coord 5, lambda_noobj 0.5, rescored confidences), B = 2;
- the ``yolo`` augmentation preset, AdamW with a short warm-up and a cosine decay.

    python tools/train.py configs/yolov1/shapes_cpu.py
"""
config = dict(
    model=dict(
        name="yolov1",
        backbone="resnet18",
        head="conv",
        head_convs=2,            # two 3x3 convolutions (256 wide) on the 7 x 7 map before the 1x1 predictor
        head_channels=256,
        input_size=(160, 160),   # the images' own size: c5 is a 5 x 5 grid of 32 px cells
        grid_size=5,
        boxes_per_cell=2,
        num_classes=None,        # filled in from the shapes set's classes
    ),
    data=dict(
        format="shapes",
        root="data/shapes",
        shapes=dict(num_images=480, image_size=160, seed=0),  # 384 train / 96 val images, 3 classes
        train=dict(split="train"),
        val=dict(split="val"),
        class_names=None,
        batch_size=8,
        num_workers=1,
        aspect_ratio_grouping=False,
        transforms=dict(train="yolo", val="eval"),
    ),
    train=dict(
        epochs=30,
        device="cpu",
        optimizer=dict(name="adamw", lr=1e-3, weight_decay=5e-4, norm_weight_decay=0.0),
        scheduler=dict(name="cosine", warmup_iters=100, warmup_factor=0.01, min_lr_ratio=0.02),
        clip_grad_norm=10.0,
        log_interval=20,
    ),
    eval=dict(metric="voc_area", interval=5, best_metric="bbox/AP50"),
    output_dir="runs/yolov1_shapes_cpu",
)
