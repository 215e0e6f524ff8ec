"""stitchsink geojson-boundary-class: instance maps of nuclei (ellipses,
touching pairs and clusters, nuclei on patch/band seams and on the image
edges, a U whose arms meet late) are turned into interior (1) + boundary (2)
labels exactly as labelpatch instance-mode=boundary does
(wsi_annot_instance_classes), stitched with a GeoJSON export, and the
polygons are rasterised back (even-odd at pixel centres, stitchref.py).

Checks: one feature per nucleus, classification "nucleus", no boundary
features; each feature equals, pixel for pixel, the object of an independent
numpy reference of the documented growth rule; against the instance map,
IoU >= 0.95 for every nucleus and exact for nuclei touching no other; touching
pairs stay two features; area measurements; label PNG unchanged. Also random
label noise against the reference (k = 0..8, another boundary label, odd
grids), GRAY16 and probability input, min-area after growth, dropped rings
without interior, property off = old export, bad values refused.

Usage: test_geojson_boundary.py <stitch_feed executable>"""
import os
import sys

import numpy as np
import skimage.measure

import stitchref as sr
import wsitest

EXE = sys.argv[1]
ck = wsitest.Checks()
tmp = wsitest.tmpdir()

NAMES = "background,nucleus,boundary,other"
# neighbour order of one growth step: N, W, E, S, NW, NE, SW, SE (dy, dx)
ORDER = [(-1, 0), (0, -1), (0, 1), (1, 0), (-1, -1), (-1, 1), (1, -1), (1, 1)]


def labelpatch_boundary(inst, conn=4, cls=None):
    """wsi_annot_instance_classes(boundary=TRUE): an instance pixel with a
    4- (or 8-) neighbour inside the image of another value is boundary (2),
    other instance pixels interior (1, or cls[id] when given)."""
    H, W = inst.shape
    pad = np.pad(inst.astype(np.int64), 1, constant_values=-1)
    edge = np.zeros((H, W), bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if (dy == 0 and dx == 0) or (conn != 8 and dy and dx):
                continue
            nb = pad[1 + dy:1 + dy + H, 1 + dx:1 + dx + W]
            edge |= (nb != -1) & (nb != inst)
    interior = np.ones((H, W), np.uint8) if cls is None else cls[inst].astype(np.uint8)
    return np.where(inst == 0, 0, np.where(edge, 2, interior)).astype(np.uint8)


def reference(L, bc, k):
    """Object ids per pixel (-1 none, -2 boundary nobody reached) and the
    class of each id: 8-connected components of the non-boundary labels,
    then k steps, each giving every boundary pixel the first object among
    its neighbours in ORDER (previous step's state)."""
    H, W = L.shape
    ids = np.full((H, W), -1, np.int64)
    cls = []
    for c in np.unique(L):
        if c == 0 or c == bc:
            continue
        lab = skimage.measure.label(L == c, connectivity=2)
        m = lab > 0
        ids[m] = lab[m] - 1 + len(cls)
        cls += [int(c)] * int(lab.max())
    ids[L == bc] = -2
    for _ in range(k):
        pad = np.pad(ids, 1, constant_values=-1)
        todo = ids == -2
        new = ids.copy()
        for dy, dx in ORDER:
            cand = pad[1 + dy:1 + dy + H, 1 + dx:1 + dx + W]
            take = todo & (cand >= 0)
            new[take] = cand[take]
            todo &= ~take
        ids = new
    return ids, cls


def run(name, L, P, O, props, kind="gray8", classes=0, patches=None, labels_png=True):
    H, W = L.shape
    path = os.path.join(tmp, name + ".json")
    png = os.path.join(tmp, name + ".png")
    p = {"location": png, "geojson-location": path, "geojson-min-area": 0,
         "class-names": NAMES}
    p.update(props)
    if patches is None:
        patches = sr.cut(L, P, O, 0)
    rc, text = sr.feed(EXE, patches, kind, W, H, P, O, p, classes=classes)
    if not ck.check(rc == 0, f"{name}: runs", text.strip()):
        return None
    if labels_png:
        ck.check(np.array_equal(wsitest.read_png(png), L),
                 f"{name}: label PNG is the label image (boundary class included)")
    return sr.load_geojson(path)


def check_reference(name, L, gj, bc, k, min_area=0):
    """Every feature is one reference object (exact pixels, its class name,
    area), every object of at least @min_area pixels has one feature."""
    H, W = L.shape
    ids, cls = reference(L, bc, k)
    sizes = np.bincount(ids[ids >= 0].ravel(), minlength=len(cls))
    expected = {i for i in range(len(cls)) if sizes[i] >= max(min_area, 1)}
    names = NAMES.split(",")
    seen, exact, named, area_ok = set(), True, True, True
    masks = []
    for f in gj["features"]:
        m = sr.feature_mask(f, H, W)
        masks.append(m)
        v = np.unique(ids[m])
        if len(v) != 1 or v[0] < 0 or not np.array_equal(ids == v[0], m) or v[0] in seen:
            exact = False
            continue
        i = int(v[0])
        seen.add(i)
        c = cls[i]
        want = names[c] if c < len(names) else f"class {c}"
        if f["properties"]["classification"]["name"] != want:
            named = False
        if f["properties"]["measurements"]["Area px^2"] != m.sum():
            area_ok = False
    ck.check(exact, f"{name}: each feature is exactly one reference object (k={k})")
    ck.check(seen == expected, f"{name}: one feature per reference object",
             f"{len(seen)} matched, {len(expected)} expected, {len(gj['features'])} features")
    ck.check(named, f"{name}: classification of the interior class")
    ck.check(area_ok, f"{name}: Area px^2 counts interior + grown ring")
    orphans = int(np.sum(ids == -2))
    return masks, orphans


# ---- nuclei instance map ----

def ellipse_instances(H, W, nuclei):
    """Instance map of ellipses (cy, cx, a, b, angle); a pixel in several
    goes to the one it is deepest in (a straight-ish contact line)."""
    yy, xx = np.mgrid[0:H, 0:W]
    best = np.full((H, W), np.inf)
    inst = np.zeros((H, W), np.uint16)
    for i, (cy, cx, a, b, t) in enumerate(nuclei, 1):
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        d = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        m = (d <= 1) & (d < best)
        inst[m] = i
        best[m] = d[m]
    return inst


def nuclei_image():
    H, W = 150, 170
    n = [
        (30, 30, 7, 7, 0), (60, 100, 8, 5, 0.5),            # isolated
        (95, 40, 7, 6, 0), (95, 52, 7, 6, 0),               # touching pair
        (30, 120, 6, 9, 1.2), (42, 128, 7, 6, 0.3),         # touching pair, tilted
        (120, 120, 6, 6, 0), (120, 131, 6, 6, 0), (130, 125, 6, 6, 0),  # triple
        (0, 0, 6, 6, 0), (75, 0, 6, 8, 0), (149, 169, 7, 5, 0.7),       # image edges
        (0, 80, 5, 7, 0), (149, 70, 8, 6, 0), (100, 169, 6, 6, 0),
        (48, 48, 7, 6, 0), (48, 60, 6, 7, 0),               # pair across a seam
        (72, 72, 6, 6, 0), (96, 96, 7, 5, 1.0),             # on patch corners
    ]
    rng = np.random.default_rng(5)
    for _ in range(25):
        n.append((rng.uniform(0, H), rng.uniform(0, W), rng.uniform(5, 9),
                  rng.uniform(5, 9), rng.uniform(0, np.pi)))
    inst = ellipse_instances(H, W, n)
    # a U whose arms are separate interiors until the bottom joins them
    inst[5:26, 145:151] = 100
    inst[5:26, 160:166] = 100
    inst[20:26, 145:166] = 100
    # keep instances that are one 4-connected piece of at least 40 pixels
    out = np.zeros_like(inst)
    k = 0
    for i in np.unique(inst):
        if i == 0:
            continue
        m = inst == i
        if m.sum() >= 40 and skimage.measure.label(m, connectivity=1).max() == 1:
            k += 1
            out[m] = k
    return out


def check_nuclei(name, inst, L, gj, bc=2, k=2, iou_min=0.95):
    H, W = L.shape
    masks, orphans = check_reference(name, L, gj, bc, k)
    feats = gj["features"]
    n_inst = int(inst.max())
    ck.check(len(feats) == n_inst, f"{name}: features == nuclei", f"{len(feats)} vs {n_inst}")
    ck.check(all(f["properties"]["classification"]["name"] == "nucleus" for f in feats),
             f"{name}: every feature is a 'nucleus' (no boundary features)")
    ck.check(orphans == 0, f"{name}: every ring pixel reached an object", str(orphans))
    # instance -> feature with the largest overlap
    owner = np.full((H, W), -1, np.int64)
    for j, m in enumerate(masks):
        owner[m] = j
    pad = np.pad(inst, 1)
    worst, inexact_isolated, used = 1.0, [], set()
    for i in range(1, n_inst + 1):
        m = inst == i
        js, cnt = np.unique(owner[m][owner[m] >= 0], return_counts=True)
        if len(js) == 0:
            worst = 0.0
            continue
        j = int(js[np.argmax(cnt)])
        used.add(j)
        iou = np.sum(m & masks[j]) / np.sum(m | masks[j])
        worst = min(worst, iou)
        # touches no other instance, even diagonally
        near = np.zeros((H, W), bool)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                near |= pad[1 + dy:1 + dy + H, 1 + dx:1 + dx + W] == i
        isolated = not np.any(near & (inst != 0) & (inst != i))
        if isolated and not np.array_equal(m, masks[j]):
            inexact_isolated.append(i)
    ck.check(worst >= iou_min, f"{name}: IoU with the full nucleus (interior + ring) >= {iou_min}",
             f"min {worst:.3f}")
    ck.check(not inexact_isolated, f"{name}: nuclei touching no other are exact",
             str(inexact_isolated))
    ck.check(len(used) == n_inst, f"{name}: every nucleus has its own feature")
    return masks


inst = nuclei_image()
L = labelpatch_boundary(inst)
ck.check(inst.max() >= 35, "nuclei image has enough nuclei", str(inst.max()))
BC = {"geojson-boundary-class": 2}

gj = run("nuclei", L, 32, 8, BC)
if gj:
    masks = check_nuclei("nuclei", inst, L, gj)
    # the touching pairs stay two features
    for a, b in [((95, 40), (95, 52)), ((30, 120), (42, 128)), ((120, 120), (120, 131)),
                 ((48, 48), (48, 60))]:
        fa = [j for j, m in enumerate(masks) if m[a]]
        fb = [j for j, m in enumerate(masks) if m[b]]
        ck.check(len(fa) == 1 and len(fb) == 1 and fa != fb,
                 f"nuclei: touching pair at {a} / {b} stays two features")
    u = [j for j, m in enumerate(masks) if m[10, 147] or m[10, 162]]
    ck.check(len(u) == 1 and masks[u[0]][23, 155],
             "nuclei: the U (arms joined at the bottom) is one feature with its ring")

# other grids: small patches (many bands, seams through every nucleus),
# odd overlap; default grow
gj = run("nuclei-p20", L, 20, 5, BC)
if gj:
    check_nuclei("nuclei-p20", inst, L, gj)
gj = run("nuclei-p16-g3", L, 16, 4, {"geojson-boundary-class": 2, "geojson-boundary-grow": 3})
if gj:
    check_nuclei("nuclei-p16-g3", inst, L, gj, k=3)

# labelpatch boundary-connectivity=8: thicker rings
L8 = labelpatch_boundary(inst, conn=8)
gj = run("nuclei-conn8", L8, 32, 8, BC)
if gj:
    check_nuclei("nuclei-conn8", inst, L8, gj, iou_min=0.9)

# two interior classes (nucleus, other) sharing the boundary label
cls = np.array([0] + [1 + 2 * (i % 3 == 0) for i in range(1, int(inst.max()) + 1)])
L2 = labelpatch_boundary(inst, cls=cls)
gj = run("two-classes", L2, 32, 8, BC)
if gj:
    check_reference("two-classes", L2, gj, 2, 2)
    names = sorted({f["properties"]["classification"]["name"] for f in gj["features"]})
    ck.check(names == ["nucleus", "other"] and len(gj["features"]) == inst.max(),
             "two-classes: one feature per nucleus, each of its interior class", str(names))

# grow 0: rings dropped, interiors only
gj = run("grow0", L, 32, 8, {"geojson-boundary-class": 2, "geojson-boundary-grow": 0})
if gj:
    check_reference("grow0", L, gj, 2, 0)

# min-area applies to the grown object
sizes = np.bincount(inst.ravel())[1:]
thr = int(np.median(sizes))
gj = run("minarea", L, 32, 8, {"geojson-boundary-class": 2, "geojson-min-area": thr})
if gj:
    check_reference("minarea", L, gj, 2, 2, min_area=thr)

# ---- rings with no interior are dropped ----
R = np.zeros((40, 50), np.uint8)
R[5:9, 5:9] = 2                     # a 4x4 nucleus is all ring
R[20:30, 20:30] = 2                 # a ring around background
R[22:28, 22:28] = 0
R[5:15, 35:45] = 2                  # a 10x10 nucleus: ring and interior
R[6:14, 36:44] = 1
gj = run("orphans", R, 16, 4, BC)
if gj:
    masks, orphans = check_reference("orphans", R, gj, 2, 2)
    ck.check(len(gj["features"]) == 1 and orphans == 16 + 100 - 36,
             "orphans: rings without interior dropped, the square with interior kept",
             f"{len(gj['features'])} features, {orphans} dropped pixels")
    if len(masks) == 1:
        ck.check(np.array_equal(masks[0], np.pad(np.ones((10, 10), bool), ((5, 25), (35, 5)))),
                 "orphans: the square covers its ring")

# ---- random labels against the reference: merges, splits, seams ----
rng = np.random.default_rng(3)
small = rng.integers(0, 4, (30, 28))
blocky = np.kron(small, np.ones((3, 3), np.int64))[:87, :80].astype(np.uint8)
flip = rng.random(blocky.shape) < 0.15
noisy = np.where(flip, rng.integers(0, 4, blocky.shape), blocky).astype(np.uint8)
for k, bc, P, O in [(0, 2, 16, 4), (1, 2, 16, 4), (2, 2, 20, 6), (3, 1, 24, 7),
                    (8, 2, 32, 8), (2, 3, 13, 3)]:
    name = f"noise-k{k}-b{bc}-p{P}"
    gj = run(name, noisy, P, O, {"geojson-boundary-class": bc, "geojson-boundary-grow": k})
    if gj:
        check_reference(name, noisy, gj, bc, k)

# tall and narrow: many bands, objects ending in every band
tall_inst = ellipse_instances(400, 30, [(8 + 13 * i, 8 + (i % 3) * 7, 6, 5, 0.3 * i)
                                        for i in range(30)])
tall = labelpatch_boundary(tall_inst)
gj = run("tall", tall, 16, 4, BC)
if gj:
    check_reference("tall", tall, gj, 2, 2)
    ck.check(len(gj["features"]) == len(np.unique(tall_inst)) - 1, "tall: one feature per nucleus",
             f"{len(gj['features'])} vs {len(np.unique(tall_inst)) - 1}")

# ---- GRAY16 labels: boundary 300, interiors 1000 / 2000 ----
L16 = np.where(L == 2, 300, np.where(L == 1, 1000, 0)).astype(np.uint16)
L16[L2 == 3] = 2000
gj = run("gray16", L16, 32, 8, {"geojson-boundary-class": 300}, kind="gray16")
if gj:
    check_reference("gray16", L16, gj, 300, 2)
    ck.check({f["properties"]["classification"]["name"] for f in gj["features"]}
             == {"class 1000", "class 2000"} and len(gj["features"]) == inst.max(),
             "gray16: one feature per nucleus, no 'class 300'")

# ---- probability input: 3 classes, argmax = the labels ----
prob = np.full(L.shape + (3,), 0.1, np.float32)
for c in range(3):
    prob[..., c][L == c] = 0.8
gj = run("prob", L, 32, 8, BC, kind="prob", classes=3, patches=sr.cut(prob, 32, 8, 0))
if gj:
    check_nuclei("prob", inst, L, gj)

# ---- property off: the old export (boundary rings as their own class) ----
gj = run("off", L, 32, 8, {})
if gj:
    n = sum(skimage.measure.label(L == c, connectivity=2).max() for c in (1, 2))
    ck.check(len(gj["features"]) == n, "off: one feature per 8-connected component of 1 and 2",
             f"{len(gj['features'])} vs {n}")
    ck.check(any(f["properties"]["classification"]["name"] == "boundary"
                 for f in gj["features"]), "off: boundary features exported")

# set without geojson-location: ignored
rc, text = sr.feed(EXE, sr.cut(L, 32, 8, 0), "gray8", L.shape[1], L.shape[0], 32, 8,
                   {"location": os.path.join(tmp, "nogeo.png"), "geojson-boundary-class": 2})
ck.check(rc == 0 and np.array_equal(wsitest.read_png(os.path.join(tmp, "nogeo.png")), L),
         "boundary class without geojson-location: ignored", text.strip())


# ---- bad values ----
def refused(name, props, needle, kind="gray8", classes=0, patches=None, image=L):
    H, W = image.shape
    out = os.path.join(tmp, name + ".png")
    p = {"location": out, "geojson-location": os.path.join(tmp, name + ".json")}
    p.update(props)
    rc, text = sr.feed(EXE, sr.cut(image, 16, 4, 0) if patches is None else patches,
                       kind, W, H, 16, 4, p, classes=classes)
    ck.check(rc != 0 and needle in text, f"{name}: refused ({needle!r})", text.strip())
    ck.check(not os.path.exists(out) and not any(".partial-" in n for n in os.listdir(tmp)),
             f"{name}: no output, no temp file")


small_L = L[:40, :40]
# geojson-boundary-class=0 (the background) means none, like -1: test_stitch_errors.c
refused("bad-gray8", {"geojson-boundary-class": 256}, "GRAY8 labels stop at 255", image=small_L)
p3 = sr.cut(prob[:40, :40], 16, 4, 0)
refused("bad-prob", {"geojson-boundary-class": 3}, "tensors have 3 classes",
        kind="prob", classes=3, patches=p3, image=small_L)
p1 = sr.cut(prob[:40, :40, 1:2], 16, 4, 0)
refused("bad-prob1", {"geojson-boundary-class": 1}, "one-class map",
        kind="prob", classes=1, patches=p1, image=small_L)

ck.finish()
