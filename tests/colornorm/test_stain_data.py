#!/usr/bin/env python3
"""colornorm on the stain-normalisation references in ../shared/data/stain
(TIAToolbox source/target pair, HistoQC templates, an IHC image): agreement
with the numpy / scikit-image references and L*a*b* distance to the target
before/after. Skips when the shared data folder is absent."""
import numpy as np
import skimage.io

import cnref
import cnrun
import wsitest

TOL = 0.02 / 255
c = wsitest.Checks()
tmp = wsitest.tmpdir()
src_path = wsitest.shared_path("stain", "source_image.png")
tgt_path = wsitest.shared_path("stain", "target_image.png")
src = skimage.io.imread(src_path)[..., :3]
tgt = skimage.io.imread(tgt_path)[..., :3]

tm, ts = cnref.lab_stats(tgt)
tfit = cnref.macenko_fit(tgt)
before = cnref.lab_distance(src, tgt)
for mode in ("reinhard", "macenko"):
    out, pr = cnrun.run(src[None], f"mode={mode} fit=per-patch target-location={tgt_path}",
                        tmp=tmp)
    if mode == "reinhard":
        ref = cnref.reinhard(src, *cnref.lab_stats(src), tm, ts)
        tgot = np.array(pr["target-lab-mean"][-1] + pr["target-lab-std"][-1])
        twant = np.concatenate([tm, ts])
    else:
        ref = cnref.macenko(src, cnref.macenko_fit(src), tfit)
        tgot = np.array(pr["target-stain-matrix"][-1] + pr["target-max-conc"][-1])
        twant = np.concatenate([tfit[0].ravel(), tfit[1]])
    err = np.abs(out[0] - ref / 255).max()
    c.check(np.abs(tgot - twant).max() < 1e-4, f"{mode}: target fitted from target_image.png = reference",
            f"max err {np.abs(tgot - twant).max():.1e}")
    c.check(err <= TOL, f"{mode}: source_image.png output = reference", f"max err {err * 255:.4f} grey levels")
    after = cnref.lab_distance(np.rint(out[0] * 255).astype(np.uint8), tgt)
    print(f"{mode}: L*a*b* distance source->target {before:.2f} before, {after:.2f} after")
    c.check(after < before, f"{mode}: closer to the target", f"{before:.2f} -> {after:.2f}")

# HistoQC templates as targets: fitted values readable and equal to the references
for k in range(1, 5):
    path = wsitest.shared_path("stain", f"template{k}.png")
    img = skimage.io.imread(path)[..., :3]
    _, pr = cnrun.run(src[None], f"mode=reinhard fit=per-patch target-location={path}", tmp=tmp)
    m, s = cnref.lab_stats(img)
    got = np.array(pr["target-lab-mean"][-1] + pr["target-lab-std"][-1])
    c.check(np.abs(got - np.concatenate([m, s])).max() < 1e-4, f"template{k}.png target stats")

# IHC (not H&E): the element must still produce finite output
ihc = skimage.io.imread(wsitest.shared_path("stain", "ihc.png"))[..., :3]
for mode in ("reinhard", "macenko"):
    out, _ = cnrun.run(ihc[None], f"mode={mode} fit=per-patch", tmp=tmp)
    c.check(np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1, f"{mode} on IHC: finite, in [0,1]")
c.finish()
