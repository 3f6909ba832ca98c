"""YOLOv1 on BCCD (blood cells, ../shared/data/BCCD) from scratch on a CPU: the counterpart of
``configs/faster_rcnn/bccd_r18_fpn_cpu.py`` for the comparison in docs/training.md.

BCCD images are 640 x 480 with ~20 cells each, many of them small platelets and crowded red
cells: the hard case for a 7 x 7 grid of two boxes per cell (the paper's stated limit on small
objects in groups). So this recipe uses a finer grid: ResNet-18 (trainable BatchNorm) at
448 x 448 with the fully-convolutional head gives a 14 x 14 grid, B = 2.

    python tools/train.py configs/yolov1/bccd_cpu.py
    python tools/eval.py --checkpoint runs/yolov1_bccd_cpu/best.pth --split test
"""
config = dict(
    _base_=["../_base/bccd.py"],
    model=dict(
        name="yolov1",
        backbone="resnet18",
        head="conv",
        input_size=(448, 448),
        grid_size=14,
        boxes_per_cell=2,
    ),
    data=dict(num_workers=1, batch_size=8, aspect_ratio_grouping=False, transforms=dict(train="yolo", val="eval")),
    train=dict(
        epochs=40,
        device="cpu",
        optimizer=dict(name="adamw", lr=1e-3, weight_decay=5e-4, norm_weight_decay=0.0),
        scheduler=dict(name="cosine", warmup_iters=100, warmup_factor=0.01, min_lr_ratio=0.02),
        clip_grad_norm=10.0,
        log_interval=20,
    ),
    eval=dict(interval=5),
    output_dir="runs/yolov1_bccd_cpu",
)
