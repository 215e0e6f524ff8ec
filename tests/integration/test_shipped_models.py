"""The shipped models (models/weights/*.safetensors): each loads, has a model card
that names its licence, data and metrics, points at that card, and segments
the bundled sample slide at its own resolution the way pipelines/demo.sh
does; the nuclei it finds are plausible (not an empty or a full mask) and
the GeoJSON holds one polygon per nucleus (rasterised back, it covers the
mask's nucleus pixels)."""
import json
import os
import subprocess
import sys

import numpy as np

import wsitest

c = wsitest.Checks()
tmp = wsitest.tmpdir()
models = os.path.join(wsitest.SOURCE_ROOT, "models", "weights")
info_tool = sys.argv[1]
slide = os.path.join(wsitest.SOURCE_ROOT, "data", "cmu-1-small-region.svs")
shipped = sorted(f[:-12] for f in os.listdir(models) if f.endswith(".safetensors"))
if not shipped:
    wsitest.skip("no shipped model in models/weights/")


def info(path):
    p = subprocess.run([info_tool, path], capture_output=True, text=True)
    return dict(line.split("=", 1) for line in p.stdout.splitlines()) if p.returncode == 0 else None


sys.path.insert(0, os.path.join(wsitest.SOURCE_ROOT, "models", "reference"))
import safetensors_io  # noqa: E402

for name in shipped:
    path = os.path.join(models, name + ".safetensors")
    facts = info(path)
    if not c.check(facts is not None, f"{name}: model file loads"):
        continue
    _, meta, _ = safetensors_io.load(path)
    card = os.path.join(models, name + ".md")
    text = open(card).read() if os.path.exists(card) else ""
    c.check(meta.get("model_card") == f"models/weights/{name}.md" and text, f"{name}: model card present and referenced")
    c.check(all(w in text for w in ("## Data", "## Licence", "## Evaluation", "pixel Dice", "object F1")),
            f"{name}: card gives data, licence and metrics")
    c.check(f"{float(facts['mpp']):g} um/px" in text, f"{name}: card states the model's mpp", facts["mpp"])
    c.check(not any(k.startswith("__optim__") for k in safetensors_io.load(path)[0]),
            f"{name}: no optimiser state shipped")

if "nuclei" in shipped:
    model = os.path.join(models, "nuclei.safetensors")
    facts = info(model)
    mask, gj = os.path.join(tmp, "nuclei.png"), os.path.join(tmp, "nuclei.geojson")
    region = "800,800,1024,1024"  # tissue in the sample slide
    p = wsitest.gst_launch(
        f"slidesrc location={slide} region={region} target-mpp={facts['mpp']} tile-width=512 tile-height=512 ! "
        f"patchify patch-size={facts['patch_size']} overlap=32 min-tissue=0.02 ! colornorm mode=rescale01 ! "
        f"segment-fcn model={model} output=probabilities batch-size=4 ! "
        f"stitchsink blend=gaussian location={mask} geojson-location={gj} geojson-boundary-class=2")
    if c.check(p.returncode == 0, "nuclei model runs on the sample slide", p.stderr[-500:]):
        lab = wsitest.read_png(mask)
        frac = float((lab > 0).mean())
        c.check(0.03 < frac < 0.6, "nuclei cover a plausible part of the tissue", f"{frac:.3f}")
        feats = json.load(open(gj))["features"]
        c.check(len(feats) > 20 and all(f["properties"]["classification"]["name"] == "nucleus" for f in feats),
                "GeoJSON: one 'nucleus' polygon per nucleus", f"{len(feats)} features")
        import skimage.draw
        raster = np.zeros(lab.shape, bool)
        x0, y0 = 800, 800
        ds = 1024 / lab.shape[1]  # level-0 pixels per mask pixel
        for f in feats:
            g = f["geometry"]
            polys = g["coordinates"] if g["type"] == "MultiPolygon" else [g["coordinates"]]
            for poly in polys:
                pts = np.array(poly[0], float)  # outer ring
                rr, cc = skimage.draw.polygon((pts[:, 1] - y0) / ds, (pts[:, 0] - x0) / ds, lab.shape)
                raster[rr, cc] = True
        inter = (raster & (lab > 0)).sum() / max(1, (lab > 0).sum())
        c.check(inter > 0.8, "GeoJSON polygons cover the mask's nuclei", f"{inter:.3f} of nucleus pixels")
c.finish()
