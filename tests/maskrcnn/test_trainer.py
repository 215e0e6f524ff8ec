"""Mask R-CNN through the generic trainer (models/maskrcnn/wsimrcnn-train.c):
a model file -> wsimrcnn_trainer (targets from GRAY16 instance label patches
by wsimrcnn_targets_from_labels) -> one SGD step equals torchvision's
MaskRCNN (maskrcnn_ref.build_model of the same file) in train mode + torch's
SGD: the five losses and the parameter update; a batch of two images = the
mean of their losses; a checkpoint resumes to the same next step (sampler
seeded by step: bit-identical parameters and optimiser state). Run through
test_parity.py LIB trainer."""
import ctypes as C
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
from torchvision.ops import masks_to_boxes

import test_parity as tp

lib = tp.lib
sys.path.insert(0, os.path.join(tp.ROOT, "models", "reference"))
import maskrcnn_ref  # noqa: E402
import modelfile  # noqa: E402

sio = tp.safetensors_io
ERR = C.create_string_buffer(1024)
lib.mr_trainer_new.restype = C.c_void_p
lib.mr_trainer_new.argtypes = [C.c_char_p, C.c_int, C.c_int, C.c_int, C.c_double, C.c_char_p,
                               C.c_size_t]
lib.mr_trainer_step.argtypes = [C.c_void_p, C.c_void_p, C.c_int, C.c_int, C.c_int, C.c_void_p,
                                C.c_void_p, C.c_char_p, C.c_size_t]
lib.mr_trainer_save.argtypes = [C.c_void_p, C.c_char_p, C.c_char_p, C.c_size_t]
lib.mr_trainer_free.argtypes = [C.c_void_p]
NAMES = ["loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"]
BIG = 1 << 20
LR = 0.01
H = W = 96


def instances(rng, n):
    inst = np.zeros((H, W), np.uint16)
    yy, xx = np.mgrid[0:H, 0:W]
    for i in range(n):
        cy, cx = rng.uniform(8, H - 8), rng.uniform(8, W - 8)
        ry, rx = rng.uniform(5, 15), rng.uniform(5, 15)
        inst[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = rng.integers(1, 60000)
    return inst


def torch_targets(inst):
    ids = [i for i in np.unique(inst) if i != 0]
    masks = torch.from_numpy(np.stack([inst == i for i in ids]).astype(np.uint8))
    boxes = masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    return {"boxes": boxes, "labels": torch.ones(len(ids), dtype=torch.int64), "masks": masks}


def c_trainer(path, resume=0, batch=BIG):
    t = lib.mr_trainer_new(path.encode(), resume, batch, batch, LR, ERR, 1024)
    assert t, ERR.value.decode()
    return t


def c_step(t, xs, insts):
    imgs = np.ascontiguousarray(np.stack([x.permute(1, 2, 0).numpy() for x in xs]), np.float32)
    inst = np.ascontiguousarray(np.stack(insts), np.uint16)
    losses = np.zeros(6, np.float64)
    assert lib.mr_trainer_step(t, imgs.ctypes.data, len(xs), H, W, inst.ctypes.data,
                               losses.ctypes.data, ERR, 1024) == 0, ERR.value.decode()
    return losses


def c_params(t, path):
    assert lib.mr_trainer_save(t, path.encode(), ERR, 1024) == 0, ERR.value.decode()
    return sio.load(path)[0]


def torch_step(model, xs, insts):
    """Mean over the images of the sum of torchvision's five losses, then
    SGD(lr, momentum 0.9) on the parameters: (per-loss means, new state)."""
    model.train()
    model.rpn.fg_bg_sampler.batch_size_per_image = BIG
    model.roi_heads.fg_bg_sampler.batch_size_per_image = BIG
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    opt.zero_grad()
    parts = {k: 0.0 for k in NAMES}
    total = 0
    for x, inst in zip(xs, insts):
        ld = model([x], [torch_targets(inst)])
        for k in NAMES:
            parts[k] += ld[k].item() / len(xs)
        total = total + sum(ld.values()) / len(xs)
    total.backward()
    opt.step()
    model.eval()
    return parts, {k: v.detach().clone() for k, v in model.state_dict().items()}


def compare_update(what, before, c_after, t_after):
    """(C new - old) vs (torch new - old) per tensor, max-based like the
    gradients in test_train.py (ReLU kinks within rounding: 5e-3)."""
    worst = 0.0
    for k, old in before.items():
        dc = c_after[k].astype(np.float64) - old.numpy()
        dt = t_after[k].numpy().astype(np.float64) - old.numpy()
        scale = np.abs(dt).max()
        if scale == 0:
            if np.abs(dc).max() != 0:
                tp.failures.append(f"{what}: {k} moved, torch's did not")
            continue
        worst = max(worst, np.abs(dc - dt).max() / scale)
    ok = worst <= 5e-3
    print(f"{'ok  ' if ok else 'FAIL'} {what}: parameter updates, worst max rel diff {worst:.2e}")
    if not ok:
        tp.failures.append(f"{what}: update differs by {worst:.2e}")


def main():
    tmp = tempfile.mkdtemp(prefix="mrcnn-trainer-")
    path = os.path.join(tmp, "init.safetensors")
    # narrow FPN and heads (fast on a loaded 2-core machine); FrozenBN
    # statistics and biases randomised as test_parity.make_model does
    meta = modelfile.make_metadata("maskrcnn", 2, class_names=["background", "nucleus"],
                                   mpp=0.5, patch_size=H, fpn_channels=64, representation=128,
                                   mask_layers=2, mask_width=32)
    torch.manual_seed(3)
    model = maskrcnn_ref.build_model(meta)
    maskrcnn_ref.randomize_frozen_bn(model, torch.Generator().manual_seed(4))
    with torch.no_grad():
        for name, v in model.named_parameters():
            if name.endswith("bias"):
                v.normal_(0.0, 0.1)
            elif name.startswith("rpn.head"):
                v.normal_(0.0, 0.05)
    modelfile.save_model(model, path, meta)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(8)
    torch.manual_seed(9)
    x1, x2 = torch.randn(3, H, W), torch.randn(3, H, W)
    i1, i2 = instances(rng, 4), instances(rng, 3)

    # ---- 1. one step, one image: losses and update = torchvision + SGD
    t = c_trainer(path)
    cl = c_step(t, [x1], [i1])
    after = c_params(t, os.path.join(tmp, "c1.safetensors"))
    lib.mr_trainer_free(t)
    parts, t_after = torch_step(model, [x1], [i1])
    for i, k in enumerate(NAMES):
        tp.check(f"step loss {k}", np.array([cl[i]]), np.array([parts[k]]), 1e-4)
    tp.check("step loss total", np.array([cl[5]]), np.array([sum(parts.values())]), 1e-4)
    compare_update("one image", before, after, t_after)

    # ---- 2. a batch of two images: the mean of their losses and gradients
    model.load_state_dict(before)
    t = c_trainer(path)
    cl = c_step(t, [x1, x2], [i1, i2])
    after = c_params(t, os.path.join(tmp, "c2.safetensors"))
    lib.mr_trainer_free(t)
    parts, t_after = torch_step(model, [x1, x2], [i1, i2])
    for i, k in enumerate(NAMES):
        tp.check(f"batch of 2 loss {k}", np.array([cl[i]]), np.array([parts[k]]), 1e-4)
    compare_update("batch of two", before, after, t_after)

    # ---- 3. checkpoint -> resume gives the same next step (default sampler
    # sizes: random sampling, seeded by the step)
    ck = os.path.join(tmp, "ck.safetensors")
    t = c_trainer(path, batch=0)
    c_step(t, [x1], [i1])
    assert lib.mr_trainer_save(t, ck.encode(), ERR, 1024) == 0, ERR.value.decode()
    la = c_step(t, [x2], [i2])
    pa = c_params(t, os.path.join(tmp, "a.safetensors"))
    lib.mr_trainer_free(t)
    t = c_trainer(ck, resume=1, batch=0)
    lb = c_step(t, [x2], [i2])
    pb = c_params(t, os.path.join(tmp, "b.safetensors"))
    lib.mr_trainer_free(t)
    same = set(pa) == set(pb) and all(np.array_equal(pa[k], pb[k]) for k in pa)
    n_optim = sum(k.startswith("__optim__.") for k in pa)
    ok = same and np.array_equal(la, lb) and n_optim > 0
    print(f"{'ok  ' if ok else 'FAIL'} resume: step 2 losses {la[5]:.6f} / {lb[5]:.6f}, "
          f"{len(pa)} tensors ({n_optim} optimiser) bit-identical: {same}")
    if not ok:
        tp.failures.append("resumed step differs")
    # the checkpoint is a model file the C loader and PyTorch read
    lib.mr_file_load.restype = C.c_void_p
    lib.mr_file_load.argtypes = [C.c_char_p, C.c_char_p, C.c_size_t]
    f = lib.mr_file_load(ck.encode(), ERR, 1024)
    ok = bool(f)
    if f:
        lib.mr_file_free.argtypes = [C.c_void_p]
        lib.mr_file_free(f)
    try:
        modelfile.load_model(ck)
    except ValueError as e:
        ok = False
        print(e)
    print(f"{'ok  ' if ok else 'FAIL'} checkpoint loads as a model (C and PyTorch) "
          f"{ERR.value.decode() if not f else ''}")
    if not ok:
        tp.failures.append("checkpoint is not a loadable model file")
    shutil.rmtree(tmp)
    if tp.failures:
        print(f"{len(tp.failures)} failures:", *tp.failures, sep="\n  ")
        return 1
    print("trainer step equal to torchvision, resume exact")
    return 0
