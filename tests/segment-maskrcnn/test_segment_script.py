"""pipelines/segment.sh with a Mask R-CNN model file: segment-maskrcnn !
stitchsink, an instance label PNG, the overlay and one GeoJSON detection per
object whose instance ids are the PNG's (generated image and model)."""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

import wsitest

c = wsitest.Checks()
tmp = wsitest.tmpdir()
ROOT = wsitest.SOURCE_ROOT
rng = np.random.default_rng(5)

# an H&E-like image with dark discs, no pixel size (the model has none either)
h, w = 320, 384
yy, xx = np.mgrid[0:h, 0:w]
img = rng.normal([235, 200, 225], 6, (h, w, 3))
for _ in range(60):
    cy, cx, r = rng.integers(6, h - 6), rng.integers(6, w - 6), rng.integers(4, 8)
    img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = (90, 40, 140)
slide = os.path.join(tmp, "discs.png")
Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(slide)

model = os.path.join(tmp, "mrcnn.safetensors")
r = subprocess.run([sys.executable, os.path.join(ROOT, "models", "reference", "export_model.py"),
                    model, "--arch", "maskrcnn", "--backbone", "resnet18",
                    "--classes", "background,nucleus", "--patch-size", "128",
                    "--max-detections", "50", "--rpn-post-nms-top-n", "200", "--init", "calibrated",
                    "--seed", "2", "--meta", "fpn_channels=32", "--meta", "representation=64",
                    "--meta", "mask_width=16"], capture_output=True, text=True)
if not c.check(r.returncode == 0, "export a Mask R-CNN model file", r.stderr[-300:]):
    c.finish()

out = os.path.join(tmp, "out")
env = dict(os.environ, MIN_AREA="0", BATCH="2")
p = subprocess.run([os.path.join(ROOT, "pipelines", "segment.sh"), slide, model, out],
                   capture_output=True, text=True, env=env, timeout=600)
c.check(p.returncode == 0, "segment.sh runs segment-maskrcnn", (p.stderr or p.stdout)[-400:])
inst_png = os.path.join(out, "mrcnn-instances.png")
geo = os.path.join(out, "mrcnn.geojson")
c.check(os.path.exists(os.path.join(out, "mrcnn-overlay.png")), "overlay written")
if c.check(os.path.exists(inst_png) and os.path.exists(geo), "instance PNG and GeoJSON written"):
    ids = wsitest.read_png(inst_png)
    c.check(ids.dtype == np.uint16 and ids.shape == (h, w), "16-bit instance map of the image size",
            f"{ids.dtype} {ids.shape}")
    feats = json.load(open(geo))["features"]
    got = {f["properties"]["measurements"]["Instance id"] for f in feats}
    want = set(np.unique(ids)) - {0}
    c.check(len(want) > 0 and got == want, "one detection per object, ids as in the PNG",
            f"{len(want)} objects in the PNG, {len(got)} ids in the GeoJSON")
    c.check(all(f["properties"]["objectType"] == "detection"
                and f["properties"]["classification"]["name"] == "nucleus" for f in feats),
            "detections of class nucleus")
    c.check(f"{len(feats)} objects" in p.stdout, "the object count is printed", p.stdout[-200:])
c.finish()
