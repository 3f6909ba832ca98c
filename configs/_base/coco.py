"""COCO 2017 detection (80 classes) in the standard layout under data/coco:
train2017/, val2017/, annotations/instances_{train,val}2017.json.
Point it elsewhere with --set data.train.image_dir=... data.train.ann_file=... (and val)."""
config = dict(
    data=dict(
        format="coco",
        train=dict(image_dir="data/coco/train2017", ann_file="data/coco/annotations/instances_train2017.json"),
        val=dict(image_dir="data/coco/val2017", ann_file="data/coco/annotations/instances_val2017.json"),
        filter_empty=True,       # torchvision's references drop training images without objects
        check_policy="drop",     # COCO has a few degenerate boxes; drop them (they are listed at load)
    ),
    model=dict(num_classes=80),
    eval=dict(metric="coco", interval=1, best_metric="bbox/AP"),
)
