"""Helpers for the Python stitchsink tests: patchify's grid, cutting images
into patches, running the stitch_feed helper, numpy references of the blend
modes and an independent GeoJSON rasteriser (even-odd at pixel centres)."""
import json
import os
import subprocess
import tempfile

import numpy as np

import wsitest


def grid(W, H, P, O):
    S = P - O
    return (W + S - 1) // S, (H + S - 1) // S


def origin(c, r, P, O):
    S = P - O
    return c * S - O // 2, r * S - O // 2


def cut(image, P, O, pad=0):
    """Patches (rows, cols, P, P[, C]) of @image on patchify's grid."""
    H, W = image.shape[:2]
    cols, rows = grid(W, H, P, O)
    out = np.full((rows, cols, P, P) + image.shape[2:], pad, image.dtype)
    for r in range(rows):
        for c in range(cols):
            x0, y0 = origin(c, r, P, O)
            xs, ys = max(0, x0), max(0, y0)
            xe, ye = min(W, x0 + P), min(H, y0 + P)
            out[r, c, ys - y0:ye - y0, xs - x0:xe - x0] = image[ys:ye, xs:xe]
    return out


def feed(exe, patches, kind, W, H, P, O, props, classes=0, extra=()):
    """Runs stitch_feed; returns (returncode, output text)."""
    d = tempfile.mkdtemp(prefix="stitchfeed-")
    path = os.path.join(d, "patches.raw")
    dtype = {"gray8": np.uint8, "gray16": "<u2", "prob": "<f4"}[kind]
    np.ascontiguousarray(patches, dtype=dtype).tofile(path)
    args = [exe, "--patches", path, "--kind", kind, "--width", str(W),
            "--height", str(H), "--patch", str(P), "--overlap", str(O)]
    if classes:
        args += ["--classes", str(classes)]
    args += list(extra)
    args += [f"{k}={v}" for k, v in props.items()]
    p = subprocess.run(args, env=wsitest.gst_env(), capture_output=True,
                       text=True, timeout=120)
    os.unlink(path)
    os.rmdir(d)
    return p.returncode, p.stdout + p.stderr


def weights_1d(mode, P, sigma=0.0):
    if mode != "gaussian":
        return np.ones(P)
    s = sigma if sigma > 0 else P / 8.0
    d = (np.arange(P) + 0.5 - P / 2.0) / s
    return np.exp(-0.5 * d * d)


def blend(patches, W, H, P, O, mode, sigma=0.0):
    """numpy (float64) blend of probability patches (rows, cols, P, P, C):
    returns sums (H, W, C) and weights (H, W)."""
    rows, cols = patches.shape[:2]
    C = patches.shape[-1]
    sums = np.zeros((H, W, C))
    wsum = np.zeros((H, W))
    w1 = weights_1d(mode, P, sigma)
    w2 = np.outer(w1, w1)
    for r in range(rows):
        for c in range(cols):
            x0, y0 = origin(c, r, P, O)
            if mode == "crop":
                a = [O // 2, O // 2]
                b = [P - (O - O // 2)] * 2
                if c == 0:
                    a[0] = 0
                if r == 0:
                    a[1] = 0
                if c == cols - 1:
                    b[0] = P
                if r == rows - 1:
                    b[1] = P
            else:
                a, b = [0, 0], [P, P]
            xa, xb = max(a[0], -x0), min(b[0], W - x0)
            ya, yb = max(a[1], -y0), min(b[1], H - y0)
            if xa >= xb or ya >= yb:
                continue
            tile = patches[r, c, ya:yb, xa:xb].astype(np.float64)
            if mode == "crop":
                sums[y0 + ya:y0 + yb, x0 + xa:x0 + xb] = tile
                wsum[y0 + ya:y0 + yb, x0 + xa:x0 + xb] = 1.0
            else:
                w = w2[ya:yb, xa:xb]
                sums[y0 + ya:y0 + yb, x0 + xa:x0 + xb] += tile * w[..., None]
                wsum[y0 + ya:y0 + yb, x0 + xa:x0 + xb] += w
    return sums, wsum


def resolve(sums, wsum, prob_class=1):
    """Labels (argmax, or p >= 0.5 for one class) and probabilities of
    @prob_class (0 where nothing contributed)."""
    C = sums.shape[-1]
    covered = wsum > 0
    p = np.where(covered[..., None], sums / np.where(covered, wsum, 1)[..., None], 0)
    if C == 1:
        labels = (p[..., 0] >= 0.5).astype(np.uint8)
        prob = p[..., 0] if prob_class == 1 else np.where(covered, 1 - p[..., 0], 0)
    else:
        labels = np.argmax(sums, axis=-1).astype(np.uint8)
        prob = p[..., prob_class]
    labels[~covered] = 0
    return labels, prob, p


def to_byte(p):
    return np.clip(np.floor(p * 255.0 + 0.5), 0, 255).astype(np.uint8)


# ---- GeoJSON ----

def ring_fill(ring, H, W):
    """Even-odd fill of one ring at pixel centres (level coordinates)."""
    acc = np.zeros((H, W + 1), np.uint8)
    pts = np.asarray(ring, np.float64)
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        if y0 == y1:
            continue
        lo, hi = min(y0, y1), max(y0, y1)
        # rows whose centre j + 0.5 lies in [lo, hi)
        j0 = max(0, int(np.ceil(lo - 0.5)))
        j1 = min(H, int(np.ceil(hi - 0.5)))
        for j in range(j0, j1):
            yc = j + 0.5
            xc = x0 + (x1 - x0) * (yc - y0) / (y1 - y0)
            # centres i + 0.5 > xc toggle
            i = int(np.clip(np.floor(xc - 0.5) + 1, 0, W))
            acc[j, i] ^= 1
    return np.bitwise_xor.accumulate(acc, axis=1)[:, :W].astype(bool)


def to_level(ring, region_x, region_y, ds):
    return [((x - region_x) / ds, (y - region_y) / ds) for x, y in ring]


def polygons(feature):
    g = feature["geometry"]
    if g["type"] == "Polygon":
        return [g["coordinates"]]
    assert g["type"] == "MultiPolygon", g["type"]
    return g["coordinates"]


def feature_mask(feature, H, W, region_x=0, region_y=0, ds=1.0):
    m = np.zeros((H, W), bool)
    for poly in polygons(feature):
        pm = np.zeros((H, W), bool)
        for ring in poly:
            pm ^= ring_fill(to_level(ring, region_x, region_y, ds), H, W)
        m |= pm
    return m


def ring_area(ring):
    pts = np.asarray(ring, np.float64)
    return 0.5 * np.sum(pts[:-1, 0] * pts[1:, 1] - pts[1:, 0] * pts[:-1, 1])


def load_geojson(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
