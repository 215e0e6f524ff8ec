"""stitchsink with probability tensors: blend=crop/average/gaussian against
numpy references (float64), hand-computed values at known pixels, seams,
crop equal to the labels path, one-class maps, unknown height, and labels
refused with blend != crop.

Usage: test_blend.py <stitch_feed executable>"""
import os
import sys

import numpy as np

import stitchref as sr
import wsitest

EXE = sys.argv[1]
ck = wsitest.Checks()
tmp = wsitest.tmpdir()
rng = np.random.default_rng(7)


def run(name, patches, kind, W, H, P, O, classes=0, extra=(), **props):
    out = {"location": os.path.join(tmp, name + ".png")}
    out.update({k.replace("_", "-"): v for k, v in props.items()})
    rc, text = sr.feed(EXE, patches, kind, W, H, P, O, out, classes, extra)
    return rc, text


def png(name):
    return wsitest.read_png(os.path.join(tmp, name + ".png"))


def random_probs(rows, cols, P, C):
    """Independent per patch, so overlaps disagree everywhere."""
    x = rng.gamma(1.0, size=(rows, cols, P, P, C))
    return (x / x.sum(-1, keepdims=True)).astype(np.float32)


def compare(name, mode, patches, W, H, P, O, prob_class=1, sigma=0.0):
    """Labels exact (except near ties), probability PNG within 1 level."""
    sums, wsum = sr.blend(patches, W, H, P, O, mode, sigma)
    labels, prob, p = sr.resolve(sums, wsum, prob_class)
    got = png(name)
    gotp = png(name + "-p")
    ps = np.sort(p, axis=-1)
    tie = (ps[..., -1] - ps[..., -2] < 1e-5) if p.shape[-1] > 1 else \
        np.abs(p[..., 0] - 0.5) < 1e-5
    lab_ok = np.all((got == labels) | tie)
    ref = sr.to_byte(prob)
    diff = np.abs(gotp.astype(int) - ref)
    ck.check(got.shape == (H, W) and lab_ok, f"{name}: labels equal numpy",
             f"{int(np.sum((got != labels) & ~tie))} differ, {int(tie.sum())} ties")
    ck.check(diff.max() <= 1 and np.mean(diff == 0) > 0.99,
             f"{name}: probability PNG equals numpy",
             f"max diff {diff.max()}, exact {np.mean(diff == 0):.4f}")
    return got, gotp


# ---- hand-computed values: two patches side by side, constant values
# (exact binary fractions) ----
P, O, W, H = 16, 8, 16, 8     # stride 8: a 2 x 1 grid, patches at x = -4, 4
pa = np.array([0.75, 0.25], np.float32)
pb = np.array([0.375, 0.625], np.float32)
patches = np.zeros((1, 2, P, P, 2), np.float32)
patches[0, 0] = pa
patches[0, 1] = pb
for mode in ("average", "gaussian"):
    rc, text = run(f"hand-{mode}", patches, "prob", W, H, P, O, classes=2,
                   blend=mode, probability_location=os.path.join(tmp, f"hand-{mode}-p.png"))
    if not ck.check(rc == 0, f"hand {mode}: runs", text.strip()):
        continue
    lab, prob = png(f"hand-{mode}"), png(f"hand-{mode}-p")
    # x < 4: only patch a (0.25 -> 63.75 -> 64); x >= 12: only b (159.375)
    ck.check(np.all(prob[:, :4] == 64) and np.all(lab[:, :4] == 0),
             f"hand {mode}: pixels covered by one patch keep its value",
             f"{np.unique(prob[:, :4])}")
    ck.check(np.all(prob[:, 12:] == 159) and np.all(lab[:, 12:] == 1),
             f"hand {mode}: other patch alone", f"{np.unique(prob[:, 12:])}")
    # patch a covers x in [-4, 12), b covers [4, 20): overlap [4, 12)
    if mode == "average":
        # (0.25 + 0.625) / 2 = 0.4375 -> 111.56 -> 112; label 0 (0.5625)
        ck.check(np.all(prob[:, 4:12] == 112) and np.all(lab[:, 4:12] == 0),
                 "hand average: overlap is the mean 0.4375 (112)",
                 f"{np.unique(prob[:, 4:12])}")
    else:
        # sigma = 16 / 8 = 2; pixel x sits at column x + 4 of a (centre
        # offset x + 4.5 - 8) and column x - 4 of b (offset x - 4 + 0.5 - 8)
        exp_row = []
        for x in range(4, 12):
            wa = np.exp(-0.5 * ((x + 4.5 - 8) / 2) ** 2)
            wb = np.exp(-0.5 * ((x - 3.5 - 8) / 2) ** 2)
            v = (0.25 * wa + 0.625 * wb) / (wa + wb)
            exp_row.append(int(np.floor(v * 255 + 0.5)))
        ck.check(all(np.array_equal(prob[j, 4:12], exp_row) for j in range(H)),
                 "hand gaussian: overlap weighted by the gaussian",
                 f"{prob[0, 4:12].tolist()} vs {exp_row}")
        # the weights cross at x = 7.5: labels switch between 7 and 8
        ck.check(np.all(lab[:, 4:8] == 0) and np.all(lab[:, 8:12] == 1),
                 "hand gaussian: label follows the heavier patch")

# ---- random patches against numpy: C = 3, odd overlap, region not a
# multiple of the stride, downsample 2 and a region offset ----
W, H, P, O, C = 70, 53, 32, 11, 3
cols, rows = sr.grid(W, H, P, O)
patches = random_probs(rows, cols, P, C)
geo = ["--downsample", "2", "--region-x", "100", "--region-y", "40"]
for mode, sigma in (("average", 0.0), ("gaussian", 0.0), ("gaussian", 7.0),
                    ("crop", 0.0)):
    name = f"rand-{mode}-{sigma:g}"
    rc, text = run(name, patches, "prob", W, H, P, O, classes=C, extra=geo,
                   blend=mode, sigma=sigma, probability_class=2,
                   probability_location=os.path.join(tmp, name + "-p.png"))
    if ck.check(rc == 0, f"{name}: runs", text.strip()):
        compare(name, mode, patches, W, H, P, O, prob_class=2, sigma=sigma)

# ---- crop on probabilities equals the labels path (old behaviour) ----
for C in (2, 4, 1):
    W, H, P, O = 45, 38, 16, 6
    cols, rows = sr.grid(W, H, P, O)
    probs = random_probs(rows, cols, P, C) if C > 1 else \
        rng.random((rows, cols, P, P, 1)).astype(np.float32)
    labels = (np.argmax(probs, -1) if C > 1 else probs[..., 0] >= 0.5).astype(np.uint8)
    rc1, t1 = run(f"crop-prob-{C}", probs, "prob", W, H, P, O, classes=C)
    rc2, t2 = run(f"crop-labels-{C}", labels, "gray8", W, H, P, O)
    ok = rc1 == 0 and rc2 == 0
    ck.check(ok and np.array_equal(png(f"crop-prob-{C}"), png(f"crop-labels-{C}")),
             f"crop, {C} classes: probabilities stitch like their labels",
             (t1 + t2).strip())

# ---- one-class map with average: label p >= 0.5, probability and complement
W, H, P, O = 40, 30, 16, 8
cols, rows = sr.grid(W, H, P, O)
probs = rng.random((rows, cols, P, P, 1)).astype(np.float32)
for pc in (1, 0):
    name = f"sigmoid-{pc}"
    rc, text = run(name, probs, "prob", W, H, P, O, classes=1, blend="average",
                   probability_class=pc,
                   probability_location=os.path.join(tmp, name + "-p.png"))
    if ck.check(rc == 0, f"{name}: runs", text.strip()):
        compare(name, "average", probs, W, H, P, O, prob_class=pc)

# ---- seams: a smooth field, each patch wrong near its edges (alternating
# sign); crop shows steps at the crop lines, gaussian does not ----
W, H, P, O = 160, 96, 64, 32
cols, rows = sr.grid(W, H, P, O)
X = np.arange(W)
truth = np.tile(0.3 + 0.4 * X / W, (H, 1))
field = np.zeros((rows, cols, P, P, 2), np.float32)
yy, xx = np.mgrid[0:P, 0:P]
edge = np.maximum(np.abs(xx + 0.5 - P / 2), np.abs(yy + 0.5 - P / 2)) / (P / 2)
for r in range(rows):
    for c in range(cols):
        x0, y0 = sr.origin(c, r, P, O)
        t = np.tile(0.3 + 0.4 * (x0 + np.arange(P)) / W, (P, 1))
        p1 = np.clip(t + (0.25 if (r + c) % 2 else -0.25) * edge ** 2, 0, 1)
        field[r, c, ..., 1] = p1
        field[r, c, ..., 0] = 1 - p1
steps = {}
for mode, sigma in (("crop", 0), ("average", 0), ("gaussian", 0), ("gaussian", P / 4)):
    name = f"seam-{mode}-{sigma:g}"
    rc, text = run(name, field, "prob", W, H, P, O, classes=2, blend=mode, sigma=sigma,
                   probability_location=os.path.join(tmp, name + "-p.png"))
    if not ck.check(rc == 0, f"{name}: runs", text.strip()):
        continue
    got, gotp = compare(name, mode, field, W, H, P, O, sigma=sigma)
    g = gotp.astype(int)
    steps[name] = max(np.abs(np.diff(g, axis=0)).max(), np.abs(np.diff(g, axis=1)).max())
    err = np.abs(gotp / 255.0 - truth).max()
    print(f"{name}: largest step between neighbours {steps[name]} levels, "
          f"max error vs the true field {err:.3f}")
if len(steps) == 4:
    # the true field rises 0.4 * 255 / 160 = 0.64 levels per pixel
    ck.check(steps["seam-crop-0"] >= 20, "seams: crop shows steps",
             f"{steps['seam-crop-0']}")
    ck.check(steps["seam-gaussian-0"] <= 6, "seams: gaussian (sigma P/8) is smooth",
             f"{steps['seam-gaussian-0']} levels")
    ck.check(steps["seam-gaussian-0"] < min(steps["seam-average-0"], steps["seam-gaussian-16"]),
             "seams: sigma P/8 smoother than average and sigma P/4", str(steps))

# ---- unknown height (live): same result as the known height ----
W, H, P, O, C = 50, 41, 16, 4, 3
cols, rows = sr.grid(W, H, P, O)
patches = random_probs(rows, cols, P, C)
for name, extra in (("known", ()), ("unknown", ("--unknown-height",))):
    rc, text = run(f"live-{name}", patches, "prob", W, H, P, O, classes=C,
                   extra=extra, blend="gaussian",
                   probability_location=os.path.join(tmp, f"live-{name}-p.png"))
    ck.check(rc == 0, f"height {name}: runs", text.strip())
if rc == 0:
    ck.check(np.array_equal(png("live-known"), png("live-unknown"))
             and np.array_equal(png("live-known-p"), png("live-unknown-p")),
             "unknown height gives the same labels and probabilities")
    compare("live-unknown", "gaussian", patches, W, H, P, O)

# ---- labels with blend != crop are refused with a clear message ----
labels = np.zeros((rows, cols, P, P), np.uint8)
rc, text = run("labels-gauss", labels, "gray8", W, H, P, O, blend="gaussian")
ck.check(rc != 0 and "blend=gaussian needs probability tensors" in text,
         "labels with blend=gaussian: clear error", text.strip())
ck.check(not os.path.exists(os.path.join(tmp, "labels-gauss.png")),
         "labels with blend=gaussian: no output")

ck.finish()
