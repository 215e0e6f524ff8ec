"""Mask R-CNN inference (models/maskrcnn/wsimaskrcnn.c) vs torchvision 0.14's
MaskRCNN eval() forward with the same weights: boxes, scores, labels, 28x28
mask probabilities and the masks pasted into the image. Run through
test_parity.py LIB inference. The image is fed to the model's backbone, RPN
and RoI heads directly (the engine takes preprocessed images whose sides are
multiples of 32, so torchvision's resize / normalise / pad are identities
here)."""
import ctypes as C
import os

import numpy as np
import torch
from torchvision.models.detection.image_list import ImageList

import test_parity as tp

lib = tp.lib
lib.wsimrcnn_new.restype = C.c_void_p
lib.wsimrcnn_new.argtypes = [C.c_void_p, C.c_char_p, C.c_size_t]
lib.wsimrcnn_net.restype = C.c_void_p
lib.wsimrcnn_net.argtypes = [C.c_void_p, C.c_int]
lib.wsimrcnn_free.argtypes = [C.c_void_p]
lib.wsimrcnn_config_init.argtypes = [C.c_void_p]
lib.wsimrcnn_detect_batch.argtypes = [C.c_void_p, C.c_void_p] + [C.c_int] * 3 + \
    [C.c_void_p] * 6 + [C.c_char_p, C.c_size_t]
lib.wsimrcnn_detect.argtypes = [C.c_void_p, C.c_void_p, C.c_int, C.c_int] + [C.c_void_p] * 5 + \
    [C.c_char_p, C.c_size_t]


class RpnParams(C.Structure):
    _fields_ = [("pre_nms_top_n", C.c_int), ("post_nms_top_n", C.c_int),
                ("nms_thresh", C.c_double), ("score_thresh", C.c_float), ("min_size", C.c_float)]


class DetParams(C.Structure):
    _fields_ = [("score_thresh", C.c_float), ("nms_thresh", C.c_double),
                ("detections_per_img", C.c_int), ("min_size", C.c_float)]


class Config(C.Structure):
    """wsimrcnn_config: every field (wsimrcnn_config_init writes them all)."""
    _fields_ = [("spec", tp.Spec), ("anchor_sizes", C.c_float * 5), ("ratios", C.c_float * 3),
                ("rpn", RpnParams), ("det", DetParams), ("box_sampling", C.c_int),
                ("mask_sampling", C.c_int), ("mask_pool", C.c_int),
                ("rpn_train", RpnParams), ("rpn_fg_iou", C.c_float), ("rpn_bg_iou", C.c_float),
                ("rpn_batch", C.c_int), ("rpn_pos_fraction", C.c_double),
                ("box_fg_iou", C.c_float), ("box_bg_iou", C.c_float), ("box_batch", C.c_int),
                ("box_pos_fraction", C.c_double), ("box_loss", C.c_int), ("beta", C.c_float),
                ("seed", C.c_uint64)]


def run(model, path, x, n_classes):
    cfg = Config()
    lib.wsimrcnn_config_init(C.byref(cfg))
    cfg.spec.n_classes = n_classes
    m = lib.wsimrcnn_new(C.byref(cfg), tp.ERR, 512)
    assert m, tp.ERR.value.decode()
    for i in range(3):
        assert lib.mr_load(lib.wsimrcnn_net(m, i), path.encode(), tp.ERR, 512) == 0, \
            tp.ERR.value.decode()
    _, _, h, w = x.shape
    k = cfg.det.detections_per_img
    boxes = np.zeros((k, 4), np.float32)
    scores = np.zeros(k, np.float32)
    labels = np.zeros(k, np.int32)
    masks = np.zeros((k, 28, 28), np.float32)
    pasted = np.zeros((k, h, w), np.float32)
    img = np.ascontiguousarray(x[0].permute(1, 2, 0).numpy())
    nd = lib.wsimrcnn_detect(m, img.ctypes.data, h, w, boxes.ctypes.data, scores.ctypes.data,
                             labels.ctypes.data, masks.ctypes.data, pasted.ctypes.data,
                             tp.ERR, 512)
    assert nd >= 0, tp.ERR.value.decode()
    lib.wsimrcnn_free(m)
    return boxes[:nd], scores[:nd], labels[:nd], masks[:nd], pasted[:nd]


def reference(model, x):
    h, w = x.shape[-2:]
    with torch.no_grad():
        images = ImageList(x, [(h, w)])
        feats = model.backbone(x)
        proposals, _ = model.rpn(images, feats)
        det, _ = model.roi_heads(feats, proposals, images.image_sizes)
        raw = det[0]["masks"].clone()
        det = model.transform.postprocess(det, images.image_sizes, [(h, w)])[0]
    return det, raw


def main():
    n_classes = 3
    model, path = tp.make_model(n_classes, seed=1)
    # a sharper box classifier than random init: fewer, well separated
    # detections (near-equal scores would make the order a coin toss)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.mul_(4.0)
    tp.safetensors_io.save(path, {k: v.numpy().astype(np.float32)
                                  for k, v in model.state_dict().items()},
                           {"format": "gst-wsiseg-model", "arch": "maskrcnn"})
    torch.manual_seed(2)
    for (h, w) in ((128, 160), (96, 96)):
        x = torch.randn(1, 3, h, w)
        boxes, scores, labels, masks, pasted = run(model, path, x, n_classes)
        ref, raw = reference(model, x)
        n_ref = ref["boxes"].shape[0]
        print(f"{h}x{w}: {len(boxes)} detections (torchvision {n_ref})")
        if len(boxes) != n_ref:
            tp.failures.append(f"{h}x{w}: {len(boxes)} detections, torchvision {n_ref}")
            continue
        if n_ref == 0:
            tp.failures.append(f"{h}x{w}: no detection to compare")
            continue
        lab_ok = (labels == ref["labels"].numpy()).all()
        print(f"{'ok  ' if lab_ok else 'FAIL'} {h}x{w} labels")
        if not lab_ok:
            tp.failures.append(f"{h}x{w}: labels differ")
        # end to end: the float32 rounding of the heads (fc6 sums 12544
        # products) moves boxes by ~1e-3 px and scores by ~1e-5, and a box
        # shift moves the RoIAlign samples of the mask
        tp.check(f"{h}x{w} boxes", boxes, ref["boxes"].numpy(), 1e-4)
        tp.check(f"{h}x{w} scores", scores, ref["scores"].numpy(), 1e-4)
        tp.check(f"{h}x{w} mask probabilities 28x28", masks, raw[:, 0].numpy(), 1e-2)
        # the mask branch on the engine's own boxes and labels (measured
        # ~3e-5: mask logits up to ~20 with float32 rounding)
        with torch.no_grad():
            feats = model.backbone(x)
            bt = [torch.from_numpy(boxes)]
            mf = model.roi_heads.mask_roi_pool(feats, bt, [(h, w)])
            ml = model.roi_heads.mask_predictor(model.roi_heads.mask_head(mf))
            from torchvision.models.detection.roi_heads import (maskrcnn_inference,
                                                                paste_masks_in_image)
            mprob = maskrcnn_inference(ml, [torch.from_numpy(labels.astype(np.int64))])[0]
            mpaste = paste_masks_in_image(mprob, bt[0], (h, w))
        tp.check(f"{h}x{w} mask probabilities on the engine's boxes", masks,
                 mprob[:, 0].numpy(), 1e-4)
        tp.check(f"{h}x{w} pasted masks on the engine's boxes", pasted,
                 mpaste[:, 0].numpy(), 1e-4)
    # a batch of 3 images in one call: each equal to torchvision on its own
    h, w, n = 96, 128, 3
    xs = torch.randn(n, 3, h, w)
    cfg = Config()
    lib.wsimrcnn_config_init(C.byref(cfg))
    cfg.spec.n_classes = n_classes
    m = lib.wsimrcnn_new(C.byref(cfg), tp.ERR, 512)
    for i in range(3):
        assert lib.mr_load(lib.wsimrcnn_net(m, i), path.encode(), tp.ERR, 512) == 0
    D = cfg.det.detections_per_img
    boxes = np.zeros((n, D, 4), np.float32)
    scores = np.zeros((n, D), np.float32)
    labels = np.zeros((n, D), np.int32)
    masks = np.zeros((n, D, 28, 28), np.float32)
    counts = np.zeros(n, np.int32)
    imgs = np.ascontiguousarray(xs.permute(0, 2, 3, 1).numpy())
    assert lib.wsimrcnn_detect_batch(m, imgs.ctypes.data, n, h, w, boxes.ctypes.data,
                                     scores.ctypes.data, labels.ctypes.data, masks.ctypes.data,
                                     None, counts.ctypes.data, tp.ERR, 512) == 0, \
        tp.ERR.value.decode()
    lib.wsimrcnn_free(m)
    for b in range(n):
        ref, raw = reference(model, xs[b:b + 1])
        k = counts[b]
        print(f"batch image {b}: {k} detections (torchvision {ref['boxes'].shape[0]})")
        if k != ref["boxes"].shape[0] or not (labels[b, :k] == ref["labels"].numpy()).all():
            tp.failures.append(f"batch image {b}: detections / labels differ")
            continue
        tp.check(f"batch image {b} boxes", boxes[b, :k], ref["boxes"].numpy(), 1e-4)
        tp.check(f"batch image {b} scores", scores[b, :k], ref["scores"].numpy(), 1e-4)
        tp.check(f"batch image {b} masks", masks[b, :k], raw[:, 0].numpy(), 1e-2)
    os.remove(path)
    os.rmdir(os.path.dirname(path))
    if tp.failures:
        print(f"{len(tp.failures)} failures:", *tp.failures, sep="\n  ")
        return 1
    print("inference equal to torchvision")
    return 0
