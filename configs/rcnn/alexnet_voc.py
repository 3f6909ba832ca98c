"""R-CNN as the paper (Girshick et al. 2014) on Pascal VOC 2007: AlexNet (torchvision's ImageNet
weights, conv1..pool5 + fc6/fc7), selective-search proposals ("fast" mode, ~2000 per image),
227 x 227 warped crops with 16 px of context, fine-tuning on trainval, SVMs with hard-negative
mining, pool5 box regression; evaluated on test with the VOC2007 11-point mAP.
The paper: 58.5 mAP on VOC 2007 test with box regression, 54.2 without (Table 2, "FT fc7 BB").

Fine-tuning: SGD lr 0.001 (the new 21-way layer at 10x), momentum 0.9, weight decay 5e-4,
mini-batches of 128 crops (32 foreground at IoU >= 0.5, 96 background) from 2 images, random
mirroring of the crops; the paper's Caffe solver dropped the rate x0.1 every 20k of its
~70k iterations; here 2 images per step x 2506 steps per epoch, 28 epochs ~ 70k iterations,
x0.1 at epoch 8 and 16. The SVM and regression stages use the paper's numbers (the defaults of
detect.engine.stages.DEFAULT_STAGE_OPTIONS). The feature cache of trainval is ~5011 x 2000
rows x 4096 float16 = 82 GB plus the pool5 rows for regression: put output_dir on a big disk.

    python tools/make_proposals.py configs/rcnn/alexnet_voc.py --split train --workers 8 --output runs/proposals/voc07_trainval_ss.pth
    python tools/make_proposals.py configs/rcnn/alexnet_voc.py --split val --workers 8 --output runs/proposals/voc07_test_ss.pth
    python tools/train.py configs/rcnn/alexnet_voc.py --set data.root=/data/VOCdevkit/VOC2007
"""
config = dict(
    model=dict(
        name="rcnn",
        backbone="tv:alexnet",
        backbone_weights="torchvision",
        crop_size=227,
        context_pad=16,
        svm_feature="fc7",
        num_classes=20,
        score_thresh=0.01,
        nms_thresh=0.3,
        proposal_generator="selective_search",  # for images without given proposals (tools/infer.py)
    ),
    data=dict(
        format="voc",
        root="data/VOCdevkit/VOC2007",
        train=dict(split="trainval", proposal_file="runs/proposals/voc07_trainval_ss.pth"),
        val=dict(split="test", proposal_file="runs/proposals/voc07_test_ss.pth"),
        class_names=None,
        batch_size=2,
        num_workers=4,
        aspect_ratio_grouping=False,
        transforms=dict(train="eval", val="eval"),  # mirroring is done per crop by the model
    ),
    train=dict(
        epochs=28,
        optimizer=dict(name="sgd", lr=0.001, momentum=0.9, weight_decay=5e-4),
        scheduler=dict(name="multistep", milestones=(8, 16), gamma=0.1, warmup_iters=0),
    ),
    eval=dict(metric="voc07_11pt", interval=0, best_metric="bbox/AP50", val_loss=False),
    output_dir="runs/rcnn_alexnet_voc",
)
