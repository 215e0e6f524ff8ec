"""segeval in pipelines: two PNG label datasets through slidesrc ! patchify !
labelpatch into the prediction and annotation pads; the JSON report and the
bus messages against the reference in segref.py computed on whole images.
Also pairing with different order and timing on the two pads, unmatched
patches, and the prediction passing through to stitchsink."""
import json
import os
import re

import numpy as np

import segref
import wsitest

checks = wsitest.Checks()
tmp = wsitest.tmpdir()
rng = np.random.default_rng(11)


def blobs(shape, n, classes, rng, dtype=np.uint8):
    img = np.zeros(shape, dtype)
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    for k in range(n):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        r = rng.integers(3, 10)
        value = k + 1 if dtype == np.uint16 else rng.integers(1, classes)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = value
    return img


def dataset(name, images):
    """Writes {name}/{key}.png for every (key, array); returns the glob."""
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    for key, arr in images.items():
        segref.write_png(os.path.join(d, key + ".png"), arr)
    return os.path.join(d, "*.png")


def branch(glob, pad, patch=32, overlap=8, src="", label="", extra=""):
    cut = f"patchify patch-size={patch} overlap={overlap} ! " if patch else ""
    return (f"slidesrc location={glob} tile-width=48 tile-height=40 {src} ! {cut}"
            f"labelpatch masks={{path}} {label} ! {extra} queue ! e.{pad} ")


def run(props, pred, gt, sink="fakesink", messages=False):
    out = os.path.join(tmp, "report.json")
    if os.path.exists(out):
        os.unlink(out)
    pipe = f"segeval name=e location={out} {props} ! {sink} " + pred + gt
    proc = wsitest.gst_launch(pipe, timeout=60, messages=messages)
    if proc.returncode != 0 or not os.path.exists(out):
        print(proc.stdout[-2000:], proc.stderr[-2000:])
        return None, proc
    with open(out) as f:
        return json.load(f), proc


def check_report(name, got, want):
    if got is None:
        checks.check(False, name, "pipeline failed")
        return
    diffs = segref.compare(got, want)
    checks.check(not diffs, name, "; ".join(diffs[:5]))


shapes = {"a": (70, 90), "b": (64, 64), "c": (50, 101)}
gts, preds = {}, {}
for key, shape in shapes.items():
    gt = blobs(shape, 10, 4, rng)
    gt[rng.random(shape) < 0.02] = 255          # ignore pixels
    pred = gt.copy()
    pred[gt == 255] = 0
    pred = np.roll(pred, 2, axis=1)             # shifted prediction
    pred[blobs(shape, 3, 2, rng) > 0] = 3       # spurious objects
    gts[key], preds[key] = gt, pred
gt_glob = dataset("gt", gts)
pred_glob = dataset("pred", preds)
pairs = [(os.path.join(tmp, "gt", k + ".png"), preds[k], gts[k]) for k in sorted(shapes)]

# 1. overlapping patches, instances, slide-match=name (different folders)
for cls in (1, 2):
    want = segref.report(pairs, ignore=255, instances=True, cls=cls, connectivity=8)
    got, _ = run(f"slide-match=name instances=true instance-class={cls}",
                 branch(pred_glob, "prediction"), branch(gt_glob, "annotation"))
    check_report(f"3 images, 32 px patches overlap 8, class {cls}: pixel and instance "
                 "metrics = reference on whole images", got, want)
if got:
    total = sum(g.size for g in gts.values())
    checks.check(got["pixel"]["pixels"] + got["pixel"]["ignored_pixels"] == total,
                 "centre crops count every image pixel exactly once",
                 f"{got['pixel']['pixels']} + {got['pixel']['ignored_pixels']} vs {total}")
    checks.check(got["unmatched_prediction"] == 0 and got["unmatched_annotation"] == 0,
                 "every patch paired")

# 2. connectivity 4, other patch geometry (odd overlap, no patchify)
want = segref.report(pairs, ignore=255, instances=True, cls=1, connectivity=4)
got, _ = run("slide-match=name instances=true connectivity=4",
             branch(pred_glob, "prediction", patch=24, overlap=5),
             branch(gt_glob, "annotation", patch=24, overlap=5))
check_report("patch 24 overlap 5, connectivity 4 = reference", got, want)
want = segref.report(pairs, ignore=255, instances=True)
got, _ = run("slide-match=name instances=true",
             branch(pred_glob, "prediction", patch=0), branch(gt_glob, "annotation", patch=0))
check_report("slidesrc tiles without patchify (edge padding) = reference", got, want)

# 3. bus messages: with post-messages=true every `interval` pairs, and a
#    final one at EOS; by default (issue #9 point 11) only the final one
got, proc = run("slide-match=name interval=5 post-messages=true", branch(pred_glob, "prediction"),
                branch(gt_glob, "annotation"), messages=True)
msgs = [line for line in proc.stdout.splitlines() if re.search(r"\bsegeval, final=", line)]
finals = [m for m in msgs if "final=(boolean)true" in m]
n_patches = got["patches"] if got else -1
checks.check(len(finals) == 1 and len(msgs) == n_patches // 5 + 1 and n_patches > 10,
             "post-messages=true: segeval messages every 5 pairs plus one final",
             f"{len(msgs)} messages, {n_patches} pairs")
_, proc2 = run("slide-match=name interval=5", branch(pred_glob, "prediction"),
               branch(gt_glob, "annotation"), messages=True)
msgs2 = [line for line in proc2.stdout.splitlines() if re.search(r"\bsegeval, final=", line)]
checks.check(len(msgs2) == 1 and "final=(boolean)true" in msgs2[0],
             "default post-messages=false: only the final message", f"{len(msgs2)} messages")
if finals:
    m = re.search(r"mean-dice=\(double\)([0-9.eE+-]+)", finals[0])
    checks.check(m and abs(float(m.group(1)) - got["pixel"]["mean_dice"]) < 1e-9,
                 "final message carries the report's mean Dice")
    checks.check("dice=(double)<" in finals[0] and "json=" in finals[0],
                 "message has per-class dice array and the JSON")

# 4. pairing by meta, not arrival: other image order (shuffle), other tile order
#    (serpentine) and a slow annotation branch
want = segref.report(pairs, ignore=255)
got, _ = run("slide-match=name max-pending=10000",
             branch(pred_glob, "prediction", src="shuffle=true seed=3"),
             branch(gt_glob, "annotation", extra="identity sleep-time=2000 !"))
check_report("images in another order on the prediction pad, slow annotation pad", got, want)
checks.check(got is not None and got["unmatched_prediction"] == 0
             and got["unmatched_annotation"] == 0, "reordered: every patch paired")
got, _ = run("slide-match=name", branch(pred_glob, "prediction", patch=0, src="order=serpentine"),
             branch(gt_glob, "annotation", patch=0))
check_report("serpentine tiles vs raster tiles", got, want)

# 5. unmatched patches: an annotation image without prediction is dropped
extra = dict(gts, d=blobs((40, 40), 5, 4, rng))
gt2_glob = dataset("gt2", extra)
got, _ = run("slide-match=name", branch(pred_glob, "prediction"),
             branch(gt2_glob, "annotation"))
want = segref.report([(p, pr, g) for (p, pr, g) in pairs], ignore=255)
check_report("extra annotation image: metrics over the paired images only", got, want)
checks.check(got is not None and got["unmatched_annotation"] == 4
             and got["unmatched_prediction"] == 0,
             "extra annotation image: its 4 patches (40x40, stride 24) counted unmatched",
             str(got and got["unmatched_annotation"]))
# the same with slide-match=path: nothing pairs (different folders)
got, proc = run("", branch(pred_glob, "prediction"), branch(gt_glob, "annotation"))
checks.check(got is not None and got["patches"] == 0 and got["unmatched_prediction"] > 0,
             "slide-match=path: different folders never pair (warning, report of 0 pairs)")

# 6. 16-bit instance annotation, 8-bit class prediction (components of class 1)
inst = {}
for key, shape in shapes.items():
    inst[key] = blobs(shape, 8, 0, rng, np.uint16)
inst_glob = dataset("inst", inst)
pred8 = {k: (np.roll(v, 1, axis=0) > 0).astype(np.uint8) for k, v in inst.items()}
pred8_glob = dataset("pred8", pred8)
ipairs = [(os.path.join(tmp, "inst", k + ".png"), pred8[k], inst[k]) for k in sorted(shapes)]
want = segref.report(ipairs, ignore=65535, instances=True)
got, _ = run("slide-match=name instances=true", branch(pred8_glob, "prediction"),
             branch(inst_glob, "annotation", label="instance-mode=instances"))
check_report("GRAY16 instance annotation vs GRAY8 prediction = reference", got, want)

# 7. the prediction passes through: stitched output equals the prediction image
one = dataset("one", {"a": preds["a"]})
out_png = os.path.join(tmp, "stitched.png")
got, _ = run("", branch(one, "prediction"), branch(one, "annotation"),
             sink=f"stitchsink location={out_png}")
ok = got is not None and os.path.exists(out_png)
checks.check(ok and np.array_equal(wsitest.read_png(out_png), preds["a"]),
             "prediction passed through to stitchsink unchanged")
checks.check(ok and got["pixel"]["accuracy"] == 1, "prediction vs itself: accuracy 1")

checks.finish()
