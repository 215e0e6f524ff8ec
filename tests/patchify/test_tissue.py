"""Tissue detection of patchify on the sample slide against an independent
numpy implementation of the documented rule on OpenSlide-read pixels: the
tissue fraction per patch, which patches min-tissue drops (and the pixels of
those it keeps), and the tissuemask labels. Run twice: frames on a grid
(no tile meta, rawvideoparse) and slidesrc tiles with tile meta."""
import os
import re

import numpy as np

import wsitest
from slides import openslide_region

P, O = 256, 32
S = P - O
MIN_TISSUE = 0.5
c = wsitest.Checks()
tmp = wsitest.tmpdir()

if not os.path.exists(wsitest.SAMPLE_SLIDE):
    wsitest.skip(f"sample slide {wsitest.SAMPLE_SLIDE} missing")
ref, _ = openslide_region(wsitest.SAMPLE_SLIDE, 0)
H, W = ref.shape[:2]
cols, rows = -(-W // S), -(-H // S)


def tissue_rule(rgb):
    """OD = -log10((I+1)/256) per channel; tissue when the largest OD is above
    0.15 and the smallest OD is at most 1.0 (not near-black)."""
    od = -np.log10((rgb.astype(np.float64) + 1.0) / 256.0)
    return (od.max(axis=-1) > 0.15) & (od.min(axis=-1) <= 1.0)


# reference patches: constant white padding around the region
pad = np.full((rows * S + P, cols * S + P, 3), 255, np.uint8)
pad[O // 2:O // 2 + H, O // 2:O // 2 + W] = ref
tissue = tissue_rule(ref)
ref_patch, ref_frac, ref_mask = {}, {}, {}
for r in range(rows):
    for q in range(cols):
        ref_patch[q, r] = pad[r * S:r * S + P, q * S:q * S + P]
        x0, y0 = max(q * S - O // 2, 0), max(r * S - O // 2, 0)
        x1, y1 = min(q * S - O // 2 + P, W), min(r * S - O // 2 + P, H)
        ref_frac[q, r] = tissue[y0:y1, x0:x1].mean()
        m = np.zeros((P, P), np.uint8)
        m[y0 - (r * S - O // 2):y1 - (r * S - O // 2),
          x0 - (q * S - O // 2):x1 - (q * S - O // 2)] = tissue[y0:y1, x0:x1]
        ref_mask[q, r] = m
order = [(q, r) for r in range(rows) for q in range(cols)]
kept = [k for k in order if ref_frac[k] >= MIN_TISSUE]
margin = min(abs(f - MIN_TISSUE) for f in ref_frac.values())
c.check(0 < len(kept) < len(order), "sample slide has tissue and background patches",
        f"{len(kept)} of {len(order)} at or above {MIN_TISSUE}")
c.check(margin > 1e-4, "no reference fraction sits on the threshold", f"margin {margin:.2e}")

MSG = re.compile(r"patchify-patch, col=\(int\)(\d+), row=\(int\)(\d+), x=\(gint64\)(-?\d+), "
                 r"y=\(gint64\)(-?\d+), tissue-fraction=\(double\)([0-9.eE+-]+), "
                 r"kept=\(boolean\)(true|false)")

# frames on a 5x3 grid (444 x 989, row stride a multiple of 4)
FW, FH = W // 5, -(-H // 3)
frames = np.full((3 * FH, 5 * FW, 3), 255, np.uint8)
frames[:H, :5 * FW] = ref[:, :5 * FW]
assert 5 * FW == W
raw = os.path.join(tmp, "frames.raw")
frames.reshape(3, FH, 5, FW, 3).transpose(0, 2, 1, 3, 4).tofile(raw)
assert 3 * FH == H  # the sample slide splits evenly; the grid covers it exactly
grid_src = (f"filesrc location={raw} ! rawvideoparse width={FW} height={FH} format=rgb "
            f"framerate=1/1 ! patchify grid-columns=5 grid-rows=3")
slide_src = (f"slidesrc location={wsitest.SAMPLE_SLIDE} level=0 tile-width=700 "
             f"tile-height=500 ! patchify")


def run(name, src):
    out = os.path.join(tmp, f"{name}.raw")
    mask = os.path.join(tmp, f"{name}-mask.raw")
    p = wsitest.gst_launch(
        f"{src} patch-size={P} overlap={O} post-messages=true min-tissue={MIN_TISSUE} "
        f"! tee name=t t. ! queue ! filesink location={out} "
        f"t. ! queue ! tissuemask ! filesink location={mask}", messages=True, timeout=120)
    if not c.check(p.returncode == 0, f"{name}: pipeline runs", p.stderr.strip()[-500:]):
        return
    msgs = {(int(m[0]), int(m[1])): (float(m[4]), m[5] == "true")
            for m in MSG.findall(p.stdout)}
    c.check(len(msgs) == cols * rows, f"{name}: one message per patch",
            f"{len(msgs)} vs {cols * rows}")
    diffs = [abs(msgs[k][0] - ref_frac[k]) for k in order if k in msgs]
    c.check(len(diffs) == len(order) and max(diffs) < 1e-6,
            f"{name}: tissue fraction matches numpy per patch",
            f"max diff {max(diffs) if diffs else 'n/a'} over {len(diffs)} patches")
    c.check(all(msgs[k][1] == (ref_frac[k] >= MIN_TISSUE) for k in order if k in msgs),
            f"{name}: messages say kept exactly where numpy does")
    got = np.fromfile(out, np.uint8)
    want = np.concatenate([ref_patch[k].ravel() for k in kept])
    c.check(got.size == want.size, f"{name}: min-tissue keeps exactly numpy's patches",
            f"{got.size // (P * P * 3)} patches vs {len(kept)}")
    if got.size == want.size:
        bad = np.count_nonzero(got != want)
        c.check(bad == 0, f"{name}: kept patches are the slide's pixels, raster order",
                f"{bad} bytes differ")
    gm = np.fromfile(mask, np.uint8)
    wm = np.concatenate([ref_mask[k].ravel() for k in kept])
    c.check(gm.size == wm.size and np.array_equal(gm, wm), f"{name}: tissuemask labels",
            f"{np.count_nonzero(gm != wm) if gm.size == wm.size else 'size'} differ")


run("grid", grid_src)
run("slidesrc", slide_src)
c.finish()
