"""Training losses of models/train (wsitrain-tool loss) vs PyTorch autograd:
value and d loss / d logits for cross-entropy (class weights, ignore index),
soft Dice (multi-class and one-class), CE+Dice, BCE (pos_weight), MSE, and
the error for a label that is not a class.
usage: test_losses.py WSITRAIN_TOOL"""
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

from wsitest import Checks, tmpdir

TOOL = sys.argv[1]
IGNORE = 255


def run_loss(tmp, kind, logits, labels, opts=(), target=None):
    P, C = logits.shape
    lp, yp, gp = (os.path.join(tmp, f) for f in ("z.raw", "y.raw", "g.raw"))
    logits.astype(np.float32).tofile(lp)
    labels.astype(np.uint8).tofile(yp)
    args = [TOOL, "loss", kind, lp, yp, str(P), str(C), gp] + list(opts)
    if target is not None:
        tp = os.path.join(tmp, "t.raw")
        target.astype(np.float32).tofile(tp)
        args += ["--target", tp]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        return None, None, p.stderr.strip()
    vals = p.stdout.split()
    return float(vals[0]), np.fromfile(gp, np.float32).reshape(P, C), vals


def ref_dice(z, y, smooth):
    valid = y != IGNORE
    if z.shape[1] == 1:
        p = torch.sigmoid(z[valid])
        g = (y[valid] == 1).double()[:, None]
    else:
        p = torch.softmax(z[valid], 1)
        g = F.one_hot(y[valid].long(), z.shape[1]).double()
    inter = (p * g).sum(0)
    d = (2 * inter + smooth) / (p.sum(0) + g.sum(0) + smooth)
    return 1 - d.mean()


def main():
    c = Checks()
    tmp = tmpdir()
    rng = np.random.default_rng(5)
    P, C = 2 * 24 * 20, 4
    z = (rng.standard_normal((P, C)) * 2).astype(np.float32)
    y = rng.integers(0, C, P).astype(np.uint8)
    y[rng.random(P) < 0.15] = IGNORE
    w = np.array([0.5, 1.0, 2.0, 3.0], np.float32)

    def compare(name, kind, ref_fn, logits, labels, opts=(), target=None):
        loss, grad, info = run_loss(tmp, kind, logits, labels, opts, target)
        if loss is None:
            c.check(False, name, info)
            return
        zt = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
        ref = ref_fn(zt)
        ref.backward()
        rg = zt.grad.numpy()
        le = abs(loss - ref.item()) / max(1e-6, abs(ref.item()))
        ge = float(np.abs(grad - rg).max() / max(np.abs(rg).max(), 1e-12))
        c.check(le < 1e-5 and ge < 1e-4, f"{name}: loss and gradient vs torch",
                f"loss {loss:.7g} vs {ref.item():.7g} (rel {le:.1e}), grad rel {ge:.1e}")

    yt = torch.tensor(y.astype(np.int64))
    compare("ce", "ce", lambda t: F.cross_entropy(t, yt, ignore_index=IGNORE), z, y)
    compare("ce class weights + ignore", "ce",
            lambda t: F.cross_entropy(t, yt, weight=torch.tensor(w, dtype=torch.float64),
                                      ignore_index=IGNORE),
            z, y, ["--weights", ",".join(map(str, w))])
    compare("ce no ignore index", "ce",
            lambda t: F.cross_entropy(t, torch.tensor(np.where(y == IGNORE, 1, y).astype(np.int64))),
            z, np.where(y == IGNORE, 1, y), ["--ignore", "-1"])
    compare("dice (4 classes, smooth 1)", "dice", lambda t: ref_dice(t, yt, 1.0), z, y)
    compare("dice (smooth 0.1)", "dice", lambda t: ref_dice(t, yt, 0.1), z, y,
            ["--smooth", "0.1"])
    compare("ce+dice (0.7, 0.3, weights)", "ce+dice",
            lambda t: 0.7 * F.cross_entropy(t, yt, weight=torch.tensor(w, dtype=torch.float64),
                                            ignore_index=IGNORE) + 0.3 * ref_dice(t, yt, 1.0),
            z, y, ["--ce-weight", "0.7", "--dice-weight", "0.3",
                   "--weights", ",".join(map(str, w))])

    # one-class nets: BCE and Dice on sigmoid
    z1 = (rng.standard_normal((P, 1)) * 3).astype(np.float32)
    y1 = rng.integers(0, 2, P).astype(np.uint8)
    y1[rng.random(P) < 0.1] = IGNORE
    y1t = torch.tensor(y1.astype(np.int64))
    v1 = y1t != IGNORE

    def ref_bce(t, pw=1.0):
        return F.binary_cross_entropy_with_logits(
            t[v1][:, 0], y1t[v1].double(), pos_weight=torch.tensor([pw], dtype=torch.float64))
    compare("bce", "bce", ref_bce, z1, y1)
    compare("bce pos_weight 2.5", "bce", lambda t: ref_bce(t, 2.5), z1, y1,
            ["--pos-weight", "2.5"])
    compare("dice one class (sigmoid)", "dice", lambda t: ref_dice(t, y1t, 1.0), z1, y1)

    target = rng.standard_normal((P, 3)).astype(np.float32)
    z3 = rng.standard_normal((P, 3)).astype(np.float32)
    compare("mse", "mse", lambda t: F.mse_loss(t, torch.tensor(target, dtype=torch.float64)),
            z3, np.zeros(P, np.uint8), target=target)

    # accuracy counts from the tool: argmax == label on valid pixels
    loss, _, vals = run_loss(tmp, "ce", z, y)
    valid = y != IGNORE
    n_ok = int((z.argmax(1)[valid] == y[valid]).sum())
    c.check(vals is not None and int(vals[3]) == int(valid.sum()) and int(vals[4]) == n_ok,
            "valid and correct pixel counts", f"{vals[3:5]} vs {int(valid.sum())} {n_ok}")

    # all pixels ignored: loss 0, gradient 0 (no NaN)
    loss, grad, _ = run_loss(tmp, "ce", z, np.full(P, IGNORE, np.uint8))
    c.check(loss == 0.0 and grad is not None and not grad.any(), "all ignored: loss 0, gradient 0")

    # a label that is not a class is an error naming it
    bad = y.copy()
    bad[7] = 9
    loss, _, msg = run_loss(tmp, "ce", z, bad)
    c.check(loss is None and "label 9" in msg, "label outside the classes is refused", msg)
    loss, _, msg = run_loss(tmp, "bce", z, y)
    c.check(loss is None and "one-class" in msg, "bce on a 4-class net is refused", msg)
    c.finish()


if __name__ == "__main__":
    main()
