#!/usr/bin/python3
"""PyTorch reference modules: every arch/encoder builds, runs at multiples of
its size_multiple, exports and reloads to bit-identical outputs; the loader
refuses files whose tensors do not match the architecture."""
import os

import numpy as np
import torch
import torch.nn.functional as F

import mfutil  # noqa: F401  (sys.path)
import modelfile
import safetensors_io
import wsinn_ref
import wsitest

torch.set_num_threads(1)  # shared 2-core machine: avoid oversubscription
c = wsitest.Checks()
tmp = wsitest.tmpdir()

configs = [
    dict(arch="unet", depth=3, base_width=4, n_classes=3),
    dict(arch="unet", depth=4, base_width=4, n_classes=1),
    dict(arch="fcn8s", encoder="vgg", base_width=4, n_classes=2),
    dict(arch="fcn8s", encoder="resnet18", base_width=4, n_classes=4),
    dict(arch="fcn8s", encoder="resnet34", base_width=4, n_classes=2),
    dict(arch="deeplabv3", encoder="resnet18", base_width=4, aspp_width=8, n_classes=2),
    dict(arch="deeplabv3", encoder="resnet18", base_width=4, aspp_width=8,
         output_stride=8, n_classes=3),
    dict(arch="deeplabv3", encoder="vgg", base_width=4, aspp_width=8, output_stride=16,
         n_classes=1),
]

for i, cfg in enumerate(configs):
    cfg = dict(cfg)
    label = " ".join(f"{k}={v}" for k, v in cfg.items() if k != "base_width")
    meta = modelfile.make_metadata(cfg.pop("arch"), cfg.pop("n_classes"),
                                   encoder=cfg.pop("encoder", None), **cfg)
    torch.manual_seed(i)
    model = wsinn_ref.build_model(meta)
    wsinn_ref.randomize_batchnorm(model, torch.Generator().manual_seed(i))
    model.eval()
    mult = int(meta["size_multiple"])
    h, w = 2 * 32, 3 * 32
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(100 + i))
    with torch.no_grad():
        y = model(x)
        prob = model.predict(x)
    n = int(meta["n_classes"])
    c.check(tuple(y.shape) == (2, n, h, w), f"{label}: logits at input size", str(tuple(y.shape)))
    if n > 1:
        c.check(torch.allclose(prob.sum(1), torch.ones(2, h, w), atol=1e-5),
                f"{label}: softmax sums to 1")
    else:
        c.check(torch.equal(prob, torch.sigmoid(y)), f"{label}: sigmoid output")
    if mult < 32:
        x2 = torch.randn(1, 3, 3 * mult, 5 * mult)
        with torch.no_grad():
            c.check(tuple(model(x2).shape[2:]) == (3 * mult, 5 * mult),
                    f"{label}: runs at multiples of {mult}")

    path = os.path.join(tmp, f"m{i}.safetensors")
    modelfile.save_model(model, path, meta)
    back, bmeta = modelfile.load_model(path)
    with torch.no_grad():
        y2 = back(x)
    c.check(bmeta == meta, f"{label}: metadata reloads")
    c.check(torch.equal(y, y2), f"{label}: export -> reload gives identical outputs")

    path16 = os.path.join(tmp, f"m{i}-bf16.safetensors")
    modelfile.save_model(model, path16, meta, dtype="BF16")
    b16, _ = modelfile.load_model(path16)
    with torch.no_grad():
        y3 = b16.predict(x)
    err = (y3 - prob).abs().max().item()
    c.check(err < 0.1, f"{label}: BF16 export stays close", f"max prob diff {err:.3g}")

    # tampered files are refused with the tensor named
    tensors, fmeta, _ = safetensors_io.load(path)
    name = next(iter(tensors))
    bad = dict(tensors)
    bad[name] = np.zeros(tuple(tensors[name].shape) + (1,), np.float32)
    safetensors_io.save(os.path.join(tmp, "bad.safetensors"), bad, fmeta)
    try:
        modelfile.load_model(os.path.join(tmp, "bad.safetensors"))
        c.check(False, f"{label}: wrong shape refused")
    except ValueError as e:
        c.check(f"tensor {name}: shape" in str(e), f"{label}: wrong shape refused", str(e)[-120:])
    bad = dict(tensors)
    bad.pop(name)
    bad["extra.weight"] = np.zeros(3, np.float32)
    safetensors_io.save(os.path.join(tmp, "bad.safetensors"), bad, fmeta)
    try:
        modelfile.load_model(os.path.join(tmp, "bad.safetensors"))
        c.check(False, f"{label}: missing/unexpected tensors refused")
    except ValueError as e:
        c.check(f"missing tensor {name}" in str(e) and "unexpected tensor extra.weight" in str(e),
                f"{label}: missing/unexpected tensors refused")

# structure facts the C engine relies on (docs/model-format.md)
m = wsinn_ref.build_model({"arch": "deeplabv3", "encoder": "resnet18", "output_stride": "8",
                           "base_width": "4", "aspp_width": "8"})
l3, l4 = m.encoder.layer3[0], m.encoder.layer4[0]
c.check(l3.conv1.stride == (1, 1) and l3.conv1.dilation == (2, 2)
        and l4.conv2.dilation == (4, 4) and l4.downsample[0].stride == (1, 1),
        "resnet output stride 8: layer3 dilation 2, layer4 dilation 4, stride 1")
m = wsinn_ref.build_model({"arch": "deeplabv3", "encoder": "vgg", "output_stride": "8",
                           "base_width": "4", "aspp_width": "8"})
c.check(m.encoder.pool_after == [True, True, True, False, False]
        and m.encoder.stages[4][0].conv.dilation == (2, 2)
        and m.encoder.stages[3][0].conv.dilation == (1, 1),
        "vgg output stride 8: pools 3/4 skipped, stage 4 dilation 2")
c.check(m.aspp.b1.conv.dilation == (12, 12) and m.aspp.b3.conv.dilation == (36, 36),
        "ASPP rates 12/24/36 at output stride 8")

# FCN's transposed convs start as bilinear upsamplers: away from the borders
# they equal F.interpolate(bilinear, align_corners=False) (independent op)
fcn = wsinn_ref.build_model({"arch": "fcn8s", "n_classes": "3", "base_width": "4"})
s = torch.randn(1, 3, 6, 7)
with torch.no_grad():
    for up, f in ((fcn.up32, 2), (fcn.up8, 8)):
        a = up(s)
        b = F.interpolate(s, scale_factor=f, mode="bilinear", align_corners=False)
        inner = (slice(None), slice(None), slice(f, -f), slice(f, -f))
        d = (a[inner] - b[inner]).abs().max().item()
        c.check(a.shape == b.shape and d < 1e-5, f"FCN x{f} upsampler starts bilinear",
                f"max diff {d:.2g}")
c.finish()
