"""Fast YOLO on Pascal VOC (Redmon et al. 2016, section 4.1): nine convolutional layers
(16 .. 1024 filters) instead of 24, the same 448 x 448 warp, loss and schedule as
``yolov1_voc.py`` (52.7 mAP on VOC 2007 test in the paper, at 155 frames/s on a Titan X).

    python tools/train.py configs/yolov1/fast_yolo_voc.py --set data.root=/data/VOCdevkit/VOC2007
"""
config = dict(
    _base_=["yolov1_voc.py"],
    model=dict(backbone="fast_yolo"),
    output_dir="runs/fast_yolo_voc",
)
