"""torchvision's ``fasterrcnn_resnet50_fpn`` with seeded random weights, as the reference of
the parity and weight-conversion tests (not a test module)."""
from __future__ import annotations

import torch
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d


def random_torchvision_faster_rcnn(seed: int = 0, num_classes: int = 4, spread_heads: bool = False,
                                   **options) -> FasterRCNN:
    """An eval-mode torchvision Faster R-CNN R50-FPN (``num_classes`` includes background)
    with frozen BatchNorm at eps 0, as torchvision runs its published COCO model, and random
    BatchNorm statistics. ``spread_heads`` redraws the RPN head and box predictor weights
    large enough that objectness and class scores spread out (no near-ties in rankings)."""
    torch.manual_seed(seed)
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d,
                                   trainable_layers=3)
    model = FasterRCNN(backbone, num_classes=num_classes, **options)
    tv_utils.overwrite_eps(model, 0.0)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, FrozenBatchNorm2d):
                n = module.weight.numel()
                module.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                module.bias.copy_(torch.randn(n, generator=g) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        if spread_heads:
            for param in list(model.rpn.head.parameters()) + list(model.roi_heads.box_predictor.parameters()):
                param.copy_(torch.randn(param.shape, generator=g) * 0.05)
    return model.eval()
