"""End to end on the sample slide with random U-Nets: slidesrc ! patchify !
segment-fcn output=probabilities ! stitchsink blend=gaussian with a mask,
an overlay, a probability map and a GeoJSON export. Checks the outputs are
there and consistent: the GeoJSON rasterised back equals the mask per class
(components below geojson-min-area removed, 8-connectivity), the
probability map agrees with the labels (one model class fg: label 1 iff
p >= 0.5), class names come from segment-fcn, and blend=crop gives the
labels segment-fcn output=labels stitches."""
import os
import subprocess

import numpy as np
import skimage.measure

import stitchref as sr
import wsitest

slide = wsitest.SAMPLE_SLIDE
if not os.path.exists(slide):
    wsitest.skip(f"sample slide {slide} missing")
ck = wsitest.Checks()
tmp = wsitest.tmpdir()
N = 1024
MIN_AREA = 4


def export(seed):
    model = os.path.join(tmp, f"unet-{seed}.safetensors")
    p = subprocess.run(["/usr/bin/python3",
                        os.path.join(wsitest.SOURCE_ROOT, "models", "reference",
                                     "export_model.py"),
                        model, "--arch", "unet", "--depth", "2", "--base-width", "8",
                        "--classes", "bg,fg", "--seed", str(seed), "--randomize-bn"],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        print(p.stdout, p.stderr)
        wsitest.skip("could not export the random model (PyTorch?)")
    return model


def run_case(seed, mixed):
    """Gaussian pipeline with every output; checks they agree."""
    model = export(seed)
    out = {k: os.path.join(tmp, f"{seed}-{v}") for k, v in
           (("mask", "mask.png"), ("ov", "ov.png"), ("gj", "g.json"), ("prob", "p.png"),
            ("crop", "crop.png"), ("labels", "labels.png"))}
    # threads=1: OpenMP threads crawl when the test machine is oversubscribed
    head = (f"slidesrc location={slide} region=0,0,{N},{N} ! patchify patch-size=128 "
            f"overlap=32 ! segment-fcn model={model} threads=1")
    proc = wsitest.gst_launch(
        f"{head} output=probabilities ! stitchsink blend=gaussian location={out['mask']} "
        f"overlay-location={out['ov']} geojson-location={out['gj']} "
        f"probability-location={out['prob']} geojson-min-area={MIN_AREA}", timeout=240)
    ok = ck.check(proc.returncode == 0, f"seed {seed}: gaussian pipeline runs",
                  proc.stderr.strip()[-500:])
    for k in ("mask", "ov", "gj", "prob"):
        ok &= ck.check(os.path.exists(out[k]), f"seed {seed}: {k} written")
    if not ok:
        return

    mask = wsitest.read_png(out["mask"])
    prob = wsitest.read_png(out["prob"])
    ck.check(mask.shape == (N, N) and set(np.unique(mask)) <= {0, 1},
             f"seed {seed}: mask is 1024 x 1024 labels 0/1", str(np.unique(mask)))
    print(f"seed {seed}: fg fraction {mask.mean():.4f}, p(fg) {prob.min()}..{prob.max()}")
    if mixed:
        ck.check(0 < mask.mean() < 1, f"seed {seed}: both classes present")
    # two classes: label fg iff p(fg) > p(bg), i.e. p(fg) > 0.5 (byte >= 128
    # up to rounding at exactly 127.5)
    agree = np.mean((prob >= 128) == (mask == 1))
    ck.check(agree > 0.999, f"seed {seed}: probability map agrees with the labels",
             f"{agree:.5f}")

    gj = sr.load_geojson(out["gj"])
    feats = gj["features"]
    ck.check(all(f["properties"]["classification"]["name"] == "fg" for f in feats),
             f"seed {seed}: features named 'fg' (class names from segment-fcn)",
             f"{len(feats)} features")
    raster = np.zeros((N, N), bool)
    overlap = False
    for f in feats:
        m = sr.feature_mask(f, N, N)
        overlap |= bool(np.any(raster & m))
        raster |= m
    lab = skimage.measure.label(mask == 1, connectivity=2)
    sizes = np.bincount(lab.ravel())
    keep = sizes >= MIN_AREA
    keep[0] = False
    expected = keep[lab]
    ck.check(len(feats) == int(keep.sum()),
             f"seed {seed}: one feature per component >= min area",
             f"{len(feats)} vs {int(keep.sum())}")
    ck.check(not overlap and np.array_equal(raster, expected),
             f"seed {seed}: GeoJSON rasterised equals the mask",
             f"{int(np.sum(raster != expected))} pixels differ")
    ov = wsitest.read_png(out["ov"])
    ck.check(ov.ndim == 3 and ov.shape[:2] == (N, N), f"seed {seed}: overlay picture",
             str(ov.shape))
    if not mixed:
        return

    # crop on probabilities == segment-fcn labels stitched with crop (on a
    # quarter of the region, to keep the test short)
    head = head.replace(f"region=0,0,{N},{N}", f"region=0,0,{N // 2},{N // 2}")
    proc = wsitest.gst_launch(f"{head} output=probabilities ! stitchsink blend=crop "
                              f"location={out['crop']}", timeout=240)
    proc2 = wsitest.gst_launch(f"{head} output=labels ! stitchsink location={out['labels']}",
                               timeout=240)
    if ck.check(proc.returncode == 0 and proc2.returncode == 0,
                f"seed {seed}: crop and labels pipelines run",
                (proc.stderr + proc2.stderr).strip()[-500:]):
        a, b = wsitest.read_png(out["crop"]), wsitest.read_png(out["labels"])
        ck.check(np.array_equal(a, b),
                 f"seed {seed}: blend=crop on probabilities equals the labels path")


# the model (seed 1: all foreground on this slide), then a seed
# whose map mixes both classes in many small regions
run_case(1, mixed=False)
run_case(5, mixed=True)
ck.finish()
