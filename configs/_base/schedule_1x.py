"""The 1x schedule of detectron2/mmdetection/torchvision: 12 epochs (~90k iterations at
batch 16 on COCO), SGD momentum 0.9, lr 0.02 for a global batch of 16 (scale it linearly
with the batch: 0.0025 per image), decay 1e-4, x0.1 at epochs 8 and 11, linear warm-up."""
config = dict(
    data=dict(batch_size=2, num_workers=4, aspect_ratio_grouping=True),  # 2 per GPU x 8 GPUs = 16
    train=dict(
        epochs=12,
        optimizer=dict(name="sgd", lr=0.02, momentum=0.9, weight_decay=1e-4, norm_weight_decay=0.0),
        scheduler=dict(name="multistep", milestones=(8, 11), gamma=0.1, warmup_iters=1000, warmup_factor=0.001),
        amp=True,
    ),
)
