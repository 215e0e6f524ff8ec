"""wsiseg-eval on generated label PNGs: hand-computable cases and random maps
against the reference in segref.py."""
import os
import sys

import numpy as np

import segref
import wsitest

checks = wsitest.Checks()
tmp = wsitest.tmpdir()


def save(name, arr):
    path = os.path.join(tmp, name)
    segref.write_png(path, arr)
    return path


def square(img, x, y, size, value, h=None):
    img[y:y + (h or size), x:x + size] = value


def check_report(name, got, want):
    diffs = segref.compare(got, want)
    checks.check(not diffs, name, "; ".join(diffs[:5]))


# 1. perfect prediction: every metric 1
gt = np.zeros((64, 80), np.uint8)
square(gt, 5, 5, 20, 1)
square(gt, 40, 30, 15, 1)
square(gt, 60, 2, 10, 2)
g = save("perfect_gt.png", gt)
rep = segref.run_tool_json(g, g, "--instances")
px, inst = rep["pixel"], rep["instance"]
checks.check(px["num_classes"] == 3 and px["mean_dice"] == 1 and px["mean_iou"] == 1
             and px["accuracy"] == 1, "perfect: pixel metrics 1", str(px["classes"]))
agg = inst["aggregate"]
checks.check(all(agg[k] == 1 for k in ("f1", "pq", "sq", "dq", "aji"))
             and inst["images"][0]["object_dice"] == 1 and agg["tp"] == 2,
             "perfect: F1 = PQ = AJI = object Dice = 1", str(agg))

# 2. shifted squares with hand-computed answers
gt = np.zeros((60, 100), np.uint8)
pred = np.zeros_like(gt)
square(gt, 10, 10, 20, 1)       # A: 400 px
square(pred, 15, 10, 20, 1)     # shifted by 5: inter 300, union 500, IoU 0.6
square(gt, 60, 10, 20, 1)       # B
square(pred, 70, 10, 20, 1)     # shifted by 10: inter 200, union 600, IoU 1/3
rep = segref.run_tool_json(save("shift_pred.png", pred), save("shift_gt.png", gt),
                           "--instances")
im = rep["instance"]["images"][0]
ok = (im["tp"] == 1 and im["fp"] == 1 and im["fn"] == 1
      and abs(im["sq"] - 0.6) < 1e-9 and abs(im["dq"] - 0.5) < 1e-9
      and abs(im["pq"] - 0.3) < 1e-9 and abs(im["f1"] - 0.5) < 1e-9
      and im["aji_intersection"] == 500 and im["aji_union"] == 1100
      and abs(im["object_dice"] - 0.625) < 1e-9)
checks.check(ok, "shifted squares: TP 1, SQ 0.6, PQ 0.3, F1 0.5, AJI 500/1100, object Dice 0.625",
             str(im))
fg = rep["pixel"]["classes"][1]
checks.check(fg["tp"] == 500 and fg["fp"] == 300 and fg["fn"] == 300
             and abs(fg["dice"] - 1000 / 1600) < 1e-12 and abs(fg["iou"] - 500 / 1100) < 1e-12,
             "shifted squares: pixel Dice 1000/1600, IoU 500/1100", str(fg))

# 3. merged objects: two 10x10 GT squares, one 10x21 prediction over both
gt = np.zeros((30, 40), np.uint8)
pred = np.zeros_like(gt)
square(gt, 5, 5, 10, 1)
square(gt, 16, 5, 10, 1)
square(pred, 5, 5, 21, 1, h=10)
rep = segref.run_tool_json(save("merge_pred.png", pred), save("merge_gt.png", gt),
                           "--instances")
im = rep["instance"]["images"][0]
checks.check(im["tp"] == 0 and im["fn"] == 2 and im["fp"] == 1 and im["pq"] == 0
             and im["aji_intersection"] == 200 and im["aji_union"] == 420
             and abs(im["aji"] - 200 / 420) < 1e-12,
             "merged objects: no match, AJI 200/420 (the merged object counted twice)", str(im))
checks.check(abs(rep["pixel"]["classes"][1]["dice"] - 400 / 410) < 1e-12,
             "merged objects: pixel Dice stays high (400/410)")

# 4. connectivity: diagonal touching squares are one object with 8, two with 4
gt = np.zeros((20, 20), np.uint8)
square(gt, 2, 2, 5, 1)
square(gt, 7, 7, 5, 1)
p = save("diag.png", gt)
r8 = segref.run_tool_json(p, p, "--instances")["instance"]["images"][0]
r4 = segref.run_tool_json(p, p, "--instances", "--connectivity", "4")["instance"]["images"][0]
checks.check(r8["gt_objects"] == 1 and r4["gt_objects"] == 2,
             "connectivity 8 joins diagonal neighbours, 4 does not",
             f"{r8['gt_objects']} / {r4['gt_objects']}")

# 5. random multi-class maps with ignore pixels vs the reference
rng = np.random.default_rng(7)


def blobs(shape, n, classes, rng):
    img = np.zeros(shape, np.uint8)
    for _ in range(n):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        r = rng.integers(3, 12)
        yy, xx = np.ogrid[:shape[0], :shape[1]]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.integers(1, classes)
    return img


for trial in range(4):
    shape = (int(rng.integers(40, 120)), int(rng.integers(40, 120)))
    gt = blobs(shape, 12, 4, rng)
    pred = blobs(shape, 12, 4, rng)
    pred[rng.random(shape) < 0.02] = 0      # noise
    gt[rng.random(shape) < 0.03] = 255      # ignore
    gt[:3, :] = 255
    pp, gp = save(f"r{trial}_pred.png", pred), save(f"r{trial}_gt.png", gt)
    for conn in (4, 8):
        for cls in (1, 2):
            args = [pp, gp, "--instances", "--class", cls, "--connectivity", conn]
            want = segref.report([(gp, pred, gt)], ignore=255, instances=True,
                                 cls=cls, connectivity=conn)
            check_report(f"random maps {trial}, class {cls}, connectivity {conn} vs reference",
                         segref.run_tool_json(*args), want)
    want = segref.report([(gp, pred, gt)], ignore=None, num_classes=6)
    check_report(f"random maps {trial}, --ignore none --num-classes 6",
                 segref.run_tool_json(pp, gp, "--ignore", "none", "--num-classes", 6), want)

# 6. 16-bit instance maps with sparse ids (touching objects stay apart)
gt16 = np.zeros((50, 60), np.uint16)
pr16 = np.zeros_like(gt16)
gt16[5:20, 5:20] = 7
gt16[5:20, 20:35] = 300         # touches 7
gt16[30:45, 10:25] = 40000
pr16[5:20, 5:28] = 2            # swallows part of 300
pr16[6:20, 28:35] = 9
pr16[30:44, 12:25] = 65000
pr16[40:48, 40:55] = 5          # false positive
gt16[0, :] = 65535              # ignore row
gp, pp = save("inst_gt.png", gt16), save("inst_pred.png", pr16)
want = segref.report([(gp, pr16, gt16)], ignore=65535, instances=True)
got = segref.run_tool_json(pp, gp, "--instances")
check_report("16-bit instance maps vs reference", got, want)
checks.check(got["instance"]["source"] == "instance-map" and got["pixel"]["num_classes"] == 2,
             "16-bit maps: instance-map source, foreground/background pixel classes")

small = np.zeros((30, 30), np.uint16)
small[2:10, 2:10] = 1
small[10:18, 2:10] = 2          # touches object 1
sp = save("small16.png", small)
checks.check(np.array_equal(wsitest.read_png(sp), small) and wsitest.read_png(sp).dtype == np.uint16,
             "test PNG writer: 16-bit file with small ids reads back identical (skimage)")
im = segref.run_tool_json(sp, sp, "--instances")["instance"]["images"][0]
checks.check(im["gt_objects"] == 2 and im["tp"] == 2 and im["aji"] == 1,
             "16-bit map with small ids: two touching objects stay two", str(im))

# 7. JSON to a file (atomic write), identical to stdout
out = os.path.join(tmp, "report.json")
proc = segref.run_tool(pp, gp, "--instances", "-o", out)
checks.check(proc.returncode == 0 and os.path.exists(out) and not os.path.exists(out + ".tmp")
             and open(out).read() == segref.run_tool(pp, gp, "--instances").stdout,
             "--output writes the same JSON")

# 8. bad input: an error message and a non-zero exit, no crash
rgb = np.zeros((10, 10, 3), np.uint8)
bad_cases = {
    "missing file": [os.path.join(tmp, "nope.png"), gp],
    "not a PNG": [__file__, gp],
    "colour PNG": [save("rgb.png", rgb), gp],
    "size mismatch": [save("small.png", np.zeros((10, 10), np.uint8)), gp],
    "bad connectivity": [pp, gp, "--connectivity", "6"],
    "bad ignore": [pp, gp, "--ignore", "x"],
    "one argument": [pp],
}
trunc = os.path.join(tmp, "trunc.png")
with open(gp, "rb") as f:
    data = f.read()
with open(trunc, "wb") as f:
    f.write(data[:len(data) // 2])
bad_cases["truncated PNG"] = [trunc, gp]
for name, args in bad_cases.items():
    proc = segref.run_tool(*args)
    checks.check(proc.returncode in (1, 2) and proc.stderr.strip() and wsitest.asan_clean(proc),
                 f"bad input: {name}", proc.stderr.strip()[:120])

checks.finish()
