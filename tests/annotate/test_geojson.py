"""labelpatch with QuPath GeoJSON: polygons (with holes), multipolygons,
overlaps, unclassified and unknown classes, rasterised at pixel centres and
compared with skimage.draw.polygon (exact match expected: vertices are random
floats, so no pixel centre lies on an edge)."""
import json
import os

import numpy as np
from skimage.draw import polygon as sk_polygon

import annot
import wsitest

c = wsitest.Checks()
tmp = wsitest.tmpdir()
rng = np.random.default_rng(3)
SW, SH = 300, 200
M = 80                     # reference canvas margin around the slide
W, H = 64, 48


def star(cx, cy, r0, r1, n):
    """Non-convex star-shaped ring, counter-clockwise, closed (first == last)."""
    a = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = rng.uniform(r0, r1, n)
    pts = [[float(cx + rr * np.cos(t)), float(cy + rr * np.sin(t))] for rr, t in zip(r, a)]
    return pts + [pts[0]]


def feature(geom, name=None):
    # brackets inside strings do not count as JSON nesting
    props = {"objectType": "annotation", "note": "\\\"" + "[{" * 100}
    if name is not None:
        props["classification"] = {"name": name, "color": [255, 0, 0]}
    return {"type": "Feature", "id": str(rng.integers(1 << 30)), "geometry": geom,
            "properties": props}


tumor_outer = star(120.3, 90.7, 45, 70, 23)
tumor_hole = star(121.1, 88.2, 12, 22, 9)[::-1]
stroma_a = star(200.4, 60.2, 20, 40, 11)
stroma_b = star(-5.3, 170.6, 25, 45, 13)       # partly outside the slide
unclassified = star(250.7, 160.1, 15, 30, 8)
other = star(60.2, 40.9, 10, 35, 10)
features = [
    feature({"type": "Polygon", "coordinates": [tumor_outer, tumor_hole]}, "Tumor"),
    feature({"type": "MultiPolygon", "coordinates": [[stroma_a], [stroma_b]]}, "Stroma"),
    feature({"type": "Polygon", "coordinates": [unclassified]}),
    feature({"type": "Point", "coordinates": [10.0, 10.0]}, "Tumor"),
    feature({"type": "Polygon", "coordinates": [other]}, "Other"),
    feature({"type": "Polygon", "coordinates": [star(130.2, 100.4, 8, 14, 7)]}, "Stroma"),
]


def inside(ring, x=-M, y=-M, ds=1, shape=(SH + 2 * M, SW + 2 * M)):
    """Pixel-centre fill of one ring on a grid whose pixel (i, j) has its centre
    at level-0 (x + (i + 0.5) ds, y + (j + 0.5) ds); skimage tests the point
    (row, col) = (j, i)."""
    pts = np.array(ring)
    mask = np.zeros(shape, bool)
    rr, cc = sk_polygon((pts[:, 1] - y) / ds - 0.5, (pts[:, 0] - x) / ds - 0.5, shape)
    mask[rr, cc] = True
    return mask


def reference(class_of, background=0, ignore=255, x=-M, y=-M, ds=1,
              shape=(SH + 2 * M, SW + 2 * M)):
    """Labels of that grid: polygons painted in file order, holes by even-odd,
    centres outside the slide get the ignore value."""
    lab = np.full(shape, background, np.uint8)
    for f in features:
        g = f["geometry"]
        polys = {"Polygon": [g["coordinates"]], "MultiPolygon": g["coordinates"]}.get(g["type"], [])
        name = f["properties"].get("classification", {}).get("name", "Unclassified")
        label = class_of(name)
        if label is None:
            continue
        for rings in polys:
            m = np.zeros(shape, bool)
            for ring in rings:
                m ^= inside(ring, x, y, ds, shape)
            lab[m] = label
    cy = y + (np.arange(shape[0]) + 0.5) * ds
    cx = x + (np.arange(shape[1]) + 0.5) * ds
    out = np.full(shape, ignore, np.uint8)
    ok = ((cy >= 0) & (cy < SH))[:, None] & ((cx >= 0) & (cx < SW))[None, :]
    out[ok] = lab[ok]
    return out


positions = [(0, 0), (-20, -10), (60, 50), (100, 70), (170, 30), (250, 160), (-50, 140), (270, 180)]
classes = {"Tumor": 1, "Stroma": 2, "Unclassified": 3}
os.makedirs(os.path.join(tmp, "ann"))
with open(os.path.join(tmp, "ann", "slide-a.geojson"), "w") as f:
    json.dump({"type": "FeatureCollection", "features": features}, f)
slide = os.path.join(tmp, "slides", "slide-a.svs")
pattern = os.path.join(tmp, "ann", "{name}.geojson")
cmap = "Tumor=1, Stroma=2,Unclassified=3"


def check(name, res, ref, positions, ds=1, **kw):
    if not c.check(res.returncode == 0 and len(res.labels) == len(positions), f"{name}: runs",
                   res.stderr[-400:]):
        return
    c.check(res.format == "GRAY8", f"{name}: GRAY8")
    for got, (x, y) in zip(res.labels, positions):
        want = ref[y + M:y + M + H, x + M:x + M + W] if ds == 1 else \
            reference(ref, x=x, y=y, ds=ds, shape=(H, W), **kw)
        c.check(np.array_equal(got, want), f"{name}: patch at {(x, y)}",
                annot.diff_summary(got, want))


ref_skip = reference(classes.get)
c.check((ref_skip == 1).sum() > 2000 and (ref_skip == 2).sum() > 1000 and
        (ref_skip == 3).sum() > 300, "reference has every class")
hole = inside(tumor_hole) & ~inside(stroma_a)
c.check(hole.sum() > 200 and not (ref_skip[hole] == 1).any(), "reference keeps the hole empty")

res = annot.run({"geojson": pattern, "class-map": cmap, "unknown-class": "skip"}, slide,
                positions, (W, H), (SW, SH))
check("FeatureCollection, unknown skipped", res, ref_skip, positions)

res = annot.run({"geojson": pattern, "class-map": cmap, "unknown-class": "ignore",
                 "num-classes": 4}, slide, positions, (W, H), (SW, SH))
check("unknown class painted as ignore", res,
      reference(lambda n: classes.get(n, 255)), positions)

res = annot.run({"geojson": pattern, "class-map": cmap, "unknown-class": "skip"}, slide,
                positions[:4], (W, H), (SW, SH), ds=2)
check("downsample 2", res, classes.get, positions[:4], ds=2)

# QuPath's bare array of features; unannotated slide pixels as ignore
with open(os.path.join(tmp, "ann", "slide-b.geojson"), "w") as f:
    json.dump(features, f)
res = annot.run({"geojson": pattern, "class-map": "Tumor=1,Stroma=2,Other=4",
                 "unknown-class": "skip", "background": 255},
                os.path.join(tmp, "slides", "slide-b.svs"), positions, (W, H), (SW, SH))
check("bare feature array, background=255", res,
      reference({"Tumor": 1, "Stroma": 2, "Other": 4}.get, background=255), positions)

# a single Feature as the root, augmentation replayed
saved = features[:]
features[:] = [features[0]]
with open(os.path.join(tmp, "ann", "slide-c.geojson"), "w") as f:
    json.dump(features[0], f)
ref_c = reference(classes.get)
res = annot.run({"geojson": pattern, "class-map": cmap}, os.path.join(tmp, "slides", "slide-c.svs"),
                [(80, 40)], (W, W), (SW, SH), flip_h=True, rot90=3)
want = annot.augment(ref_c[40 + M:40 + M + W, 80 + M:80 + M + W], True, False, 3)
c.check(res.returncode == 0 and len(res.labels) == 1 and np.array_equal(res.labels[0], want),
        "single Feature root, flip-h + 3 turns", res.stderr[-300:])
features[:] = saved

# issue #9 point 14: a FeatureCollection nested in 'features' (as some tools
# export layers) is read, not dropped; same labels as the flat file
nested = {"type": "FeatureCollection", "features": [
    features[0],
    {"type": "FeatureCollection", "features": [
        features[1], {"type": "FeatureCollection", "features": features[2:4]}]},
    features[4], features[5]]}
with open(os.path.join(tmp, "ann", "slide-d.geojson"), "w") as f:
    json.dump(nested, f)
res = annot.run({"geojson": pattern, "class-map": cmap, "unknown-class": "skip"},
                os.path.join(tmp, "slides", "slide-d.svs"), positions, (W, H), (SW, SH))
check("FeatureCollection nested in features", res, ref_skip, positions)

# issue #9 point 14: a polygon of 30 000 vertices (a wiggly ring around the
# whole slide) rasterised exactly; the edge index keeps it fast
n = 30000
t = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 1e-6, n)
r = 80 + 15 * np.sin(37 * t) + rng.uniform(0, 3, n)
big = [[float(150.3 + rr * np.cos(a)), float(100.7 + rr * np.sin(a))] for rr, a in zip(r, t)]
big.append(big[0])
saved = features[:]
features[:] = [feature({"type": "Polygon", "coordinates": [big]}, "Tumor")]
with open(os.path.join(tmp, "ann", "slide-e.geojson"), "w") as f:
    json.dump({"type": "FeatureCollection", "features": features}, f)
ref_e = reference(classes.get)
c.check((ref_e == 1).sum() > 10000, "big polygon: reference covers the slide")
res = annot.run({"geojson": pattern, "class-map": cmap}, os.path.join(tmp, "slides", "slide-e.svs"),
                positions, (W, H), (SW, SH))
check("30k-vertex polygon", res, ref_e, positions)
features[:] = saved
c.finish()
