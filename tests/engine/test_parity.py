"""wsinn engine vs the PyTorch reference modules (models/reference/wsinn_ref.py).

For each architecture/encoder (small widths, batch 2): a random model with
non-trivial BatchNorm statistics is exported as a model file; wsinn-infer
(C engine) runs it and its outputs are compared with PyTorch:
- inference: logits and probabilities (softmax / sigmoid);
- training: logits with batch statistics and, after backward of
  loss = sum(logits * R), every parameter gradient and the input gradient;
- batch: a batch of 3 gives the same output as 3 runs of batch 1.
usage: test_parity.py WSINN_INFER [filter]"""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.environ.get("WSISEG_SOURCE_ROOT", "."), "models", "reference"))
import torch  # noqa: E402
import modelfile  # noqa: E402
import safetensors_io  # noqa: E402
import wsinn_ref  # noqa: E402

from wsitest import Checks  # noqa: E402

INFER = sys.argv[1]
FILTER = sys.argv[2] if len(sys.argv) > 2 else ""
torch.set_num_threads(2)

CONFIGS = [
    # name, metadata hyperparameters, n_classes, H, W
    ("unet_d3_b8", dict(arch="unet", depth=3, base_width=8), 2, 48, 40),
    ("unet_1class", dict(arch="unet", depth=2, base_width=8), 1, 32, 24),
    ("fcn8s_vgg", dict(arch="fcn8s", encoder="vgg", base_width=8), 3, 64, 64),
    ("fcn8s_resnet18", dict(arch="fcn8s", encoder="resnet18", base_width=8), 2, 64, 96),
    ("deeplabv3_resnet18_os16", dict(arch="deeplabv3", encoder="resnet18", base_width=8,
                                     output_stride=16, aspp_width=16), 2, 64, 64),
    ("deeplabv3_resnet34_os8", dict(arch="deeplabv3", encoder="resnet34", base_width=8,
                                    output_stride=8, aspp_width=16), 3, 64, 32),
    ("deeplabv3_vgg_os16", dict(arch="deeplabv3", encoder="vgg", base_width=8,
                                output_stride=16, aspp_width=16), 2, 64, 64),
]


def run(args):
    p = subprocess.run([INFER] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"wsinn-infer failed: {p.stderr.strip()}")
    return p


def nhwc(t):
    return np.ascontiguousarray(t.detach().permute(0, 2, 3, 1).numpy(), dtype=np.float32)


def rel_err(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


def main():
    c = Checks()
    tmp = tempfile.mkdtemp(prefix="wsinn-parity-")
    gen = torch.Generator().manual_seed(1)
    for name, hyper, n_classes, H, W in CONFIGS:
        if FILTER and FILTER not in name:
            continue
        meta = modelfile.make_metadata(n_classes=n_classes, **hyper)
        torch.manual_seed(3)
        model = wsinn_ref.build_model(meta)
        wsinn_ref.randomize_batchnorm(model, gen)
        path = os.path.join(tmp, name + ".safetensors")
        modelfile.save_model(model, path, meta)
        N = 2
        x = torch.randn(N, 3, H, W, generator=gen)
        xin = os.path.join(tmp, name + ".in")
        nhwc(x).tofile(xin)
        out = os.path.join(tmp, name + ".out")

        # inference: logits and probabilities
        model.eval()
        with torch.no_grad():
            ref = model(x)
            ref_p = model.predict(x)
        run([path, xin, N, H, W, out])
        got = np.fromfile(out, np.float32).reshape(N, H, W, n_classes)
        e = rel_err(got, nhwc(ref))
        c.check(e < 1e-4, f"{name}: inference logits", f"max error {e:.2e} of max |logit|")
        run([path, xin, N, H, W, out, "--probs"])
        got = np.fromfile(out, np.float32).reshape(N, H, W, n_classes)
        e = float(np.abs(got - nhwc(ref_p)).max())
        c.check(e < 1e-5, f"{name}: inference probabilities", f"max abs error {e:.2e}")

        # batch 3 == three runs of batch 1
        x3 = torch.randn(3, 3, H, W, generator=gen)
        nhwc(x3).tofile(xin)
        run([path, xin, 3, H, W, out])
        batch = np.fromfile(out, np.float32).reshape(3, H, W, n_classes)
        worst = 0.0
        for i in range(3):
            nhwc(x3[i:i + 1]).tofile(xin)
            run([path, xin, 1, H, W, out])
            one = np.fromfile(out, np.float32).reshape(1, H, W, n_classes)
            worst = max(worst, rel_err(batch[i:i + 1], one))
        c.check(worst < 1e-5, f"{name}: batch of 3 == 3 x batch of 1", f"{worst:.2e}")

        # training: batch statistics, gradients
        model.train()
        xt = x.clone().requires_grad_(True)
        y = model(xt)
        r = torch.randn(y.shape, generator=gen)
        (y * r).sum().backward()
        nhwc(x).tofile(xin)
        dout = os.path.join(tmp, name + ".dout")
        nhwc(r).tofile(dout)
        grads = os.path.join(tmp, name + ".grads.safetensors")
        run([path, xin, N, H, W, out, "--backward", dout, grads])
        got = np.fromfile(out, np.float32).reshape(N, H, W, n_classes)
        e = rel_err(got, nhwc(y))
        c.check(e < 1e-3, f"{name}: training logits (batch statistics)", f"{e:.2e}")
        g = safetensors_io.load(grads)[0]
        worst, worst_name, n = 0.0, "", 0
        for pname, prm in model.named_parameters():
            if pname not in g:
                c.check(False, f"{name}: gradient of {pname} present")
                continue
            e = rel_err(np.asarray(g[pname]), prm.grad.numpy())
            n += 1
            if e > worst:
                worst, worst_name = e, pname
        c.check(n > 0 and worst < 5e-3, f"{name}: {n} parameter gradients",
                f"worst {worst_name} {worst:.2e}")
        e = rel_err(np.asarray(g["input"]), nhwc(xt.grad))
        c.check(e < 5e-3, f"{name}: input gradient", f"{e:.2e}")
    shutil.rmtree(tmp, ignore_errors=True)
    if c.count == 0:
        print("no configuration matched the filter")
        sys.exit(1)
    c.finish()


if __name__ == "__main__":
    main()
