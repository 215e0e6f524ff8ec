#!/usr/bin/env python3
"""colornorm augmentation: off by default; same seed, same output; different
seeds, different outputs; per-channel factor/shift and HED jitter inside the
configured ranges (recovered by least squares from the output, HED through
scikit-image's hed_from_rgb matrix)."""
import numpy as np
import skimage.color

import cnrun
import wsitest

c = wsitest.Checks()
tmp = wsitest.tmpdir()
rng = np.random.default_rng(1)
N = 16
X = rng.integers(70, 181, size=(N, 64, 64, 3), dtype=np.uint8)
x = X.astype(np.float64) / 255

out, _ = cnrun.run(X, "", tmp=tmp)
c.check(np.abs(out - x).max() < 1e-6, "augment off by default (output = x/255)")

aug = "augment=true augment-scale=0.2 augment-shift=0.1 augment-hed-scale=0.2 augment-hed-shift=0.05"
a1, _ = cnrun.run(X, f"{aug} seed=7", tmp=tmp)
a2, _ = cnrun.run(X, f"{aug} seed=7", tmp=tmp)
b1, _ = cnrun.run(X, f"{aug} seed=8", tmp=tmp)
c.check(np.array_equal(a1, a2), "same seed, same output (bit-exact)")
diff = np.abs(a1 - b1).reshape(N, -1).max(axis=1)
c.check(np.all(diff > 1e-3), "different seeds, different output for every patch",
        f"min per-patch max diff {diff.min():.4f}")
c.check(np.all(np.abs(a1 - x).reshape(N, -1).max(axis=1) > 1e-3), "every patch is changed")
c.check(np.isfinite(a1).all() and a1.min() >= 0 and a1.max() <= 1, "values stay in [0, 1]")

# per-channel factor and shift, no HED jitter
out, _ = cnrun.run(X, "augment=true augment-scale=0.2 augment-shift=0.1 augment-hed-scale=0 "
                   "augment-hed-shift=0 seed=3", tmp=tmp)
fs, ss, res = [], [], 0.0
for i in range(N):
    for ch in range(3):
        A = np.stack([x[i, ..., ch].ravel(), np.ones(x[i, ..., ch].size)], axis=1)
        sol, *_ = np.linalg.lstsq(A, out[i, ..., ch].ravel().astype(np.float64), rcond=None)
        fs.append(sol[0])
        ss.append(sol[1])
        res = max(res, np.abs(A @ sol - out[i, ..., ch].ravel()).max())
fs, ss = np.array(fs), np.array(ss)
c.check(res < 1e-5, "output is exactly factor * x + shift per channel", f"max residual {res:.1e}")
c.check(fs.min() >= 0.8 - 1e-5 and fs.max() <= 1.2 + 1e-5, "factors inside [0.8, 1.2]",
        f"{fs.min():.3f} .. {fs.max():.3f}")
c.check(ss.min() >= -0.1 - 1e-5 and ss.max() <= 0.1 + 1e-5, "shifts inside [-0.1, 0.1]",
        f"{ss.min():.3f} .. {ss.max():.3f}")
c.check(fs.min() < 0.88 and fs.max() > 1.12 and ss.min() < -0.06 and ss.max() > 0.06,
        "draws spread over the ranges (48 per parameter)")

# HED jitter only: concentrations c = OD @ hed_from_rgb become alpha*c + beta
out, _ = cnrun.run(X, "augment=true augment-scale=0 augment-shift=0 augment-hed-scale=0.3 "
                   "augment-hed-shift=0.05 seed=5", tmp=tmp)
M = skimage.color.hed_from_rgb
al, be, res = [], [], 0.0
for i in range(N):
    v = out[i].reshape(-1, 3).astype(np.float64) * 255
    ok = np.all((v > 0.5) & (v < 254.5), axis=1)
    cin = -np.log((X[i].reshape(-1, 3).astype(np.float64) + 1) / 256) @ M
    cout = -np.log((v + 1) / 256) @ M
    for k in range(3):
        A = np.stack([cin[ok, k], np.ones(ok.sum())], axis=1)
        sol, *_ = np.linalg.lstsq(A, cout[ok, k], rcond=None)
        al.append(sol[0])
        be.append(sol[1])
        res = max(res, np.abs(A @ sol - cout[ok, k]).max())
al, be = np.array(al), np.array(be)
c.check(res < 1e-3, "HED concentrations are exactly alpha * c + beta", f"max residual {res:.1e}")
c.check(al.min() >= 0.7 - 1e-3 and al.max() <= 1.3 + 1e-3, "HED factors inside [0.7, 1.3]",
        f"{al.min():.3f} .. {al.max():.3f}")
c.check(be.min() >= -0.05 - 1e-3 and be.max() <= 0.05 + 1e-3, "HED shifts inside [-0.05, 0.05]",
        f"{be.min():.4f} .. {be.max():.4f}")
c.finish()
