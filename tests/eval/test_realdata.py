"""Real data (skips without ../shared/data): GlaS gland masks against eroded
copies of themselves, and MoNuSeg nuclei instance maps against shifted
copies, through wsiseg-eval and through segeval in a pipeline, against the
reference in segref.py; the numbers must be sensible."""
import json
import os

import numpy as np
import skimage.io
import skimage.morphology

import segref
import wsitest

masks = wsitest.shared_path("glands", "glas-train", "masks")
checks = wsitest.Checks()
tmp = wsitest.tmpdir()
names = sorted(os.listdir(masks), key=lambda n: int("".join(c for c in n if c.isdigit()) or 0))[:4]
os.makedirs(os.path.join(tmp, "pred"))
os.makedirs(os.path.join(tmp, "gt"))
pairs = []
for n in names:
    gt = (skimage.io.imread(os.path.join(masks, n)) > 0).astype(np.uint8)
    pred = skimage.morphology.binary_erosion(gt, skimage.morphology.disk(4)).astype(np.uint8)
    segref.write_png(os.path.join(tmp, "gt", n), gt)
    segref.write_png(os.path.join(tmp, "pred", n), pred)
    pairs.append((os.path.join(tmp, "gt", n), pred, gt))

# the tool on the first image
p, g = os.path.join(tmp, "pred", names[0]), os.path.join(tmp, "gt", names[0])
got = segref.run_tool_json(p, g, "--instances")
diffs = segref.compare(got, segref.report(pairs[:1], instances=True))
checks.check(not diffs, f"wsiseg-eval on {names[0]} = reference", "; ".join(diffs[:5]))

# the element on all, 256 px patches with 32 px overlap
out = os.path.join(tmp, "report.json")


def branch(folder, pad):
    return (f"slidesrc location={tmp}/{folder}/*.png tile-width=512 tile-height=512 ! "
            f"patchify patch-size=256 overlap=32 ! labelpatch masks={{path}} ! queue ! e.{pad} ")


proc = wsitest.gst_launch(f"segeval name=e slide-match=name instances=true location={out} ! "
                          "fakesink " + branch("pred", "prediction") + branch("gt", "annotation"),
                          timeout=120)
checks.check(proc.returncode == 0 and os.path.exists(out), "pipeline runs", proc.stderr[-300:])
rep = json.load(open(out)) if os.path.exists(out) else {}
want = segref.report(pairs, instances=True)
diffs = segref.compare(rep, want)
checks.check(not diffs, f"segeval on {len(names)} GlaS masks = reference", "; ".join(diffs[:5]))
if rep:
    fg = rep["pixel"]["classes"][1]
    agg = rep["instance"]["aggregate"]
    print(f"gland Dice {fg['dice']:.4f} IoU {fg['iou']:.4f}; objects F1 {agg['f1']:.4f} "
          f"PQ {agg['pq']:.4f} AJI {agg['aji']:.4f}; mean object Dice "
          f"{rep['instance']['mean_over_images']['object_dice']:.4f}")
    checks.check(fg["fp"] == 0 and 0.8 < fg["dice"] < 1, "erosion: no false positive pixels, "
                 "Dice high but below 1")
    checks.check(0.5 < agg["aji"] < 1 and 0.5 < agg["pq"] < 1 and agg["f1"] > 0.7,
                 "erosion: AJI and PQ below 1, most glands still matched")
# MoNuSeg 16-bit instance maps vs themselves shifted by 2 pixels
inst_dir = os.path.join(wsitest.SHARED_DATA, "nuclei", "monuseg-train", "instances")
if os.path.isdir(inst_dir):
    names = sorted(os.listdir(inst_dir))[:2]
    os.makedirs(os.path.join(tmp, "mpred"))
    os.makedirs(os.path.join(tmp, "mgt"))
    mpairs = []
    for n in names:
        gt = skimage.io.imread(os.path.join(inst_dir, n)).astype(np.uint16)
        pred = np.roll(gt, 2, axis=1)
        segref.write_png(os.path.join(tmp, "mgt", n), gt)
        segref.write_png(os.path.join(tmp, "mpred", n), pred)
        mpairs.append((os.path.join(tmp, "mgt", n), pred, gt))
    want = segref.report(mpairs, ignore=65535, instances=True)
    got = segref.run_tool_json(os.path.join(tmp, "mpred", names[0]), mpairs[0][0], "--instances")
    diffs = segref.compare(got, segref.report(mpairs[:1], ignore=65535, instances=True))
    checks.check(not diffs, f"wsiseg-eval on MoNuSeg {names[0]} = reference", "; ".join(diffs[:5]))
    out = os.path.join(tmp, "mon.json")
    lp = "labelpatch masks={path} instance-mode=instances"
    proc = wsitest.gst_launch(
        f"segeval name=e slide-match=name instances=true location={out} ! fakesink "
        f"slidesrc location={tmp}/mpred/*.png ! patchify patch-size=256 overlap=32 ! {lp} ! "
        f"queue ! e.prediction slidesrc location={tmp}/mgt/*.png ! patchify patch-size=256 "
        f"overlap=32 ! {lp} ! queue ! e.annotation", timeout=120)
    rep = json.load(open(out)) if proc.returncode == 0 and os.path.exists(out) else {}
    diffs = segref.compare(rep, want)
    checks.check(not diffs, f"segeval on {len(names)} MoNuSeg instance maps = reference",
                 "; ".join(diffs[:5]) or proc.stderr[-300:])
    if rep:
        agg = rep["instance"]["aggregate"]
        print(f"MoNuSeg shifted 2 px: nuclei F1 {agg['f1']:.4f} PQ {agg['pq']:.4f} "
              f"AJI {agg['aji']:.4f}")
        checks.check(0.9 < agg["f1"] < 1 and 0.5 < agg["aji"] < 0.95,
                     "2 px shift: nearly all nuclei matched, AJI well below 1")
else:
    print("MoNuSeg instances absent: that part skipped")
checks.finish()
