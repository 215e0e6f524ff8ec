"""stitchsink geojson-location: label images with known shapes (squares, a
ring with a hole, touching classes, shapes crossing band and patch edges,
diagonal one-pixel connections, random noise) are stitched with a GeoJSON
export; the GeoJSON is rasterised back (even-odd at pixel centres) and must
equal the label image per class. Also: level-0 scaling (downsample 4, region
offset), ring validity, one feature per 8-connected component, area
measurements, class names/colours, objectType, min-area, GRAY16 labels,
probability input, and an unwritable location.

Usage: test_geojson.py <stitch_feed executable>"""
import os
import sys

import numpy as np
import skimage.measure
import skimage.morphology

import stitchref as sr
import wsitest

EXE = sys.argv[1]
ck = wsitest.Checks()
tmp = wsitest.tmpdir()
rng = np.random.default_rng(11)


def shapes_image():
    H, W = 75, 90
    L = np.zeros((H, W), np.uint8)
    L[2:6, 2:6] = 1                      # small square
    L[10:40, 8:38] = 2                   # ring with a hole (crosses patches)
    L[16:34, 14:32] = 0
    L[22:26, 22:26] = 1                  # island of another class in the hole
    L[5:15, 45:55] = 1                   # two touching classes
    L[5:15, 55:65] = 3
    L[20:24, 45:49] = 1                  # diagonal one-pixel connection
    L[24:28, 49:53] = 1
    L[30, 60] = 3                        # single pixels touching diagonally
    L[31, 61] = 3
    L[32, 60] = 3
    # C shape whose tips touch diagonally: hole touching the shell at a point
    L[45:55, 5:15] = 1
    L[47:53, 7:13] = 0
    L[47, 12] = 1
    L[48, 13] = 0
    # ring whose hole holds an island touching the hole wall diagonally
    L[45:60, 30:45] = 2
    L[47:58, 32:43] = 0
    L[50:53, 35:38] = 2
    L[49, 34] = 2                        # diagonal to the island and not the wall
    L[48, 33] = 2                        # ... which it touches diagonally
    # tall snake crossing every band
    L[:, 75] = 4
    L[::2, 76] = 4
    L[60:75, 0:W] = np.where(np.arange(W) % 7 < 3, 5, L[60:75])
    L[62:64, 10:20] = 0
    return L


def check_image(name, L, P, O, ds=1.0, rx=0, ry=0, mpp=0.0, kind="gray8",
                props=None, expect_min_area=0, labels_png=True):
    H, W = L.shape
    path = os.path.join(tmp, name + ".json")
    png = os.path.join(tmp, name + ".png")
    p = {"location": png, "geojson-location": path, "geojson-min-area": 0,
         "class-names": "bg,one,two,three", "class-colors": "000000,ff0000,00ff00,0000ff"}
    p.update(props or {})
    extra = ["--downsample", str(ds), "--region-x", str(rx), "--region-y", str(ry)]
    if mpp:
        extra += ["--mpp", str(mpp)]
    rc, text = sr.feed(EXE, sr.cut(L, P, O, 0), kind, W, H, P, O, p, extra=extra)
    if not ck.check(rc == 0, f"{name}: runs", text.strip()):
        return None
    if labels_png:
        ck.check(np.array_equal(wsitest.read_png(png), L), f"{name}: label PNG is the image")
    gj = sr.load_geojson(path)
    ck.check(gj.get("type") == "FeatureCollection", f"{name}: FeatureCollection")
    feats = gj["features"]
    expected = L.copy()
    classes = [int(k) for k in np.unique(L) if k != 0]
    n_expected = 0
    for k in classes:
        lab = skimage.measure.label(L == k, connectivity=2)
        sizes = np.bincount(lab.ravel())
        for i in range(1, lab.max() + 1):
            if sizes[i] < expect_min_area:
                expected[lab == i] = 0
            else:
                n_expected += 1
    ck.check(len(feats) == n_expected,
             f"{name}: one feature per 8-connected component",
             f"{len(feats)} vs {n_expected}")

    raster = np.zeros((H, W), np.int64)
    overlap = False
    valid = True
    area_ok = True
    comp_ok = True
    names = {}
    for f in feats:
        pr = f["properties"]
        k = None
        cls = pr["classification"]
        names[cls["name"]] = cls["color"]
        for poly in sr.polygons(f):
            for i, ring in enumerate(poly):
                a = sr.ring_area(ring)
                pts = [tuple(v) for v in ring]
                if (len(ring) < 4 or ring[0] != ring[-1] or (a > 0) != (i == 0)
                        or len(set(pts[:-1])) != len(pts) - 1):
                    valid = False
        m = sr.feature_mask(f, H, W, rx, ry, ds)
        vals = np.unique(L[m])
        if len(vals) != 1 or vals[0] == 0:
            comp_ok = False
        else:
            k = int(vals[0])
            # the feature is exactly one 8-connected component of its class
            lab = skimage.measure.label(L == k, connectivity=2)
            ids = np.unique(lab[m])
            if len(ids) != 1 or not np.array_equal(lab == ids[0], m):
                comp_ok = False
        if np.any(raster[m]):
            overlap = True
        raster[m] = k if k is not None else -1
        meas = pr["measurements"]
        if abs(meas["Area px^2"] - m.sum() * ds * ds) > 1e-6:
            area_ok = False
        if mpp and abs(meas["Area \u00b5m^2"] - m.sum() * ds * ds * mpp * mpp) > 1e-6:
            area_ok = False
    ck.check(valid, f"{name}: rings closed, >= 4 points, simple, shells positive / holes negative")
    ck.check(not overlap, f"{name}: features do not overlap")
    ck.check(comp_ok, f"{name}: each feature is one component of one class")
    ck.check(area_ok, f"{name}: area measurements = pixels x downsample^2"
             + (" (and um^2)" if mpp else ""))
    for k in classes:
        ck.check(np.array_equal(raster == k, expected == k),
                 f"{name}: class {k} rasterised back equals the label image",
                 f"{int(np.sum((raster == k) != (expected == k)))} pixels differ")
    return gj


# ---- known shapes, patch 16 overlap 6, level 0 ----
L = shapes_image()
gj = check_image("shapes", L, 16, 6)
if gj:
    f0 = gj["features"][0]["properties"]
    ck.check(f0["objectType"] == "annotation", "objectType annotation by default")
    by_name = {f["properties"]["classification"]["name"]:
               f["properties"]["classification"]["color"] for f in gj["features"]}
    ck.check(by_name.get("one") == [255, 0, 0] and by_name.get("three") == [0, 0, 255],
             "classification name and [r,g,b] colour from class-names/class-colors",
             str(by_name))
    ck.check("class 4" in by_name and "class 5" in by_name, "unnamed classes are 'class N'")
    ck.check("bg" not in by_name, "class 0 is not exported")
    kinds = {f["geometry"]["type"] for f in gj["features"]}
    ck.check(kinds == {"Polygon", "MultiPolygon"},
             "Polygon, and MultiPolygon where a component touches itself diagonally",
             str(kinds))
    ring = [f for f in gj["features"] if f["properties"]["classification"]["name"] == "two"
            and f["geometry"]["type"] == "Polygon" and len(f["geometry"]["coordinates"]) == 2]
    ck.check(len(ring) >= 1 and sr.ring_area(ring[0]["geometry"]["coordinates"][1]) == -18 * 18,
             "ring: one shell and an 18 x 18 hole")
    square = [f for f in gj["features"]
              if f["geometry"]["coordinates"] == [[[2, 2], [6, 2], [6, 6], [2, 6], [2, 2]]]]
    ck.check(len(square) == 1, "small square: corners only, pixel-edge coordinates")

# ---- level-0 scaling: downsample 4, region offset, mpp ----
gj = check_image("scaled", L, 24, 8, ds=4.0, rx=1000, ry=2000, mpp=0.25)
if gj:
    sq = [f for f in gj["features"]
          if f["geometry"]["coordinates"] == [[[1008, 2008], [1024, 2008], [1024, 2024],
                                               [1008, 2024], [1008, 2008]]]]
    ck.check(len(sq) == 1 and sq[0]["properties"]["measurements"]["Area px^2"] == 256
             and sq[0]["properties"]["measurements"]["Area \u00b5m^2"] == 16,
             "scaled square at region + 4 x (2, 2): 256 px^2, 16 um^2")

# ---- random blocky and pixel noise: many saddles, holes, islands ----
small = rng.integers(0, 4, (20, 25))
blocky = np.kron(small, np.ones((3, 3), np.int64))[:58, :73].astype(np.uint8)
check_image("blocky", blocky, 16, 4)
noise = (rng.random((61, 67)) < 0.45).astype(np.uint8) * rng.integers(1, 3, (61, 67)).astype(np.uint8)
check_image("noise", noise, 20, 6)

# ---- min area: components below 5 pixels dropped ----
check_image("minarea", noise, 20, 6, props={"geojson-min-area": 5}, expect_min_area=5)

# ---- detection objects, GRAY16 labels ----
L16 = np.zeros((30, 40), np.uint16)
L16[3:9, 4:10] = 300
L16[12:20, 20:33] = 65535
L16[20:22, 5:7] = 1
gj = check_image("gray16", L16, 16, 4, kind="gray16",
                 props={"geojson-object-type": "detection"})
if gj:
    ck.check(all(f["properties"]["objectType"] == "detection" for f in gj["features"]),
             "objectType detection")
    ck.check({f["properties"]["classification"]["name"] for f in gj["features"]}
             == {"class 300", "class 65535", "one"}, "16-bit labels keep their values")

# ---- probability input: GeoJSON of the blended labels equals the mask ----
W, H, P, O = 60, 44, 16, 6
field = np.zeros((H, W, 3), np.float32)
yy, xx = np.mgrid[0:H, 0:W]
field[..., 1] = np.exp(-((xx - 20) ** 2 + (yy - 20) ** 2) / 80.0)
field[..., 2] = np.exp(-((xx - 45) ** 2 + (yy - 25) ** 2) / 40.0)
field[..., 0] = 0.3
patches = sr.cut(field, P, O, 0)
path = os.path.join(tmp, "prob.json")
rc, text = sr.feed(EXE, patches, "prob", W, H, P, O,
                   {"location": os.path.join(tmp, "prob.png"), "geojson-location": path,
                    "geojson-min-area": 0, "blend": "gaussian"}, classes=3)
if ck.check(rc == 0, "probabilities + geojson: runs", text.strip()):
    mask = wsitest.read_png(os.path.join(tmp, "prob.png"))
    gj = sr.load_geojson(path)
    raster = np.zeros((H, W), np.uint8)
    for f in gj["features"]:
        k = 1 if f["properties"]["classification"]["name"] == "class 1" else 2
        raster[sr.feature_mask(f, H, W)] = k
    ck.check(mask.max() == 2 and np.array_equal(raster, mask),
             "probabilities + geojson: rasterised GeoJSON equals the label PNG")

# ---- unwritable geojson-location: clear error, nothing written ----
rc, text = sr.feed(EXE, sr.cut(L, 16, 6, 0), "gray8", L.shape[1], L.shape[0], 16, 6,
                   {"location": os.path.join(tmp, "nowrite.png"),
                    "geojson-location": os.path.join(tmp, "missing-dir", "g.json")})
ck.check(rc != 0 and "Could not open" in text and "missing-dir" in text,
         "unwritable geojson-location: error naming the path", text.strip())
ck.check(not os.path.exists(os.path.join(tmp, "nowrite.png"))
         and not any(".partial-" in n for n in os.listdir(tmp)),
         "unwritable geojson-location: no PNG, no temp files left")

ck.finish()
