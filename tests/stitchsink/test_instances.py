"""stitchsink instance maps (issue 11): objects of a global instance map are
cut into patches on patchify's grid, every patch renumbers its objects 1..N
(descending score, as segment-maskrcnn does) and carries wsi-detection metas;
stitchsink must give back every object once, with exactly its pixels, global
ids in raster order of first pixel, and a GeoJSON detection per object (area,
class, area-weighted score). Scenes: discs and rectangles on every seam and
corner, four objects meeting at a corner, touching pairs across a seam,
objects bigger than the overlap and than a patch, a U whose arms only meet
two patch rows further down, objects on the region border; even, odd and
1-pixel overlaps, downsample 2 with an offset, unknown height, the in-band
wsi-instances event; more than 65535 objects (RGB output); a bad detection id.

Usage: test_instances.py <stitch_feed executable>"""
import os
import sys

import numpy as np

import stitchref as sr
import wsitest

EXE = sys.argv[1]
ck = wsitest.Checks()
tmp = wsitest.tmpdir()


def canonical(G):
    """Ids renumbered 1..M in raster order of first pixel (0 stays 0)."""
    flat = G.ravel()
    ids, first = np.unique(flat, return_index=True)
    order = [i for _, i in sorted(zip(first, ids)) if i != 0]
    lut = {old: new for new, old in enumerate(order, 1)}
    lut[0] = 0
    return np.vectorize(lut.get, otypes=[np.int64])(G) if len(order) < 5000 \
        else remap_fast(G, order)


def remap_fast(G, order):
    lut = np.zeros(int(G.max()) + 1, np.int64)
    lut[np.array(order, np.int64)] = np.arange(1, len(order) + 1)
    return lut[G]


def scene(W, H, P, O, rng, n_random=40):
    S = P - O
    G = np.zeros((H, W), np.int64)
    yy, xx = np.mgrid[0:H, 0:W]
    state = {"next": 1}

    def put(mask, allow_touch=True):
        if not mask.any() or G[mask].any():
            return False
        G[mask] = state["next"]
        state["next"] += 1
        return True

    def disc(cx, cy, r):
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r

    def rect(x0, y0, x1, y1):
        return (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)

    cols, rows = sr.grid(W, H, P, O)
    # four objects meeting at the corner (S, S), touching pair across x = 2S
    put(rect(S - 3, S - 3, S, S))
    put(rect(S, S - 3, S + 3, S))
    put(rect(S - 3, S, S, S + 3))
    put(rect(S, S, S + 3, S + 3))
    put(rect(2 * S - 4, 2, 2 * S, 6))
    put(rect(2 * S, 2, 2 * S + 4, 6))
    # a U whose arms no row-0 patch sees together, joined in patch row 1
    if rows >= 3 and cols >= 3:
        a0, a1 = S // 2, S + O + 2
        put(rect(a0, S // 2, a0 + 2, S + O + 4) | rect(a1, S // 2, a1 + 2, S + O + 4)
            | rect(a0, S + O + 2, a1 + 2, S + O + 4))
    # objects bigger than the overlap / than a patch, across seams
    put(rect(S // 3, 2 * S + 2, min(W, 3 * S + S // 2), 2 * S + 5))
    put(disc(2 * S, 3 * S, max(O, 3)))
    # discs on every seam and corner, small and large
    for r in range(rows + 1):
        for c in range(cols + 1):
            for cx, cy in ((c * S, r * S), (c * S + S // 2, r * S),
                           (c * S, r * S + S // 2)):
                rad = rng.choice([1, 2, O // 2 + 1, S // 4])
                put(disc(cx, cy, rad))
    # the region border
    put(disc(0, H // 2, 4))
    put(disc(W - 1, H // 3, 4))
    put(disc(W // 2, H - 1, 4))
    put(disc(W - 1, H - 1, 5))
    put(rect(0, 0, 3, 3))
    for _ in range(n_random):
        cx, cy = rng.integers(0, W), rng.integers(0, H)
        if rng.random() < 0.5:
            put(disc(cx, cy, rng.integers(1, max(2, S // 3))))
        else:
            w, h = rng.integers(1, S), rng.integers(1, S)
            put(rect(cx, cy, cx + w, cy + h))
    return G


def patches_of(G, P, O, rng, ds=1.0):
    """Per-patch instance labels (descending score), detection lines, and
    the expected per-object score (area-weighted over the pieces)."""
    H, W = G.shape
    cols, rows = sr.grid(W, H, P, O)
    n = int(G.max())
    base = rng.uniform(0.3, 0.95, n + 1)
    klass = rng.integers(1, 3, n + 1)
    out = np.zeros((rows, cols, P, P), np.uint16)
    lines = []
    wsum = np.zeros(n + 1)
    asum = np.zeros(n + 1)
    for r in range(rows):
        for c in range(cols):
            x0, y0 = sr.origin(c, r, P, O)
            xs, ys, xe, ye = max(0, x0), max(0, y0), min(W, x0 + P), min(H, y0 + P)
            view = G[ys:ye, xs:xe]
            ids, counts = np.unique(view[view > 0], return_counts=True)
            score = {int(i): float(np.clip(base[i] - 0.01 * ((3 * c + 5 * r + i) % 7), 0, 1))
                     for i in ids}
            order = sorted(ids, key=lambda i: -score[int(i)])
            lut = np.zeros(n + 1, np.uint16)
            for k, i in enumerate(order, 1):
                lut[i] = k
                lines.append(f"{c} {r} {k} {klass[i]} {score[int(i)]!r}")
            for i, cnt in zip(ids, counts):
                wsum[i] += cnt * score[int(i)]
                asum[i] += cnt
            out[r, c, ys - y0:ye - y0, xs - x0:xe - x0] = lut[view]
    exp_score = np.where(asum > 0, wsum / np.maximum(asum, 1), -1)
    return out, "\n".join(lines) + "\n", exp_score, klass


def run(name, G, P, O, rng, ds=1.0, rx=0, ry=0, mpp=0.0, event=False,
        unknown=False, geojson=True, overlay=False, props=None):
    H, W = G.shape
    patches, det, exp_score, klass = patches_of(G, P, O, rng)
    detf = os.path.join(tmp, name + ".det")
    with open(detf, "w") as f:
        f.write(det)
    png = os.path.join(tmp, name + ".png")
    gj = os.path.join(tmp, name + ".geojson")
    p = {"location": png, "geojson-object-type": "detection",
         "geojson-min-area": 0, "class-names": "background,nucleus,gland"}
    if not event:
        p["instances"] = "on"
    if geojson:
        p["geojson-location"] = gj
    if overlay:
        p["overlay-location"] = os.path.join(tmp, name + "-overlay.png")
    p.update(props or {})
    extra = ["--detections", detf, "--downsample", str(ds), "--region-x",
             str(rx), "--region-y", str(ry)]
    if mpp:
        extra += ["--mpp", str(mpp)]
    if event:
        extra.append("--instances-event")
    if unknown:
        extra.append("--unknown-height")
    rc, text = sr.feed(EXE, patches, "gray16", W, H, P, O, p, extra=extra)
    if not ck.check(rc == 0, f"{name}: runs", text.strip()[-300:]):
        return None
    out = wsitest.read_png(png).astype(np.int64)
    if out.ndim == 3:
        out = (out[..., 0] << 16) | (out[..., 1] << 8) | out[..., 2]
    want = canonical(G)
    M = int(want.max())
    # pixels exact up to a bijection of ids, then the id order itself
    pairs = np.unique(np.stack([out.ravel(), G.ravel()]), axis=1)
    bij = (len(np.unique(pairs[0])) == pairs.shape[1]
           and len(np.unique(pairs[1])) == pairs.shape[1])
    ck.check(bij and out.shape == G.shape, f"{name}: {M} objects, exact pixels "
             "up to renumbering", f"{pairs.shape[1] - 1} id pairs")
    ck.check(np.array_equal(out, want), f"{name}: global ids 1..M in raster order")
    if geojson and bij:
        feats = sr.load_geojson(gj)["features"]
        ck.check(len(feats) == M, f"{name}: one GeoJSON detection per object",
                 f"{len(feats)} vs {M}")
        bad = []
        inv = {int(a): int(b) for a, b in pairs.T}
        for f in feats:
            pr = f["properties"]
            m = pr["measurements"]
            gid = int(m["Instance id"])
            mask = sr.feature_mask(f, H, W, rx, ry, ds)
            orig = inv.get(gid, 0)
            ok = (pr["objectType"] == "detection"
                  and np.array_equal(mask, out == gid)
                  and abs(m["Area px^2"] - mask.sum() * ds * ds) < 1e-6
                  and abs(m["score"] - exp_score[orig]) < 1e-6
                  and pr["classification"]["name"] ==
                  ["background", "nucleus", "gland"][klass[orig]])
            if mpp:
                ok = ok and abs(m["Area \u00b5m^2"] - mask.sum() * ds * ds * mpp * mpp) < 1e-6
            if not ok:
                bad.append(gid)
        ck.check(not bad, f"{name}: features are the objects (pixels, area, "
                 "area-weighted score, class)", f"bad ids {bad[:5]}")
    return text


rng = np.random.default_rng(7)
for P, O in ((32, 8), (32, 5), (24, 1), (40, 16)):
    G = scene(150, 131, P, O, rng)
    run(f"scene-p{P}-o{O}", G, P, O, rng, overlay=(O == 8))

G = scene(150, 131, 32, 8, rng)
run("downsample2-offset-mpp", G, 32, 8, rng, ds=2.0, rx=1000, ry=202, mpp=0.25)
run("in-band-event", G, 32, 8, rng, event=True)
run("unknown-height", G, 32, 8, rng, unknown=True)
# a patch grid of one column / one row
run("one-column", scene(20, 90, 32, 8, rng, 5), 32, 8, rng)

# without instances (and no event) GRAY16 stays class labels: no merging
H, W = 60, 60
G = np.zeros((H, W), np.int64)
G[20:40, 20:40] = 1
patches, det, _, _ = patches_of(G, 32, 8, rng)
png = os.path.join(tmp, "labels.png")
rc, text = sr.feed(EXE, patches, "gray16", W, H, 32, 8, {"location": png})
ck.check(rc == 0 and np.array_equal(wsitest.read_png(png), G),
         "instances=auto without the event: GRAY16 class labels as before")

# more objects than 16 bits: RGB PNG, id = R << 16 | G << 8 | B
H, W = 500, 600
G = np.zeros((H, W), np.int64)
G[::2, ::2] = np.arange(1, 250 * 300 + 1).reshape(250, 300)
text = run("wide-75000", G, 64, 8, rng, geojson=False)
ck.check(wsitest.read_png(os.path.join(tmp, "wide-75000.png")).ndim == 3,
         "75000 objects: an RGB PNG")

# refusals
G = np.zeros((40, 40), np.int64)
G[10:20, 10:20] = 1
patches, det, _, _ = patches_of(G, 32, 8, rng)
detf = os.path.join(tmp, "bad.det")
with open(detf, "w") as f:
    f.write("0 0 70000 1 0.5\n")
rc, text = sr.feed(EXE, patches, "gray16", 40, 40, 32, 8,
                   {"location": os.path.join(tmp, "bad.png"), "instances": "on"},
                   extra=["--detections", detf])
ck.check(rc == 2 and "instance id 70000" in text and "1..65535" in text,
         "a detection id beyond 16 bits is a stream error naming it", text.strip())
ck.check(not os.path.exists(os.path.join(tmp, "bad.png")), "no output after the error")
ck.finish()
