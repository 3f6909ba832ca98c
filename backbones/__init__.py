"""Backbones: feature extractors with one contract (see ../shared/DESIGN.md).

    from backbones import build_backbone, list_backbones
    bb = build_backbone("resnet50", weights=None)
    feats = bb(images)        # OrderedDict[str, Tensor] named cN, stride 2**N
    bb.out_channels, bb.strides, bb.size_divisibility
"""
