"""Fast R-CNN with VGG-16 on Pascal VOC 2007, the paper's set-up and schedule: train on
trainval (5011 images), evaluate on test (4952) with the VOC2007 11-point mAP (the paper:
66.9 mAP; 66.6 with the truncated SVD of fc6 / fc7).

- ``tv:vgg16`` conv5_3 features (stride 16), ImageNet weights; conv1-conv2 frozen, conv3_1
  and up fine-tuned; fc6 / fc7 initialised from the ImageNet classifier, with dropout;
  7 x 7 RoI max pooling; shorter side 600 px, longer at most 1000 px; horizontal flips;
- 2 images x 64 RoIs per mini-batch, 25 % foreground (IoU >= 0.5), background from
  [0.1, 0.5), the ground-truth boxes among the RoIs; cross entropy + smooth L1 (beta 1,
  lambda 1) on targets normalised by (0.1, 0.1, 0.2, 0.2);
- SGD, momentum 0.9, weight decay 5e-4, lr 1e-3 for 30k iterations then 1e-4 for 10k
  (2505 iterations per epoch at 2 images: the drop after epoch 12 is at iteration 30,066,
  and ``max_iters`` stops at 40k);
- test: ~2000 selective-search proposals per image, NMS 0.3 per class. For the paper's SVD
  at test time: ``tools/eval.py ... --set model.svd_ranks.fc6=1024 model.svd_ranks.fc7=256``
  (or ``model.svd_ranks={"fc6": 1024, "fc7": 256}`` in a copy of this file).

Make the selective-search proposal files first (about 1 s per VOC image per worker; one
file per split, in original image pixels), then train:

    python tools/make_proposals.py configs/fast_rcnn/vgg16_voc.py --split trainval --workers 8 --output runs/proposals/voc07_trainval_ss.pth
    python tools/make_proposals.py configs/fast_rcnn/vgg16_voc.py --split test --workers 8 --output runs/proposals/voc07_test_ss.pth
    python tools/train.py configs/fast_rcnn/vgg16_voc.py --set data.root=/data/VOCdevkit/VOC2007
"""
config = dict(
    model=dict(
        name="fast_rcnn",
        backbone="tv:vgg16",
        fpn=False,
        num_classes=20,
        backbone_weights="torchvision",     # ImageNet conv layers, and fc6 / fc7 for the box head
        min_size=600,
        max_size=1000,
        box_roi_pool="roi_pool",
        box_batch_size_per_image=64,
        box_positive_fraction=0.25,
        box_fg_iou_thresh=0.5,
        box_bg_iou_thresh=0.5,
        box_bg_iou_low_thresh=0.1,
        box_loss_beta=1.0,
        box_nms_thresh=0.3,
        box_score_thresh=0.05,
        box_detections_per_img=100,
        proposals_per_image_train=2000,
        proposals_per_image_test=2000,
        proposal_generator="selective_search",  # for images without a proposal file (infer, Predictor)
    ),
    data=dict(
        format="voc",
        root="data/VOCdevkit/VOC2007",
        train=dict(split="trainval", proposal_file="runs/proposals/voc07_trainval_ss.pth"),
        val=dict(split="test", proposal_file="runs/proposals/voc07_test_ss.pth"),
        class_names=None,        # the 20 VOC classes
        batch_size=2,            # the paper's N = 2 images per mini-batch
        num_workers=4,
        aspect_ratio_grouping=True,
        # horizontal flips only (the "train" preset without its scale and colour jitter)
        transforms=dict(train=dict(name="train", scale=(1.0, 1.0), brightness=0.0, contrast=0.0, saturation=0.0),
                        val="eval"),
    ),
    train=dict(
        epochs=16,
        max_iters=40000,
        optimizer=dict(name="sgd", lr=1e-3, momentum=0.9, weight_decay=5e-4),
        scheduler=dict(name="multistep", milestones=(12,), gamma=0.1, warmup_iters=0),
    ),
    eval=dict(metric="voc07_11pt", interval=4, best_metric="bbox/AP50"),
    output_dir="runs/fast_rcnn_vgg16_voc",
)
