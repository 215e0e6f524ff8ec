"""Optimiser steps of models/train (wsitrain-tool train) vs PyTorch.

Same initial weights (a reference model with randomized BatchNorm exported
as a model file), same generated batches, no augmentation; the C trainer and
torch.optim run the same steps in training mode. Every tensor of the
checkpoint (weights, BatchNorm running statistics: momentum 0.1, unbiased
variance) must equal PyTorch's within max|a-b| / max(1, max|b|) < 1e-4, and
the optimiser state (momentum buffers, exp_avg, exp_avg_sq) after the first
step within 2e-3 of its largest value (the engine's gradients match to
~1e-3 relative). The state is not compared after later steps: weights that
differ by 1e-7 can put a pre-activation on the other side of a ReLU kink,
which changes a gradient by ~1 % (measured: 1e-6 relative noise on the
weights changes a BatchNorm bias gradient by 1.6 % in PyTorch itself).
Adam's first steps move every weight by ~lr * sign(grad): a weight whose
gradient is at the engine's float noise (|g| ~ 1e-6 of its tensor's largest,
~1e-7 absolute, as in DeepLab's dilated layer4 on 4x4 maps) can move either
way. For fcn8s and deeplabv3 the Adam cases therefore use eps 1e-5, which
bounds the update error by lr * |dg| / eps ~ 1e-5; unet uses PyTorch's 1e-8.
usage: test_step.py WSITRAIN_TOOL ARCH   (ARCH: unet | fcn8s | deeplabv3)"""
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.environ.get("WSISEG_SOURCE_ROOT", "."), "models", "reference"))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import modelfile  # noqa: E402
import safetensors_io  # noqa: E402
import wsinn_ref  # noqa: E402

from wsitest import Checks, tmpdir  # noqa: E402

TOOL = sys.argv[1]
ARCH = sys.argv[2] if len(sys.argv) > 2 else "unet"
torch.set_num_threads(2)

HYPER = {
    "unet": dict(arch="unet", depth=2, base_width=8),
    "fcn8s": dict(arch="fcn8s", encoder="vgg", base_width=8, vgg_blocks=[1, 1, 1, 1, 1]),
    "deeplabv3": dict(arch="deeplabv3", encoder="resnet18", base_width=8,
                      output_stride=16, aspp_width=16),
}[ARCH]
N_CLASSES, N, H, W = 3, 2, 64, 64
# The deep stages of FCN-8s and DeepLab see 2x2..4x4 maps here (8..32 values
# per channel in the batch): one ReLU kink flipped by 1e-7 weight differences
# after step 1 moves a gradient of step 2 by several %, so they are compared
# after one step; U-Net (16x16 at the bottom) after two.
STEPS = 2 if ARCH == "unet" else 1
ADAM_EPS = 1e-8 if ARCH == "unet" else 1e-5
WEIGHTS = [0.5, 1.0, 2.0]

CASES = [
    # name, tool options, torch optimizer factory, loss
    ("sgd momentum 0.9 + weight decay", ["--optim", "sgd", "--lr", "0.05", "--momentum", "0.9",
                                         "--wd", "1e-3"],
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3), "ce"),
    ("sgd nesterov", ["--optim", "sgd", "--lr", "0.05", "--momentum", "0.9", "--nesterov",
                      "--wd", "1e-3"],
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True), "ce"),
    ("adam + L2 weight decay", ["--optim", "adam", "--lr", "1e-3", "--wd", "1e-2", "--eps", str(ADAM_EPS)],
     lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-2, eps=ADAM_EPS), "ce+dice"),
    ("adamw", ["--optim", "adamw", "--lr", "1e-3", "--wd", "0.05", "--beta1", "0.8",
               "--eps", str(ADAM_EPS)],
     lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.05, betas=(0.8, 0.999),
                                 eps=ADAM_EPS), "dice"),
]


def nhwc(t):
    return np.ascontiguousarray(t.permute(0, 2, 3, 1).numpy(), dtype=np.float32)


def dice(z, y, smooth=1.0):
    valid = y != 255
    p = torch.softmax(z.permute(0, 2, 3, 1)[valid], 1)
    g = F.one_hot(y[valid], z.shape[1]).float()
    d = (2 * (p * g).sum(0) + smooth) / (p.sum(0) + g.sum(0) + smooth)
    return 1 - d.mean()


def torch_loss(kind, z, y):
    w = torch.tensor(WEIGHTS)
    ce = lambda: F.cross_entropy(z, y, weight=w, ignore_index=255)  # noqa: E731
    if kind == "ce":
        return ce()
    if kind == "dice":
        return dice(z, y)
    return ce() + dice(z, y)


def main():
    c = Checks()
    tmp = tmpdir()
    gen = torch.Generator().manual_seed(11)
    meta = modelfile.make_metadata(n_classes=N_CLASSES, **HYPER)
    torch.manual_seed(4)
    model0 = wsinn_ref.build_model(meta)
    wsinn_ref.randomize_batchnorm(model0, gen)
    path = os.path.join(tmp, "init.safetensors")
    modelfile.save_model(model0, path, meta)
    init_state = {k: v.clone() for k, v in model0.state_dict().items()}

    xs = torch.randn(STEPS, N, 3, H, W, generator=gen)
    ys = torch.randint(0, N_CLASSES, (STEPS, N, H, W), generator=gen)
    ys[torch.rand(ys.shape, generator=gen) < 0.1] = 255
    xin, yin = os.path.join(tmp, "x.raw"), os.path.join(tmp, "y.raw")
    np.concatenate([nhwc(x) for x in xs]).tofile(xin)
    ys.numpy().astype(np.uint8).tofile(yin)

    for name, opts, make_opt, loss_kind in CASES:
        got, c_losses = {}, {}
        for steps in sorted({1, STEPS}):
            out = os.path.join(tmp, f"out{steps}.safetensors")
            args = [TOOL, "train", path, xin, yin, N, H, W, out, "--steps", steps,
                    "--loss", loss_kind, "--weights", ",".join(map(str, WEIGHTS)),
                    "--threads", 1] + opts
            p = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                               timeout=120)
            if p.returncode != 0:
                break
            c_losses[steps] = [float(line.split()[3]) for line in p.stdout.splitlines()
                               if line.startswith("step ")]
            got[steps] = safetensors_io.load(out)[0]
        if not c.check(p.returncode == 0, f"{ARCH} {name}: wsitrain-tool ran", p.stderr.strip()):
            continue

        model = wsinn_ref.build_model(meta)
        model.load_state_dict(init_state)
        model.train()
        opt = make_opt(model.parameters())
        names = {id(p): k for k, p in model.named_parameters()}
        t_losses, state1 = [], {}
        for s in range(STEPS):
            opt.zero_grad()
            loss = torch_loss(loss_kind, model(xs[s]), ys[s])
            loss.backward()
            opt.step()
            t_losses.append(loss.item())
            if s == 0:
                state1 = {f"__optim__.{names[id(prm)]}.{key}": val.clone().numpy()
                          for prm, st in opt.state.items() for key, val in st.items()
                          if key != "step"}
        le = max(abs(a - b) / max(1e-6, abs(b)) for a, b in zip(c_losses[STEPS], t_losses))
        c.check(len(c_losses[STEPS]) == STEPS and le < 1e-4, f"{ARCH} {name}: losses per step",
                f"C {c_losses[STEPS]} torch {[round(v, 7) for v in t_losses]}")

        worst, worst_name, missing = 0.0, "", []
        moved = 0.0
        trainable = set(names.values())
        for k, v in wsinn_ref.exported_state(model).items():
            if k not in got[STEPS]:
                missing.append(k)
                continue
            ref = v.detach().numpy()
            e = float(np.abs(np.asarray(got[STEPS][k]) - ref).max() / max(1.0, np.abs(ref).max()))
            if k in trainable:
                moved = max(moved, float(np.abs(ref - init_state[k].numpy()).max()))
            if e > worst:
                worst, worst_name = e, k
        c.check(not missing and worst < 1e-4 and moved > 1e-4,
                f"{ARCH} {name}: {len(got[STEPS])} tensors after {STEPS} steps",
                f"worst {worst_name} {worst:.2e}, largest weight change {moved:.2e}"
                + (f", missing {missing[:3]}" if missing else ""))

        # optimiser state after the first step, under PyTorch's names
        worst, worst_name = 0.0, ""
        for tname, ref in state1.items():
            if tname not in got[1]:
                worst, worst_name = 1.0, tname + " missing"
                continue
            e = float(np.abs(np.asarray(got[1][tname]) - ref).max()
                      / max(np.abs(ref).max(), 1e-12))
            if e > worst:
                worst, worst_name = e, tname
        c.check(state1 and worst < 2e-3, f"{ARCH} {name}: {len(state1)} optimiser state tensors",
                f"worst {worst_name} {worst:.2e}")
    c.finish()


if __name__ == "__main__":
    main()
