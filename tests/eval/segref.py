"""Plain reference implementation of the segeval metrics (docs/segeval.md),
written independently of the C code: numpy for counting, skimage.measure.label
for connected components, matching by IoU with explicit Python loops."""
import json
import math
import os
import subprocess

import numpy as np
import skimage.measure


def confusion(pred, gt, ignore):
    """K x K counts (rows: annotation class, cols: predicted class) over the
    pixels whose annotation is not `ignore`. 16-bit maps count as 0/1."""
    keep = gt != ignore if ignore is not None else np.ones(gt.shape, bool)
    g = gt[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    if gt.dtype == np.uint16:
        g = (g > 0).astype(np.int64)
    if pred.dtype == np.uint16:
        p = (p > 0).astype(np.int64)
    cm = np.zeros((256, 256), np.int64)
    np.add.at(cm, (g, p), 1)
    return cm, int((~keep).sum())


def n_classes(cm, num_classes=0):
    if num_classes > 0:
        return num_classes
    used = np.nonzero(cm.sum(axis=0) + cm.sum(axis=1))[0]
    return int(used.max()) + 1 if len(used) else 1


def class_scores(cm, k):
    out = []
    for c in range(k):
        tp = int(cm[c, c])
        gt_px = int(cm[c, :].sum())
        pr_px = int(cm[:, c].sum())
        fp, fn = pr_px - tp, gt_px - tp
        if gt_px + pr_px == 0:
            dice = iou = None
        else:
            dice = 2 * tp / (gt_px + pr_px)
            iou = tp / (tp + fp + fn)
        out.append(dict(tp=tp, fp=fp, fn=fn, gt_pixels=gt_px, pred_pixels=pr_px,
                        dice=dice, iou=iou))
    return out


def mean_defined(values):
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def objects(labels, valid, cls, connectivity):
    """Object ids: connected components of `cls` for 8-bit maps, the ids
    themselves for 16-bit ones; invalid pixels are background."""
    if labels.dtype == np.uint16:
        return np.where(valid, labels, 0).astype(np.int64)
    fg = (labels == cls) & valid
    return skimage.measure.label(fg, connectivity=1 if connectivity == 4 else 2,
                                 background=0).astype(np.int64)


def instance_counts(gt_ids, pred_ids):
    """Sums for object F1, PQ, AJI and the GlaS object Dice of one image."""
    gt_list = [int(i) for i in np.unique(gt_ids) if i]
    pr_list = [int(i) for i in np.unique(pred_ids) if i]
    area_g = {i: int((gt_ids == i).sum()) for i in gt_list}
    area_p = {j: int((pred_ids == j).sum()) for j in pr_list}
    both = (gt_ids > 0) & (pred_ids > 0)
    inter = {}
    for g, p in zip(gt_ids[both].tolist(), pred_ids[both].tolist()):
        inter[(g, p)] = inter.get((g, p), 0) + 1

    def iou(g, p):
        i = inter.get((g, p), 0)
        return i / (area_g[g] + area_p[p] - i)

    # matches: IoU > 0.5
    tp, iou_sum = 0, 0.0
    for (g, p) in inter:
        if iou(g, p) > 0.5:
            tp += 1
            iou_sum += iou(g, p)
    # AJI (Kumar et al. 2017), each GT object with its best-IoU prediction
    c_sum = u_sum = 0
    used = set()
    for g in gt_list:
        cands = sorted(p for (gg, p) in inter if gg == g)
        if not cands:
            u_sum += area_g[g]
            continue
        best = cands[0]
        for p in cands[1:]:
            if iou(g, p) > iou(g, best):
                best = p
        i = inter[(g, best)]
        c_sum += i
        u_sum += area_g[g] + area_p[best] - i
        used.add(best)
    for p in pr_list:
        if p not in used:
            u_sum += area_p[p]
    # object Dice (Sirinukunwattana et al. 2017)
    if gt_list or pr_list:
        tot_g = sum(area_g.values())
        tot_p = sum(area_p.values())
        dg = 0.0
        for g in gt_list:
            cands = sorted(p for (gg, p) in inter if gg == g)
            if cands:
                best = max(cands, key=lambda p: (inter[(g, p)], -p))
                dg += area_g[g] / tot_g * 2 * inter[(g, best)] / (area_g[g] + area_p[best])
        dp = 0.0
        for p in pr_list:
            cands = sorted(g for (g, pp) in inter if pp == p)
            if cands:
                best = max(cands, key=lambda g: (inter[(g, p)], -g))
                dp += area_p[p] / tot_p * 2 * inter[(best, p)] / (area_p[p] + area_g[best])
        odice = 0.5 * (dg + dp)
    else:
        odice = None
    return dict(gt_objects=len(gt_list), pred_objects=len(pr_list), tp=tp,
                fp=len(pr_list) - tp, fn=len(gt_list) - tp, iou_sum=iou_sum,
                aji_intersection=c_sum, aji_union=u_sum, object_dice=odice)


def ratio(a, b):
    return a / b if b > 0 else None


def instance_metrics(c):
    half = c["tp"] + 0.5 * c["fp"] + 0.5 * c["fn"]
    return dict(precision=ratio(c["tp"], c["tp"] + c["fp"]),
                recall=ratio(c["tp"], c["tp"] + c["fn"]),
                f1=ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"]),
                sq=ratio(c["iou_sum"], c["tp"]), dq=ratio(c["tp"], half),
                pq=ratio(c["iou_sum"], half),
                aji=ratio(c["aji_intersection"], c["aji_union"]),
                object_dice=c.get("object_dice"))


def report(pairs, ignore=255, num_classes=0, instances=False, cls=1,
           connectivity=8):
    """Expected report for a list of (name, pred, gt) whole images."""
    cm = np.zeros((256, 256), np.int64)
    ignored = 0
    images = []
    for name, pred, gt in pairs:
        c, ig = confusion(pred, gt, ignore)
        cm += c
        ignored += ig
        if instances:
            valid = gt != ignore if ignore is not None else np.ones(gt.shape, bool)
            counts = instance_counts(objects(gt, valid, cls, connectivity),
                                     objects(pred, valid, cls, connectivity))
            images.append({"image": name, **counts, **instance_metrics(counts)})
    k = n_classes(cm, num_classes)
    scores = class_scores(cm, k)
    total = int(cm.sum())
    rep = dict(pixel=dict(num_classes=k, pixels=total, ignored_pixels=ignored,
                          accuracy=ratio(int(np.trace(cm)), total),
                          mean_dice=mean_defined([s["dice"] for s in scores]),
                          mean_iou=mean_defined([s["iou"] for s in scores]),
                          classes=[dict({"class": i}, **s) for i, s in enumerate(scores)],
                          confusion=cm[:k, :k].tolist()))
    if instances:
        keys = ["gt_objects", "pred_objects", "tp", "fp", "fn", "iou_sum",
                "aji_intersection", "aji_union"]
        agg = {key: sum(im[key] for im in images) for key in keys}
        agg.update(instance_metrics(dict(agg, object_dice=None)))
        del agg["object_dice"]
        mean = {}
        for key in ["precision", "recall", "f1", "sq", "dq", "pq", "aji", "object_dice"]:
            mean[key] = mean_defined([im[key] for im in images])
        rep["instance"] = dict(images=images, n_images=len(images), aggregate=agg,
                               mean_over_images=mean)
    return rep


def compare(got, want, path="", tol=1e-7):
    """List of differences between a report and the expected subset."""
    diffs = []
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{path}: got {got!r}, want a dict"]
        for k, v in want.items():
            if k not in got:
                diffs.append(f"{path}.{k}: missing")
            else:
                diffs += compare(got[k], v, f"{path}.{k}", tol)
    elif isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: got {got!r}, want {want!r}"]
        for i, (g, w) in enumerate(zip(got, want)):
            diffs += compare(g, w, f"{path}[{i}]", tol)
    elif want is None:
        if got is not None:
            diffs.append(f"{path}: got {got!r}, want null")
    elif isinstance(want, str):
        if got != want:
            diffs.append(f"{path}: got {got!r}, want {want!r}")
    else:
        if got is None or not math.isclose(float(got), float(want), rel_tol=tol, abs_tol=tol):
            diffs.append(f"{path}: got {got!r}, want {want!r}")
    return diffs


def write_png(path, arr):
    """Grayscale PNG of exactly the array's depth (uint8: 8-bit, uint16:
    16-bit, whatever the values; imageio would store small 16-bit values
    as 8-bit), or RGB for an H x W x 3 uint8 array."""
    import struct
    import zlib
    arr = np.ascontiguousarray(arr)
    depth = 16 if arr.dtype == np.uint16 else 8
    ctype = 2 if arr.ndim == 3 else 0
    rows = arr.astype(">u2") if depth == 16 else arr.astype(np.uint8)
    raw = b"".join(b"\0" + rows[y].tobytes() for y in range(arr.shape[0]))

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xffffffff))
    ihdr = struct.pack(">IIBBBBB", arr.shape[1], arr.shape[0], depth, ctype, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def eval_tool():
    build = os.environ.get("WSISEG_BUILD_ROOT", "build")
    return os.path.join(build, "elements", "core", "wsiseg-eval")


def run_tool(*args):
    return subprocess.run([eval_tool(), *map(str, args)], capture_output=True,
                          text=True, timeout=60)


def run_tool_json(*args):
    proc = run_tool(*args)
    if proc.returncode != 0 or "runtime error:" in proc.stderr or "Sanitizer" in proc.stderr:
        raise RuntimeError(f"wsiseg-eval failed: {proc.stderr}")
    return json.loads(proc.stdout)
