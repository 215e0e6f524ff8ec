"""Mask R-CNN model files (arch maskrcnn) as torchvision 0.14 MaskRCNN modules.

The tensor names are torchvision's maskrcnn_resnet50_fpn family
(backbone.body.*, backbone.fpn.*, rpn.head.*, roi_heads.*) on a ResNet-18/34
backbone with FrozenBatchNorm; the metadata keys (docs/model-format.md) give
the backbone, anchors, head sizes and the detection settings. The C side is
models/maskrcnn/wsimrcnn-file.c: keep DEFAULTS equal to
wsimrcnn_model_info_defaults().

The module takes images already preprocessed as the metadata says (the
engine has no resize and no normalisation): its transform normalises with
mean 0 / std 1 and does not resize, so sides that are multiples of 32 go
through unchanged.
"""
import json
import math

import torch
from torchvision.models import resnet
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, misc as misc_ops
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

ARCH = "maskrcnn"
BACKBONES = ("resnet18", "resnet34")
FPN_LEVELS = 5
# The project's defaults (nuclei 8-40 px across at 0.25-0.5 um/px); the
# exporter writes every key, readers use these for missing ones.
DEFAULTS = {
    "backbone": "resnet18",
    "base_width": 64,
    "fpn_channels": 256,
    "anchor_sizes": [8.0, 16.0, 32.0, 64.0, 128.0],
    "aspect_ratios": [0.5, 1.0, 2.0],
    "representation": 1024,
    "box_pool": 7,
    "mask_size": 28,
    "mask_layers": 4,
    "mask_width": 256,
    "mask_dilation": 1,
    "rpn_pre_nms_top_n": 1000,
    "rpn_post_nms_top_n": 1000,
    "rpn_nms_iou": 0.7,
    "rpn_score_threshold": 0.0,
    "score_threshold": 0.5,
    "nms_iou": 0.5,
    "max_detections": 300,
    "mask_threshold": 0.5,
}
# torchvision's own settings for the same keys (maskrcnn_resnet50_fpn)
TORCHVISION = {**DEFAULTS, "anchor_sizes": [32.0, 64.0, 128.0, 256.0, 512.0],
               "score_threshold": 0.05, "max_detections": 100}
# key: (type, low, high, low exclusive)
RANGES = {
    "base_width": (int, 1, 1024, False), "fpn_channels": (int, 1, 4096, False),
    "representation": (int, 1, 65536, False), "box_pool": (int, 1, 64, False),
    "mask_layers": (int, 0, 16, False), "mask_width": (int, 1, 4096, False),
    "mask_dilation": (int, 1, 16, False),
    "rpn_pre_nms_top_n": (int, 1, 100000, False), "rpn_post_nms_top_n": (int, 1, 100000, False),
    "rpn_nms_iou": (float, 0, 1, True), "rpn_score_threshold": (float, 0, 1, False),
    "score_threshold": (float, 0, 1, False), "nms_iou": (float, 0, 1, True),
    "max_detections": (int, 1, 100000, False), "mask_threshold": (float, 0, 1, True),
    "mask_size": (int, 2, 256, False),
}


def _value(meta, key):
    v = meta.get(key)
    if v is None:
        return DEFAULTS[key]
    return json.loads(v) if isinstance(v, str) else v


def hyperparams(meta):
    """Normalised Mask R-CNN settings of a metadata dict (string values as in
    a file, or python values); ValueError names a bad key."""
    if meta.get("arch") != ARCH:
        raise ValueError(f"arch {meta.get('arch')!r} is not {ARCH!r}")
    nc = meta.get("n_classes", 2)
    hp = {"arch": ARCH, "n_classes": int(json.loads(nc) if isinstance(nc, str) else nc)}
    if hp["n_classes"] < 2:
        raise ValueError(f"n_classes {hp['n_classes']}: a Mask R-CNN model has the background "
                         "and at least one object class (>= 2)")
    bb = meta.get("backbone") or meta.get("encoder") or DEFAULTS["backbone"]
    if bb not in BACKBONES:
        raise ValueError(f"backbone {bb!r} is not one of {', '.join(BACKBONES)}")
    hp["backbone"] = hp["encoder"] = bb
    for key, (conv, lo, hi, lo_open) in RANGES.items():
        try:
            v = _value(meta, key)
        except json.JSONDecodeError:
            raise ValueError(f"{key} {meta[key]!r} is not a number")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or (conv is int and v != int(v)) or v < lo or v > hi or (lo_open and v <= lo):
            raise ValueError(f"{key} {meta.get(key)!r} must be {'an integer' if conv is int else 'a number'} "
                             f"in {'(' if lo_open else '['}{lo}, {hi}]")
        hp[key] = conv(v)
    if hp["mask_size"] % 2:
        raise ValueError(f"mask_size {hp['mask_size']} must be even")
    if hp["base_width"] != 64:
        raise ValueError("torchvision's ResNet BasicBlock has base width 64 only")
    for key, lo_n, hi_n in (("anchor_sizes", FPN_LEVELS, FPN_LEVELS), ("aspect_ratios", 1, 3)):
        v = _value(meta, key)
        if not (isinstance(v, list) and lo_n <= len(v) <= hi_n and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= 1e5
                for x in v)):
            raise ValueError(f"{key} {meta.get(key)!r} must be a JSON list of "
                             f"{lo_n if lo_n == hi_n else f'{lo_n} to {hi_n}'} numbers in (0, 100000]")
        hp[key] = [float(x) for x in v]
    return hp


def metadata_keys(hp):
    """The Mask R-CNN keys of a metadata map (strings), from hyperparams()."""
    meta = {"backbone": hp["backbone"], "size_multiple": "32"}
    for key in DEFAULTS:
        if key == "backbone":
            continue
        v = hp[key]
        meta[key] = json.dumps(v) if isinstance(v, list) else (str(v) if isinstance(v, int)
                                                              else repr(float(v)))
    return meta


class _NoResizeTransform(GeneralizedRCNNTransform):
    """Batching only: the images come preprocessed at their size."""

    def resize(self, image, target=None):
        return image, target


def build_model(meta):
    """torchvision MaskRCNN (eval mode) for a metadata map."""
    hp = hyperparams(meta)
    n = hp["n_classes"]
    f = hp["fpn_channels"]
    body = getattr(resnet, hp["backbone"])(weights=None, norm_layer=misc_ops.FrozenBatchNorm2d)
    backbone = BackboneWithFPN(
        body, return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=[64, 128, 256, 512], out_channels=f, extra_blocks=LastLevelMaxPool())
    na = len(hp["aspect_ratios"])
    anchors = AnchorGenerator(sizes=tuple((s,) for s in hp["anchor_sizes"]),
                              aspect_ratios=(tuple(hp["aspect_ratios"]),) * FPN_LEVELS)
    levels = ["0", "1", "2", "3"]
    bp, mp = hp["box_pool"], hp["mask_size"] // 2
    mw = hp["mask_width"]
    mask_in = mw if hp["mask_layers"] > 0 else f
    model = MaskRCNN(
        backbone, num_classes=None,
        rpn_anchor_generator=anchors, rpn_head=RPNHead(f, na),
        rpn_pre_nms_top_n_test=hp["rpn_pre_nms_top_n"],
        rpn_post_nms_top_n_test=hp["rpn_post_nms_top_n"],
        rpn_nms_thresh=hp["rpn_nms_iou"], rpn_score_thresh=hp["rpn_score_threshold"],
        box_roi_pool=MultiScaleRoIAlign(levels, bp, 2),
        box_head=TwoMLPHead(f * bp * bp, hp["representation"]),
        box_predictor=FastRCNNPredictor(hp["representation"], n),
        box_score_thresh=hp["score_threshold"], box_nms_thresh=hp["nms_iou"],
        box_detections_per_img=hp["max_detections"],
        mask_roi_pool=MultiScaleRoIAlign(levels, mp, 2),
        mask_head=MaskRCNNHeads(f, [mw] * hp["mask_layers"], hp["mask_dilation"]),
        mask_predictor=MaskRCNNPredictor(mask_in, mw, n))
    model.transform = _NoResizeTransform(min_size=800, max_size=1333, image_mean=[0.0, 0.0, 0.0],
                                         image_std=[1.0, 1.0, 1.0])
    return model.eval()


def exported_state(model):
    """The tensors a Mask R-CNN model file holds: the whole state_dict."""
    return dict(model.state_dict())


def randomize_frozen_bn(model, generator=None):
    """Non-trivial FrozenBatchNorm statistics (engine tests)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, misc_ops.FrozenBatchNorm2d):
                c = m.weight.numel()
                m.running_mean.copy_(torch.randn(c, generator=generator) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=generator) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(c, generator=generator) * 0.2)


def calibrate_frozen_bn(model, images):
    """An ImageNet-free start: every FrozenBatchNorm of the backbone gets the
    per-channel mean and variance of its input on @images (N x 3 x H x W,
    preprocessed), in forward order, so that each normalises its input as a
    BatchNorm in training would at the start (random convolutions without
    normalisation make the activations grow block after block)."""
    hooks = []

    def pre(mod, inp):
        x = inp[0]
        mod.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        mod.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False))

    for m in model.backbone.body.modules():
        if isinstance(m, misc_ops.FrozenBatchNorm2d):
            m.weight.fill_(1.0)
            m.bias.zero_()
            hooks.append(m.register_forward_pre_hook(pre))
    with torch.no_grad():
        model.backbone.body(images)
    for h in hooks:
        h.remove()


def backbone_from(model, tensors):
    """Copies a project model's ResNet encoder (encoder.* of fcn8s/deeplabv3
    files, or segment-fcn pretrain checkpoints) into backbone.body.*; returns
    the number of tensors copied. Shapes must match."""
    state = model.state_dict()
    n = 0
    for k, v in tensors.items():
        if not k.startswith("encoder."):
            continue
        name = "backbone.body." + k[len("encoder."):]
        if name in state:
            if tuple(state[name].shape) != tuple(v.shape):
                raise ValueError(f"tensor {k} has shape {tuple(v.shape)}, backbone expects "
                                 f"{tuple(state[name].shape)}")
            state[name] = torch.as_tensor(v).float()
            n += 1
    model.load_state_dict(state)
    return n


def detect(model, x):
    """Detections of preprocessed images N x 3 x H x W: a list of dicts with
    boxes, scores, labels and masks (N x 1 x H x W probabilities)."""
    with torch.no_grad():
        return model(list(x))
