#!/usr/bin/env python3
"""Mask R-CNN sub-networks on the wsinn engine vs torchvision 0.14.

torchvision's MaskRCNN(resnet_fpn_backbone('resnet18')) with random weights
(and random FrozenBatchNorm statistics) is exported as one safetensors file;
the engine's three nets (models/arch: features = backbone + FPN + RPN head,
box head, mask head) load it by name. Checked: forward of every output in
inference and training mode, and backward (input and every parameter
gradient) against autograd: the heads, and the features net through frozen
BatchNorm, nearest upsampling, the shared RPN head and some outputs without
gradient. Usage: test_parity.py path/to/mrcnn_ctypes.so [inference]
(inference: the whole inference forward, tests/maskrcnn/test_inference.py)
"""
import ctypes as C
import os
import sys
import tempfile

import numpy as np

try:
    import torch
    import torchvision
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
except ImportError as e:  # pragma: no cover
    print("SKIP: torch/torchvision not importable:", e)
    sys.exit(77)

ROOT = os.environ.get("WSISEG_SOURCE_ROOT",
                      os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "models", "reference"))
import safetensors_io  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
FWD_TOL = 1e-5      # max |engine - torch| / max |torch|, per output (measured ~1e-6)
GRAD_TOL = 1e-4     # same, per gradient tensor (measured ~1e-6)


class Spec(C.Structure):
    _fields_ = [("backbone", C.c_char * 32)] + [(n, C.c_int) for n in (
        "base_width", "fpn_channels", "n_anchors", "n_classes", "representation",
        "box_pool", "mask_layers", "mask_width", "mask_dilation")]


class Param(C.Structure):
    _fields_ = [("name", C.c_char_p), ("ndims", C.c_int), ("shape", C.c_int64 * 4),
                ("size", C.c_size_t), ("data", C.POINTER(C.c_float)),
                ("grad", C.POINTER(C.c_float)), ("trainable", C.c_int)]


lib = C.CDLL(sys.argv[1])
for fn in ("wsinn_maskrcnn_features", "wsinn_maskrcnn_box_head", "wsinn_maskrcnn_mask_head"):
    getattr(lib, fn).restype = C.c_void_p
    getattr(lib, fn).argtypes = [C.POINTER(Spec), C.c_char_p, C.c_size_t]
lib.wsinn_net_find_param.restype = C.POINTER(Param)
lib.wsinn_net_find_param.argtypes = [C.c_void_p, C.c_char_p]
lib.wsinn_net_param.restype = C.POINTER(Param)
lib.wsinn_net_param.argtypes = [C.c_void_p, C.c_size_t]
lib.wsinn_net_n_params.restype = C.c_size_t
lib.wsinn_net_n_params.argtypes = [C.c_void_p]
lib.wsinn_net_n_outputs.argtypes = [C.c_void_p]
lib.wsinn_add_output.argtypes = [C.c_void_p, C.c_int]
lib.wsinn_net_set_training.argtypes = [C.c_void_p, C.c_int]
lib.wsinn_net_free.argtypes = [C.c_void_p]
lib.mr_load.argtypes = [C.c_void_p, C.c_char_p, C.c_char_p, C.c_size_t]
lib.wsinn_net_output_shape_at.argtypes = [C.c_void_p, C.c_int, C.c_int, C.c_int, C.c_int,
                                          C.POINTER(C.c_int), C.POINTER(C.c_int),
                                          C.POINTER(C.c_int), C.c_char_p, C.c_size_t]
lib.wsinn_net_forward_outputs.argtypes = [C.c_void_p, C.c_void_p, C.c_int, C.c_int, C.c_int,
                                          C.POINTER(C.c_void_p), C.c_char_p, C.c_size_t]
lib.wsinn_net_backward_outputs.argtypes = [C.c_void_p, C.POINTER(C.c_void_p), C.c_void_p,
                                           C.c_char_p, C.c_size_t]

ERR = C.create_string_buffer(512)
failures = []


def check(what, got, ref, tol):
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if got.shape != ref.shape:
        failures.append(f"{what}: shape {got.shape} != {ref.shape}")
        print(f"FAIL {what}: shape {got.shape} != {ref.shape}")
        return
    scale = max(np.abs(ref).max(), 1e-12)
    rel = np.abs(got - ref).max() / scale
    l2 = np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30)
    ok = rel <= tol and np.isfinite(got).all()
    print(f"{'ok  ' if ok else 'FAIL'} {what}: max rel diff {rel:.2e}, L2 {l2:.1e} "
          f"(max |ref| {scale:.3g})")
    if not ok:
        failures.append(f"{what}: {rel:.2e}")


def new_net(fn, spec, path):
    net = getattr(lib, fn)(C.byref(spec), ERR, 512)
    assert net, ERR.value.decode()
    assert lib.mr_load(net, path.encode(), ERR, 512) == 0, ERR.value.decode()
    return net


def forward(net, x_nhwc):
    n, h, w, _ = x_nhwc.shape
    outs = []
    for k in range(lib.wsinn_net_n_outputs(net)):
        c, oh, ow = C.c_int(), C.c_int(), C.c_int()
        assert lib.wsinn_net_output_shape_at(net, k, n, h, w, C.byref(c), C.byref(oh),
                                             C.byref(ow), ERR, 512) == 0, ERR.value.decode()
        outs.append(np.zeros((n, oh.value, ow.value, c.value), np.float32))
    ptrs = (C.c_void_p * len(outs))(*[o.ctypes.data for o in outs])
    x = np.ascontiguousarray(x_nhwc, dtype=np.float32)
    assert lib.wsinn_net_forward_outputs(net, x.ctypes.data, n, h, w, ptrs, ERR, 512) == 0, \
        ERR.value.decode()
    return outs


def backward(net, douts, x_shape):
    keep = [None if d is None else np.ascontiguousarray(d, np.float32) for d in douts]
    ptrs = (C.c_void_p * len(keep))(*[None if d is None else d.ctypes.data for d in keep])
    dx = np.zeros(x_shape, np.float32)
    assert lib.wsinn_net_backward_outputs(net, ptrs, dx.ctypes.data, ERR, 512) == 0, \
        ERR.value.decode()
    return dx


def grads(net):
    out = {}
    for i in range(lib.wsinn_net_n_params(net)):
        p = lib.wsinn_net_param(net, i).contents
        if p.trainable:
            out[p.name.decode()] = np.ctypeslib.as_array(p.grad, shape=(p.size,)).copy()
    return out


def nhwc(t):
    return t.detach().permute(0, 2, 3, 1).numpy()


def nchw(a):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def compare_grads(net, module, prefix, what):
    g = grads(net)
    for name, par in module.named_parameters(prefix=prefix):
        ref = par.grad if par.grad is not None else torch.zeros_like(par)
        if name not in g:
            failures.append(f"{what}: no parameter {name} in the engine")
            print(f"FAIL {what}: no parameter {name}")
            continue
        check(f"{what} grad {name}", g[name], ref.reshape(-1).numpy(), GRAD_TOL)


def make_model(n_classes=3, seed=0):
    """torchvision's MaskRCNN on resnet18 + FPN with random weights and
    FrozenBatchNorm statistics, saved as a model file: (model, path)."""
    torch.manual_seed(seed)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    model = MaskRCNN(backbone, num_classes=n_classes).eval()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if "running_var" in name:
                t.uniform_(0.5, 2.0)
            elif "running_mean" in name:
                t.normal_(0.0, 0.2)
            elif "body" in name and ("bn" in name or "downsample.1" in name):
                t.uniform_(0.5, 1.5) if name.endswith("weight") else t.normal_(0.0, 0.2)
            elif name.endswith("bias"):
                t.normal_(0.0, 0.1)
            elif name.startswith("rpn.head"):
                t.normal_(0.0, 0.05)
    tmp = tempfile.mkdtemp(prefix="mrcnn-parity-")
    path = os.path.join(tmp, "maskrcnn.safetensors")
    safetensors_io.save(path, {k: v.numpy().astype(np.float32)
                               for k, v in model.state_dict().items()},
                        {"format": "gst-wsiseg-model", "arch": "maskrcnn"})
    return model, path


def main():
    n_classes = 3
    model, path = make_model(n_classes)
    tmp = os.path.dirname(path)
    spec = Spec()
    lib.wsinn_maskrcnn_spec_init(C.byref(spec))
    spec.n_classes = n_classes

    # ---- features: backbone + FPN + RPN head, 2 images of 64 x 96
    net = new_net("wsinn_maskrcnn_features", spec, path)
    x = torch.randn(2, 3, 64, 96)
    levels = ["0", "1", "2", "3", "pool"]
    with torch.no_grad():
        feats = model.backbone(x)
        obj, dl = model.rpn.head(list(feats.values()))
    refs = [feats[k] for k in levels] + list(obj) + list(dl)
    names = [f"fpn {k}" for k in levels] + [f"objectness {k}" for k in levels] + \
        [f"deltas {k}" for k in levels]
    for mode in (0, 1):
        lib.wsinn_net_set_training(net, mode)
        outs = forward(net, nhwc(x))
        for nm, o, r in zip(names, outs, refs):
            check(f"features {'train' if mode else 'infer'} {nm}", o, nhwc(r), FWD_TOL)
    # backward (training plan): gradients on every output but fpn '1' and 'pool'
    xg = x.clone().requires_grad_(True)
    model.zero_grad()
    feats = model.backbone(xg)
    obj, dl = model.rpn.head(list(feats.values()))
    refs = [feats[k] for k in levels] + list(obj) + list(dl)
    douts = [None if i in (1, 4) else torch.randn(r.shape) for i, r in enumerate(refs)]
    loss = sum((r * d).sum() for r, d in zip(refs, douts) if d is not None)
    loss.backward()
    dx = backward(net, [None if d is None else nhwc(d) for d in douts], (2, 64, 96, 3))
    check("features input grad", dx, nhwc(xg.grad), GRAD_TOL)
    compare_grads(net, model.backbone, "backbone", "features")
    compare_grads(net, model.rpn.head, "rpn.head", "features")
    n_ref = len(list(model.backbone.parameters())) + len(list(model.rpn.head.parameters()))
    if len(grads(net)) != n_ref:
        failures.append(f"features: {len(grads(net))} trainable tensors, torch {n_ref}")
    lib.wsinn_net_free(net)

    # ---- box head on 6 RoIs of 256 x 7 x 7
    net = new_net("wsinn_maskrcnn_box_head", spec, path)
    rf = torch.randn(6, 256, 7, 7).requires_grad_(True)
    model.zero_grad()
    h = model.roi_heads.box_head(rf)
    cls, box = model.roi_heads.box_predictor(h)
    for mode in (0, 1):
        lib.wsinn_net_set_training(net, mode)
        outs = forward(net, nhwc(rf))
        check(f"box head {'train' if mode else 'infer'} class logits", outs[0].reshape(6, -1),
              cls.detach().numpy(), FWD_TOL)
        check(f"box head {'train' if mode else 'infer'} box regression", outs[1].reshape(6, -1),
              box.detach().numpy(), FWD_TOL)
    gc, gb = torch.randn(cls.shape), torch.randn(box.shape)
    ((cls * gc).sum() + (box * gb).sum()).backward()
    dx = backward(net, [gc.numpy().reshape(6, 1, 1, -1), gb.numpy().reshape(6, 1, 1, -1)],
                  (6, 7, 7, 256))
    check("box head input grad", dx, nhwc(rf.grad), GRAD_TOL)
    compare_grads(net, model.roi_heads.box_head, "roi_heads.box_head", "box head")
    compare_grads(net, model.roi_heads.box_predictor, "roi_heads.box_predictor", "box head")
    # one output without gradient
    model.zero_grad()
    rf.grad = None
    h = model.roi_heads.box_head(rf)
    cls, box = model.roi_heads.box_predictor(h)
    (box * gb).sum().backward()
    dx = backward(net, [None, gb.numpy().reshape(6, 1, 1, -1)], (6, 7, 7, 256))
    check("box head input grad (box only)", dx, nhwc(rf.grad), GRAD_TOL)
    lib.wsinn_net_free(net)

    # ---- mask head on 5 RoIs of 256 x 14 x 14
    net = new_net("wsinn_maskrcnn_mask_head", spec, path)
    rf = torch.randn(5, 256, 14, 14).requires_grad_(True)
    model.zero_grad()
    m = model.roi_heads.mask_predictor(model.roi_heads.mask_head(rf))
    for mode in (0, 1):
        lib.wsinn_net_set_training(net, mode)
        outs = forward(net, nhwc(rf))
        check(f"mask head {'train' if mode else 'infer'} logits", outs[0], nhwc(m), FWD_TOL)
    # ReLU kinks: an activation within float rounding of 0 may take the
    # other branch in torch (1 of ~1e6 here, enough to move a gradient by
    # 1e-3), so the reference backward uses the engine's ReLU decisions: the
    # pre-activations (conv nodes 1, 3, 5, 7 and the deconv 9) as extra
    # outputs, given no gradient.
    pre_nodes = [1 + 2 * i for i in range(spec.mask_layers + 1)]
    for node in pre_nodes:
        assert lib.wsinn_add_output(net, node) > 0
    outs = forward(net, nhwc(rf))
    check("mask head train logits (with extra outputs)", outs[0], nhwc(m), FWD_TOL)
    masks = [nchw(o) > 0 for o in outs[1:]]
    model.zero_grad()
    rf.grad = None
    mh, mp = model.roi_heads.mask_head, model.roi_heads.mask_predictor
    t = rf
    for i in range(spec.mask_layers):
        t = mh[i][0](t) * masks[i]
    t = mp.conv5_mask(t) * masks[-1]
    m = mp.mask_fcn_logits(t)
    gm = torch.randn(m.shape)
    (m * gm).sum().backward()
    dx = backward(net, [nhwc(gm)] + [None] * len(pre_nodes), (5, 14, 14, 256))
    compare_grads(net, model.roi_heads.mask_head, "roi_heads.mask_head", "mask head")
    compare_grads(net, model.roi_heads.mask_predictor, "roi_heads.mask_predictor", "mask head")
    lib.wsinn_net_free(net)

    os.remove(path)
    os.rmdir(tmp)
    if failures:
        print(f"{len(failures)} failures:", *failures, sep="\n  ")
        return 1
    print("all equal to torchvision", torchvision.__version__)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "inference":
        import test_inference
        sys.exit(test_inference.main())
    if len(sys.argv) > 2 and sys.argv[2] == "modelfile":
        import test_modelfile
        sys.exit(test_modelfile.main())
    if len(sys.argv) > 2 and sys.argv[2] == "trainer":
        import test_trainer
        sys.exit(test_trainer.main())
    if len(sys.argv) > 2 and sys.argv[2] == "instances":
        import test_instances
        sys.exit(test_instances.main())
    if len(sys.argv) > 2 and sys.argv[2] == "train":
        import test_train
        sys.exit(test_train.main())
    sys.exit(main())
