#!/usr/bin/env python3
"""colornorm against independent numpy / scikit-image references on real H&E
patches of the sample slide: every mode, tensor and video output, per-patch and
fit-once estimates, target fitted from a PNG, and the built-in targets."""
import os
import re
import subprocess

import numpy as np
import skimage.io

import cnref
import cnrun
import wsitest

TENSOR_TOL = 0.02 / 255   # stain modes, tensor output (float32 vs float64)
EXACT_TOL = 1e-6          # rescale / standardize

c = wsitest.Checks()
P, slide = cnrun.sample_patches(count=6)
tmp = wsitest.tmpdir()
print(f"{len(P)} tissue patches 256x256 from {wsitest.SAMPLE_SLIDE}")

# --- rescale / standardize ----------------------------------------------
x = P.astype(np.float64)
out, _ = cnrun.run(P, "mode=rescale01", tmp=tmp)
c.check(np.abs(out - x / 255).max() <= EXACT_TOL, "rescale01 = x/255",
        f"max err {np.abs(out - x / 255).max():.2e}")
out, _ = cnrun.run(P, "mode=rescale11", tmp=tmp)
c.check(np.abs(out - (x / 127.5 - 1)).max() <= EXACT_TOL, "rescale11 = x/127.5-1",
        f"max err {np.abs(out - (x / 127.5 - 1)).max():.2e}")
mean, std = np.array([0.7, 0.5, 0.65]), np.array([0.15, 0.2, 0.1])
out, _ = cnrun.run(P, f"mode=standardize mean={cnrun.arr_prop(mean)} std={cnrun.arr_prop(std)}",
                   tmp=tmp)
ref = (x / 255 - mean) / std
c.check(np.abs(out - ref).max() <= 1e-5, "standardize with given mean/std",
        f"max err {np.abs(out - ref).max():.2e}")
out, _ = cnrun.run(P, "mode=standardize", tmp=tmp)
ref = (x / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
c.check(np.abs(out - ref).max() <= 1e-5, "standardize default = ImageNet mean/std",
        f"max err {np.abs(out - ref).max():.2e}")
out, _ = cnrun.run(P, "mode=standardize-patch", tmp=tmp)
m = (x / 255).mean(axis=(1, 2), keepdims=True)
s = (x / 255).std(axis=(1, 2), keepdims=True)
ref = (x / 255 - m) / s
c.check(np.abs(out - ref).max() <= 1e-4, "standardize-patch (per-patch mean/std)",
        f"max err {np.abs(out - ref).max():.2e}")

# --- Reinhard, per patch ------------------------------------------------
tm, ts = np.array([60.0, 25.0, -15.0]), np.array([15.0, 10.0, 8.0])
tprops = f"target-lab-mean={cnrun.arr_prop(tm)} target-lab-std={cnrun.arr_prop(ts)}"
out, pr = cnrun.run(P, f"mode=reinhard fit=per-patch post-messages=true {tprops}", tmp=tmp)
vid, quiet = cnrun.run(P, f"mode=reinhard fit=per-patch {tprops}", video=True, tmp=tmp)
# per-patch estimates are periodic: notified only with post-messages (issue 9, point 11)
c.check(len(pr.get("source-lab-mean", [])) == len(P) and "source-lab-mean" not in quiet
        and len(quiet.get("source-fitted", [])) <= 1,
        "per-patch source estimates notified once per patch with post-messages, not without",
        f"{len(pr.get('source-lab-mean', []))} with, {len(quiet.get('source-lab-mean', []))} "
        f"+ {len(quiet.get('source-fitted', []))} fitted without")
out11, _ = cnrun.run(P, f"mode=reinhard fit=per-patch tensor-scale=rescale11 {tprops}", tmp=tmp)
stat_err = err = verr = err11 = 0.0
for i, p in enumerate(P):
    sm, ss = cnref.lab_stats(p)
    stat_err = max(stat_err, np.abs(np.array(pr["source-lab-mean"][i]) - sm).max(),
                   np.abs(np.array(pr["source-lab-std"][i]) - ss).max())
    ref = cnref.reinhard(p, sm, ss, tm, ts)
    err = max(err, np.abs(out[i] - ref / 255).max())
    err11 = max(err11, np.abs(out11[i] - (ref / 127.5 - 1)).max())
    verr = max(verr, np.abs(vid[i].astype(float) - ref).max())
c.check(stat_err < 1e-4, "reinhard source L*a*b* mean/std = skimage rgb2lab over tissue",
        f"max err {stat_err:.2e}")
c.check(err <= TENSOR_TOL, "reinhard tensor output = skimage reference",
        f"max err {err * 255:.4f} grey levels (tolerance 0.02)")
c.check(err11 <= 2 * TENSOR_TOL, "reinhard tensor-scale=rescale11", f"max err {err11:.2e}")
c.check(verr <= 0.5 + 0.02, "reinhard video output = rounded reference",
        f"max err {verr:.3f} grey levels")

# keep-background=false: plain Reinhard on every pixel
out, _ = cnrun.run(P[:2], f"mode=reinhard fit=per-patch keep-background=false {tprops}", tmp=tmp)
err = max(np.abs(out[i] - cnref.reinhard(p, *cnref.lab_stats(p), tm, ts,
                                         keep_background=False) / 255).max()
          for i, p in enumerate(P[:2]))
c.check(err <= TENSOR_TOL, "reinhard keep-background=false = plain reference",
        f"max err {err * 255:.4f} grey levels")

# --- Macenko, per patch -------------------------------------------------
he_t = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
he_t /= np.linalg.norm(he_t, axis=1, keepdims=True)
mc_t = np.array([1.9, 1.0])
mprops = f"target-stain-matrix={cnrun.arr_prop(he_t.ravel())} target-max-conc={cnrun.arr_prop(mc_t)}"
out, pr = cnrun.run(P, f"mode=macenko fit=per-patch post-messages=true {mprops}", tmp=tmp)
vid, _ = cnrun.run(P, f"mode=macenko fit=per-patch {mprops}", video=True, tmp=tmp)
stat_err = err = verr = 0.0
for i, p in enumerate(P):
    fit = cnref.macenko_fit(p)
    stat_err = max(stat_err, np.abs(np.array(pr["source-stain-matrix"][i]) - fit[0].ravel()).max(),
                   np.abs(np.array(pr["source-max-conc"][i]) - fit[1]).max())
    ref = cnref.macenko(p, fit, (he_t, mc_t))
    err = max(err, np.abs(out[i] - ref / 255).max())
    verr = max(verr, np.abs(vid[i].astype(float) - ref).max())
c.check(stat_err < 1e-4, "macenko source stain matrix / max conc = numpy reference",
        f"max err {stat_err:.2e}")
c.check(err <= TENSOR_TOL, "macenko tensor output = numpy reference",
        f"max err {err * 255:.4f} grey levels (tolerance 0.02)")
c.check(verr <= 0.5 + 0.02, "macenko video output = rounded reference",
        f"max err {verr:.3f} grey levels")

# --- fit once per slide (first-patches) -----------------------------------
# a background patch first: it must not count towards the estimate
bg = slide[:256, :256]
c.check(cnref.tissue_mask(bg).mean() < 0.1, "background patch has < 10% tissue")
seq = np.concatenate([bg[None], P])
out, pr = cnrun.run(seq, f"mode=reinhard fit=first-patches fit-patches=3 {tprops}", tmp=tmp)
first3 = np.concatenate([p.reshape(-1, 3) for p in P[:3]])[None]
sm, ss = cnref.lab_stats(first3)
c.check(len(pr.get("source-lab-mean", [])) == 1, "reinhard fit-once: one estimate for the slide",
        f"{len(pr.get('source-lab-mean', []))} estimates")
got = np.array(pr["source-lab-mean"][-1] + pr["source-lab-std"][-1])
c.check(np.abs(got - np.concatenate([sm, ss])).max() < 1e-4,
        "reinhard fit-once estimate = stats of the first 3 tissue patches",
        f"max err {np.abs(got - np.concatenate([sm, ss])).max():.2e}")
err = max(np.abs(out[i] - cnref.reinhard(q, sm, ss, tm, ts) / 255).max()
          for i, q in enumerate(seq))
c.check(err <= TENSOR_TOL, "reinhard fit-once: every patch (incl. held ones) uses it",
        f"max err {err * 255:.4f} grey levels")
white = np.all(bg >= 243, axis=-1)
c.check(white.sum() > 1000 and np.abs(out[0][white] * 255 - bg[white]).max() < 0.01,
        "reinhard keeps near-white background (all channels >= 243) unchanged",
        f"{white.sum()} pixels")

out, pr = cnrun.run(seq, f"mode=macenko fit=first-patches fit-patches=3 {mprops}", tmp=tmp)
fit = cnref.macenko_fit(first3)
got = np.array(pr["source-stain-matrix"][-1] + pr["source-max-conc"][-1])
want = np.concatenate([fit[0].ravel(), fit[1]])
c.check(len(pr.get("source-stain-matrix", [])) == 1 and np.abs(got - want).max() < 1e-4,
        "macenko fit-once estimate = numpy fit on the first 3 tissue patches",
        f"max err {np.abs(got - want).max():.2e}")
err = max(np.abs(out[i] - cnref.macenko(q, fit, (he_t, mc_t)) / 255).max()
          for i, q in enumerate(seq))
c.check(err <= TENSOR_TOL, "macenko fit-once: every patch uses it",
        f"max err {err * 255:.4f} grey levels")

# --- target from a PNG ----------------------------------------------------
target = slide[1024:1536, 600:1112]
tpath = os.path.join(tmp, "target.png")
skimage.io.imsave(tpath, target, check_contrast=False)
out, pr = cnrun.run(P[:2], f"mode=reinhard fit=per-patch post-messages=true target-location={tpath}", tmp=tmp)
tm2, ts2 = cnref.lab_stats(target)
got = np.array(pr["target-lab-mean"][-1] + pr["target-lab-std"][-1])
c.check(np.abs(got - np.concatenate([tm2, ts2])).max() < 1e-4,
        "target-location: fitted target L*a*b* stats readable, = skimage",
        f"max err {np.abs(got - np.concatenate([tm2, ts2])).max():.2e}")
err = max(np.abs(out[i] - cnref.reinhard(q, *cnref.lab_stats(q), tm2, ts2) / 255).max()
          for i, q in enumerate(P[:2]))
c.check(err <= TENSOR_TOL, "reinhard towards the PNG target", f"max err {err * 255:.4f}")
out, pr = cnrun.run(P[:2], f"mode=macenko fit=per-patch post-messages=true target-location={tpath}", tmp=tmp)
tfit = cnref.macenko_fit(target)
got = np.array(pr["target-stain-matrix"][-1] + pr["target-max-conc"][-1])
want = np.concatenate([tfit[0].ravel(), tfit[1]])
c.check(np.abs(got - want).max() < 1e-4, "target-location: fitted target stain matrix readable",
        f"max err {np.abs(got - want).max():.2e}")
err = max(np.abs(out[i] - cnref.macenko(q, cnref.macenko_fit(q), tfit) / 255).max()
          for i, q in enumerate(P[:2]))
c.check(err <= TENSOR_TOL, "macenko towards the PNG target", f"max err {err * 255:.4f}")

# --- built-in targets = the documented fit on the sample slide -------------
insp = subprocess.run(["gst-inspect-1.0", "colornorm"], env=wsitest.gst_env(),
                      capture_output=True, text=True).stdout


def default_of(prop):
    m = re.search(prop + r"\s*:.*?Default: \"(<[^\"]*>)\"", insp, re.S)
    return np.array(cnrun.parse_value(m.group(1)))


sm, ss = cnref.lab_stats(slide)
sfit = cnref.macenko_fit(slide)
d1 = np.abs(np.concatenate([default_of("target-lab-mean"), default_of("target-lab-std")])
            - np.concatenate([sm, ss])).max()
d2 = np.abs(np.concatenate([default_of("target-stain-matrix"), default_of("target-max-conc")])
            - np.concatenate([sfit[0].ravel(), sfit[1]])).max()
c.check(d1 < 1e-3 and d2 < 1e-3, "built-in targets = reference fit on the whole sample slide",
        f"max diff {max(d1, d2):.1e}")
c.finish()
