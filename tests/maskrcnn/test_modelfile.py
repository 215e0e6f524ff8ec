"""Mask R-CNN model files: export_model.py --arch maskrcnn -> the C loader
(wsimrcnn_load) -> wsimrcnn_detect equals torchvision's MaskRCNN built by
load_model.py's loader from the same file (two configurations: the project
defaults, and other anchors / ratios / head sizes / mask size); a file the C
saver writes loads in PyTorch with identical tensors and metadata; malformed
or mismatched files are refused with a message naming the problem; a
torchvision state_dict (.pt) exports directly. Run through test_parity.py
LIB modelfile."""
import ctypes as C
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

import test_parity as tp

lib = tp.lib
REF = os.path.join(tp.ROOT, "models", "reference")
sys.path.insert(0, REF)
import maskrcnn_ref  # noqa: E402
import modelfile  # noqa: E402

sio = tp.safetensors_io
lib.mr_file_load.restype = C.c_void_p
lib.mr_file_load.argtypes = [C.c_char_p, C.c_char_p, C.c_size_t]
lib.mr_file_model.restype = C.c_void_p
lib.mr_file_model.argtypes = [C.c_void_p]
for fn in ("mr_file_max_detections", "mr_file_mask_size"):
    getattr(lib, fn).argtypes = [C.c_void_p]
lib.mr_file_mask_threshold.restype = C.c_float
lib.mr_file_mask_threshold.argtypes = [C.c_void_p]
lib.mr_file_save.argtypes = [C.c_void_p, C.c_char_p, C.c_char_p, C.c_size_t]
lib.mr_file_free.argtypes = [C.c_void_p]
lib.mr_info_load.argtypes = [C.c_char_p, C.c_char_p, C.c_size_t]
lib.wsimrcnn_detect.argtypes = [C.c_void_p, C.c_void_p, C.c_int, C.c_int] + [C.c_void_p] * 5 + \
    [C.c_char_p, C.c_size_t]
ERR = C.create_string_buffer(1024)


def export(path, *args):
    r = subprocess.run([sys.executable, os.path.join(REF, "export_model.py"), path, "--arch",
                        "maskrcnn", *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def sharpen(path):
    """A sharper box classifier than random init: well separated scores."""
    t, meta, _ = sio.load(path)
    t["roi_heads.box_predictor.cls_score.weight"] = \
        t["roi_heads.box_predictor.cls_score.weight"] * np.float32(4.0)
    sio.save(path, t, meta)


def c_detect(path, x):
    f = lib.mr_file_load(path.encode(), ERR, 1024)
    assert f, ERR.value.decode()
    m = lib.mr_file_model(f)
    D, ms = lib.mr_file_max_detections(f), lib.mr_file_mask_size(f)
    _, _, h, w = x.shape
    boxes = np.zeros((D, 4), np.float32)
    scores = np.zeros(D, np.float32)
    labels = np.zeros(D, np.int32)
    masks = np.zeros((D, ms, ms), np.float32)
    pasted = np.zeros((D, h, w), np.float32)
    img = np.ascontiguousarray(x[0].permute(1, 2, 0).numpy())
    nd = lib.wsimrcnn_detect(m, img.ctypes.data, h, w, boxes.ctypes.data, scores.ctypes.data,
                             labels.ctypes.data, masks.ctypes.data, pasted.ctypes.data, ERR, 1024)
    assert nd >= 0, ERR.value.decode()
    lib.mr_file_free(f)
    return boxes[:nd], scores[:nd], labels[:nd], pasted[:nd]


def parity(what, path, x):
    model, meta = modelfile.load_model(path)
    ref = maskrcnn_ref.detect(model, x)[0]
    boxes, scores, labels, pasted = c_detect(path, x)
    n_ref = len(ref["boxes"])
    print(f"{what}: {len(boxes)} detections (torchvision {n_ref})")
    if len(boxes) != n_ref or n_ref == 0:
        tp.failures.append(f"{what}: {len(boxes)} detections, torchvision {n_ref}")
        return
    if not (labels == ref["labels"].numpy()).all():
        tp.failures.append(f"{what}: labels differ")
    tp.check(f"{what} boxes", boxes, ref["boxes"].numpy(), 1e-4)
    tp.check(f"{what} scores", scores, ref["scores"].numpy(), 1e-4)
    # pasted probabilities: a box moved by float rounding moves the mask's
    # samples (test_inference.py: 1e-2 on the 28 x 28 masks)
    tp.check(f"{what} pasted masks", pasted, ref["masks"][:, 0].numpy(), 2e-2)


def refused(what, path, want, loader="load"):
    fn = lib.mr_file_load if loader == "load" else lib.mr_info_load
    ERR.value = b""
    r = fn(path.encode(), ERR, 1024)
    msg = ERR.value.decode()
    ok = (not r if loader == "load" else r != 0) and want in msg
    if loader == "load" and r:
        lib.mr_file_free(r)
    print(f"{'ok  ' if ok else 'FAIL'} {what}: {msg}")
    if not ok:
        tp.failures.append(f"{what}: got {msg!r}, want {want!r}")


def main():
    tmp = tempfile.mkdtemp(prefix="mrcnn-file-")
    torch.manual_seed(5)
    # ---- 1. project defaults (anchors 8..128, 3 ratios, 28 x 28 masks)
    a = os.path.join(tmp, "a.safetensors")
    export(a, "--classes", "background,nucleus,other", "--randomize-bn", "--seed", "3",
           "--score-threshold", "0.05", "--max-detections", "100", "--mpp", "0.5")
    sharpen(a)
    x = torch.randn(1, 3, 96, 128)
    parity("defaults 96x128", a, x)
    # ---- 2. other sizes: anchors, one ratio, narrow heads, 14 x 14 masks
    b = os.path.join(tmp, "b.safetensors")
    export(b, "--classes", "background,gland", "--randomize-bn", "--seed", "4",
           "--anchor-sizes", "16,32,64,128,256", "--aspect-ratios", "1", "--mask-size", "14",
           "--score-threshold", "0.05", "--max-detections", "40", "--nms-iou", "0.4",
           "--meta", "fpn_channels=64", "--meta", "representation=128", "--meta",
           "mask_layers=2", "--meta", "mask_width=32")
    tb, mb, _ = sio.load(b)
    print("config b keys:", {k: mb[k] for k in ("fpn_channels", "mask_size", "aspect_ratios")})
    c_ok = tb["rpn.head.cls_logits.weight"].shape == (1, 64, 1, 1) and \
        tb["roi_heads.mask_head.1.0.weight"].shape == (32, 32, 3, 3)
    if not c_ok:
        tp.failures.append("config b: --meta hyperparameters not applied")
    sharpen(b)
    parity("other sizes 64x96", b, torch.randn(1, 3, 64, 96))

    # ---- 3. C saver -> PyTorch: identical tensors and metadata (the small
    # configuration b: the file variants below stay small)
    a = b
    f = lib.mr_file_load(a.encode(), ERR, 1024)
    assert f, ERR.value.decode()
    thr = lib.mr_file_mask_threshold(f)
    saved = os.path.join(tmp, "c-saved.safetensors")
    assert lib.mr_file_save(f, saved.encode(), ERR, 1024) == 0, ERR.value.decode()
    lib.mr_file_free(f)
    ta, ma, _ = sio.load(a)
    tc, mc, _ = sio.load(saved)
    same = set(ta) == set(tc) and all(ta[k].shape == tc[k].shape and
                                      np.array_equal(ta[k], tc[k]) for k in ta)
    print(f"{'ok  ' if same else 'FAIL'} C-saved file: {len(tc)} tensors bit-identical")
    if not same:
        tp.failures.append("C-saved tensors differ")
    hp_a, hp_c = maskrcnn_ref.hyperparams(ma), maskrcnn_ref.hyperparams(mc)
    meta_ok = hp_a == hp_c and all(ma[k] == mc[k] for k in (
        "preprocess", "patch_size", "backbone")) and all(
        json.loads(ma[k]) == json.loads(mc[k]) for k in ("class_names", "class_colors")) and \
        float(mc["mpp"]) == float(ma["mpp"]) and mc["description"] == "saved by wsimrcnn_save" and \
        abs(thr - 0.5) < 1e-7
    print(f"{'ok  ' if meta_ok else 'FAIL'} C-saved metadata: {hp_c == hp_a}")
    if not meta_ok:
        tp.failures.append(f"C-saved metadata differs: {hp_a} vs {hp_c}")
    model, _ = modelfile.load_model(saved)
    sd = model.state_dict()
    loaded = all(torch.equal(sd[k], torch.from_numpy(ta[k])) for k in ta)
    print(f"{'ok  ' if loaded else 'FAIL'} C-saved file loads into torchvision MaskRCNN")
    if not loaded:
        tp.failures.append("C-saved file: torchvision tensors differ")

    # ---- 4. a torchvision state_dict (.pt) exports directly, anchors as torchvision's
    tv_model, _ = tp.make_model(2, seed=6)
    pt = os.path.join(tmp, "tv.pt")
    torch.save(tv_model.state_dict(), pt)
    tvf = os.path.join(tmp, "tv.safetensors")
    export(tvf, "--checkpoint", pt, "--classes", "background,cell", "--anchor-sizes",
           "32,64,128,256,512", "--score-threshold", "0.05", "--max-detections", "100")
    ttv, _, _ = sio.load(tvf)
    eq = all(np.array_equal(ttv[k], v.numpy()) for k, v in tv_model.state_dict().items())
    print(f"{'ok  ' if eq else 'FAIL'} torchvision state_dict exported unchanged")
    if not eq:
        tp.failures.append("torchvision state_dict export changed tensors")
    f = lib.mr_file_load(tvf.encode(), ERR, 1024)
    if not f:
        tp.failures.append(f"torchvision export refused: {ERR.value.decode()}")
    else:
        lib.mr_file_free(f)

    # ---- 5. malformed and mismatched files, each refused by name
    def variant(name, tensors=None, meta=None):
        p = os.path.join(tmp, name + ".safetensors")
        sio.save(p, ta if tensors is None else tensors, ma if meta is None else meta)
        return p

    refused("3 classes declared, 2 in the tensors",
            variant("classes", meta={**ma, "n_classes": "3", "class_names": '["bg","n","o"]',
                                     "class_colors": "[[0,0,0],[1,2,3],[4,5,6]]"}),
            "tensor roi_heads.box_predictor.cls_score.weight has shape [2,128], "
            "model expects [3,128]")
    drop = "roi_heads.mask_predictor.mask_fcn_logits.bias"
    refused("missing tensor", variant("missing", {k: v for k, v in ta.items() if k != drop}),
            f"tensor {drop} missing (model expects [2])")
    refused("stray tensor", variant("stray", {**ta, "roi_heads.extra.weight": ta[drop]}),
            "unexpected tensor roi_heads.extra.weight")
    refused("resnet34 declared, resnet18 tensors", variant("bb", meta={**ma, "backbone": "resnet34"}),
            "tensor backbone.body.layer1.2.conv1.weight missing")
    refused("5 ratios", variant("ratios", meta={**ma, "aspect_ratios": "[0.25,0.5,1,2,4]"}),
            "metadata aspect_ratios")
    refused("4 anchor sizes", variant("anchors", meta={**ma, "anchor_sizes": "[8,16,32,64]"}),
            "metadata anchor_sizes")
    refused("negative anchor", variant("anchors2", meta={**ma, "anchor_sizes": "[8,16,-32,64,1]"}),
            "metadata anchor_sizes")
    refused("odd mask size", variant("mask", meta={**ma, "mask_size": "27"}), "metadata mask_size")
    refused("score threshold 2", variant("score", meta={**ma, "score_threshold": "2"}),
            "metadata score_threshold")
    refused("max detections 0", variant("maxdet", meta={**ma, "max_detections": "0"}),
            "metadata max_detections")
    refused("nms iou 0", variant("nms", meta={**ma, "nms_iou": "0"}), "metadata nms_iou")
    refused("fractional fpn width", variant("fpn", meta={**ma, "fpn_channels": "25.5"}),
            "metadata fpn_channels")
    refused("vgg backbone", variant("vgg", meta={**ma, "backbone": "vgg"}), "metadata backbone")
    refused("one class", variant("one", meta={**ma, "n_classes": "1", "class_names": '["n"]',
                                               "class_colors": "[[1,2,3]]"}), "n_classes 1")
    refused("arch unet", variant("unet", meta={**ma, "arch": "unet"}), "not a Mask R-CNN model")
    refused("metadata only: arch unet", variant("unet2", meta={**ma, "arch": "unet"}),
            "not a Mask R-CNN model", loader="info")
    refused("size multiple 16", variant("sm", meta={**ma, "size_multiple": "16"}),
            "multiple of 32")
    refused("integer tensor", variant("i64", {**ta, drop: ta[drop].astype(np.int64)}),
            f"tensor {drop} has dtype I64, model expects F32")
    # F16 / F64 tensors are converted (the parser's float dtypes)
    p16 = os.path.join(tmp, "f16.safetensors")
    sio.save(p16, {**ta, drop: ta[drop].astype(np.float64)}, ma, {
        "roi_heads.mask_predictor.mask_fcn_logits.weight": "F16"})
    ERR.value = b""
    f = lib.mr_file_load(p16.encode(), ERR, 1024)
    print(f"{'ok  ' if f else 'FAIL'} F16 and F64 tensors accepted {ERR.value.decode()}")
    if not f:
        tp.failures.append(f"F16/F64 file refused: {ERR.value.decode()}")
    else:
        lib.mr_file_free(f)
    notst = os.path.join(tmp, "text.safetensors")
    with open(notst, "w") as fh:
        fh.write("this is a text file, not a model\n")
    refused("text file", notst, "not a model file")
    refused("missing file", os.path.join(tmp, "nope.safetensors"), "cannot open")
    trunc = os.path.join(tmp, "trunc.safetensors")
    with open(a, "rb") as src, open(trunc, "wb") as dst:
        dst.write(src.read(100000))
    refused("truncated file", trunc, "not a model file")
    shutil.rmtree(tmp)
    if tp.failures:
        print(f"{len(tp.failures)} failures:", *tp.failures, sep="\n  ")
        return 1
    print("model files: C loader equals torchvision, saver round-trips, bad files refused")
    return 0
