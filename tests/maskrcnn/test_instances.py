"""Instance label patches <-> Mask R-CNN (models/maskrcnn/wsimrcnn-instances.c)
vs numpy / torchvision: training targets from a GRAY16 instance patch (+ class
map) -- boxes (torchvision.ops.masks_to_boxes + 1 on x1, y1), labels by
majority class, binary masks, ignore pixels, tiny / sparse ids, min_area, the
instance limit and bad class values; and the GRAY16 label patch painted from
detections (masks pasted as torchvision's paste_masks_in_image, highest score
wins each pixel, ids 1.. by descending score, empty detections left out).
Run through test_parity.py LIB instances."""
import ctypes as C

import numpy as np
import torch
from torchvision.ops import masks_to_boxes
from torchvision.models.detection.roi_heads import paste_masks_in_image

import test_parity as tp

lib = tp.lib
ERR = C.create_string_buffer(512)


class Targets(C.Structure):
    _fields_ = [("n", C.c_int), ("h", C.c_int), ("w", C.c_int),
                ("ids", C.POINTER(C.c_uint16)), ("boxes", C.POINTER(C.c_float)),
                ("labels", C.POINTER(C.c_int32)), ("masks", C.POINTER(C.c_float)),
                ("areas", C.POINTER(C.c_uint32)), ("n_unclassed", C.c_int),
                ("n_small", C.c_int), ("n_ignored", C.c_size_t)]


class Obj(C.Structure):
    _fields_ = [("id", C.c_uint16), ("class_id", C.c_int32), ("score", C.c_float),
                ("box", C.c_float * 4), ("x0", C.c_int), ("y0", C.c_int), ("x1", C.c_int),
                ("y1", C.c_int), ("area", C.c_uint32), ("detection", C.c_int)]


lib.wsimrcnn_targets_from_labels.argtypes = [C.c_void_p, C.c_size_t, C.c_int, C.c_int,
                                             C.c_void_p, C.c_size_t, C.c_int, C.c_int, C.c_int,
                                             C.c_int, C.POINTER(Targets), C.c_char_p, C.c_size_t]
lib.wsimrcnn_targets_clear.argtypes = [C.POINTER(Targets)]
lib.wsimrcnn_paint.argtypes = [C.c_void_p] * 4 + [C.c_int, C.c_void_p, C.c_int, C.c_int, C.c_int,
                                                  C.c_float, C.c_void_p, C.c_size_t,
                                                  C.POINTER(Obj), C.c_char_p, C.c_size_t]


def expect(ok, what, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {what} {detail}")
    if not ok:
        tp.failures.append(f"{what} {detail}")


def c_targets(inst, classes=None, n_classes=3, ignore=65535, limit=1000, min_area=1, pad=6):
    h, w = inst.shape
    buf = np.zeros((h, w + pad), np.uint16)       # a row stride wider than the patch
    buf[:, :w] = inst
    cbuf = None
    if classes is not None:
        cbuf = np.zeros((h, w + 3), np.uint8)
        cbuf[:, :w] = classes
    t = Targets()
    rc = lib.wsimrcnn_targets_from_labels(buf.ctypes.data, buf.strides[0], w, h,
                                          None if cbuf is None else cbuf.ctypes.data,
                                          0 if cbuf is None else cbuf.strides[0], n_classes,
                                          ignore, limit, min_area, C.byref(t), ERR, 512)
    if rc != 0:
        return None, ERR.value.decode()
    n = t.n
    out = {"n": n, "n_unclassed": t.n_unclassed, "n_small": t.n_small,
           "n_ignored": t.n_ignored}
    if n:
        out["ids"] = np.ctypeslib.as_array(t.ids, (n,)).copy()
        out["boxes"] = np.ctypeslib.as_array(t.boxes, (n, 4)).copy()
        out["labels"] = np.ctypeslib.as_array(t.labels, (n,)).copy()
        out["masks"] = np.ctypeslib.as_array(t.masks, (n, h, w)).copy()
        out["areas"] = np.ctypeslib.as_array(t.areas, (n,)).copy()
    lib.wsimrcnn_targets_clear(C.byref(t))
    return out, ""


def ref_targets(inst, classes=None, ignore=65535, min_area=1):
    ids = [int(i) for i in np.unique(inst) if i != 0 and i != ignore]
    ids = [i for i in ids if (inst == i).sum() >= min_area]
    masks = np.stack([(inst == i) for i in ids]).astype(np.float32) if ids else \
        np.zeros((0,) + inst.shape, np.float32)
    boxes = masks_to_boxes(torch.from_numpy(masks)).numpy() + np.float32([0, 0, 1, 1]) \
        if ids else np.zeros((0, 4), np.float32)
    labels, unclassed = [], 0
    for k, i in enumerate(ids):
        if classes is None:
            labels.append(1)
            continue
        v = classes[inst == i]
        v = v[(v != 0) & (v != 255)]
        if v.size == 0:
            labels.append(1)
            unclassed += 1
        else:
            cnt = np.bincount(v)
            labels.append(int(np.argmax(cnt)))     # first max: the lower class
    return {"ids": np.array(ids), "boxes": boxes, "labels": np.array(labels), "masks": masks,
            "n_unclassed": unclassed}


def synthetic(h, w, rng, n=12):
    inst = np.zeros((h, w), np.uint16)
    yy, xx = np.mgrid[0:h, 0:w]
    ids = rng.choice(np.arange(1, 65535), n, replace=False)
    ids[0] = 65534                         # the largest id that is not the ignore value
    for i in ids:
        cy, cx = rng.uniform(-5, h + 5), rng.uniform(-5, w + 5)   # some cut by the border
        ry, rx = rng.uniform(2, 12), rng.uniform(2, 12)
        inst[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = i
    inst[3, 5] = 77                        # a one-pixel instance
    inst[h - 1, w - 1] = 78                # another, in the corner
    inst[:, :4] = 65535                    # padding: ignore
    return inst


def check_targets(what, got, ref):
    if got is None:
        expect(False, what, "refused")
        return
    ok = got["n"] == len(ref["ids"])
    if ok and got["n"]:
        ok = (np.array_equal(got["ids"], ref["ids"]) and np.array_equal(got["boxes"], ref["boxes"])
              and np.array_equal(got["labels"], ref["labels"])
              and np.array_equal(got["masks"], ref["masks"])
              and np.array_equal(got["areas"], ref["masks"].sum(axis=(1, 2)).astype(np.uint32)))
    ok = ok and got["n_unclassed"] == ref["n_unclassed"]
    expect(ok, what, f"{got['n']} instances (numpy {len(ref['ids'])}), "
           f"{got['n_unclassed']} without class")


def paint_ref(boxes, scores, labels, masks, h, w, thr):
    pasted = paste_masks_in_image(torch.from_numpy(masks)[:, None], torch.from_numpy(boxes),
                                  (h, w))[:, 0].numpy()
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    owner = np.full((h, w), -1)
    for r, d in enumerate(order):
        owner[(owner < 0) & (pasted[d] >= thr)] = r
    out = np.zeros((h, w), np.uint16)
    objs = []
    for r, d in enumerate(order):
        sel = owner == r
        if not sel.any():
            continue
        out[sel] = len(objs) + 1
        ys, xs = np.nonzero(sel)
        objs.append((len(objs) + 1, d, int(sel.sum()), xs.min(), ys.min(), xs.max() + 1,
                     ys.max() + 1))
    return out, objs, pasted


def c_paint(boxes, scores, labels, masks, h, w, thr, pasted=None):
    n, m = len(scores), masks.shape[-1] if len(scores) else 28
    out = np.full((h, w + 5), 999, np.uint16)
    objs = (Obj * max(n, 1))()
    args = [np.ascontiguousarray(a) for a in (boxes, scores, labels, masks)]
    pm = None if pasted is None else np.ascontiguousarray(pasted, np.float32)
    k = lib.wsimrcnn_paint(*[a.ctypes.data for a in args], m,
                           None if pm is None else pm.ctypes.data, n, w, h, thr,
                           out.ctypes.data, out.strides[0], objs, ERR, 512)
    assert k >= 0, ERR.value.decode()
    return out[:, :w], [objs[i] for i in range(k)]


def main():
    rng = np.random.default_rng(7)
    # ---- targets
    for trial in range(3):
        h, w = (64, 96) if trial != 1 else (33, 47)
        inst = synthetic(h, w, rng)
        got, _ = c_targets(inst)
        check_targets(f"targets {h}x{w} trial {trial}, no class map", got, ref_targets(inst))
        classes = rng.integers(0, 4, (h, w)).astype(np.uint8)
        classes[rng.random((h, w)) < 0.2] = 255
        classes[inst == 77] = 0                   # an object without a class: class 1
        got, _ = c_targets(inst, classes, n_classes=4)
        check_targets(f"targets {h}x{w} trial {trial}, class map", got,
                      ref_targets(inst, classes))
        got, _ = c_targets(inst, min_area=5)
        ref = ref_targets(inst, min_area=5)
        check_targets(f"targets {h}x{w} trial {trial}, min_area 5", got, ref)
        expect(got["n_ignored"] == int((inst == 65535).sum()), "ignored pixels counted")
    # a class tie goes to the lower class
    inst = np.zeros((8, 8), np.uint16)
    inst[2:4, 2:4] = 5
    cls = np.zeros((8, 8), np.uint8)
    cls[2, 2:4] = 2
    cls[3, 2:4] = 1
    got, _ = c_targets(inst, cls)
    expect(got["labels"].tolist() == [1], "class tie: lower class", str(got["labels"]))
    # another ignore value, and none (-1: 65535 is an id then)
    inst = synthetic(40, 40, rng)
    got, _ = c_targets(inst, ignore=-1)
    check_targets("no ignore value: 65535 is an instance", got, ref_targets(inst, ignore=-1))
    inst[inst == 65535] = 9
    got, _ = c_targets(inst, ignore=9)
    check_targets("ignore value 9", got, ref_targets(inst, ignore=9))
    # empty patch, all-ignore patch
    got, _ = c_targets(np.zeros((32, 32), np.uint16))
    expect(got["n"] == 0, "empty patch: no instances")
    got, _ = c_targets(np.full((32, 32), 65535, np.uint16))
    expect(got["n"] == 0 and got["n_ignored"] == 1024, "all-ignore patch: no instances")
    # the limit and a class beyond the model
    inst = synthetic(64, 64, rng)
    n = len(ref_targets(inst)["ids"])
    got, msg = c_targets(inst, limit=n - 1)
    expect(got is None and f"has {n} instances, more than the limit of {n - 1}" in msg,
           "instance limit", msg)
    got, _ = c_targets(inst, limit=n)
    expect(got is not None and got["n"] == n, "exactly the limit is fine")
    cls = np.zeros((64, 64), np.uint8)
    cls[inst == ref_targets(inst)["ids"][0]] = 7
    got, msg = c_targets(inst, cls, n_classes=3)
    expect(got is None and "class map value 7" in msg and "n_classes 3" in msg,
           "class beyond the model", msg)

    # ---- painting
    h, w, m = 48, 64, 28
    for trial in range(3):
        n = 15
        x1 = rng.uniform(-8, w - 4, n)
        y1 = rng.uniform(-8, h - 4, n)
        boxes = np.stack([x1, y1, x1 + rng.uniform(1, 30, n), y1 + rng.uniform(1, 30, n)],
                         1).astype(np.float32)
        boxes[3] = [10, 10, 10.5, 10.5]                    # degenerate, tiny
        scores = rng.uniform(0.05, 1, n).astype(np.float32)
        scores[5] = scores[6]                              # a tie: lower index first
        boxes[6] = boxes[5]
        labels = rng.integers(1, 3, n).astype(np.int32)
        masks = rng.random((n, m, m)).astype(np.float32)
        masks[2] = 0.1                                     # never above the threshold
        thr = 0.5
        ref, objs, pasted = paint_ref(boxes, scores, labels, masks, h, w, thr)
        got, cobj = c_paint(boxes, scores, labels, masks, h, w, thr)
        ok = np.array_equal(got, ref) and len(cobj) == len(objs) and all(
            (o.id, o.detection, o.area, o.x0, o.y0, o.x1, o.y1) == r and
            o.class_id == labels[r[1]] and o.score == scores[r[1]] and
            list(o.box) == boxes[r[1]].tolist() for o, r in zip(cobj, objs))
        expect(ok, f"painting trial {trial}", f"{len(cobj)} objects of {n} detections "
               f"(numpy {len(objs)}), {int((got != ref).sum())} pixels differ")
        got2, cobj2 = c_paint(boxes, scores, labels, masks, h, w, thr, pasted)
        expect(np.array_equal(got2, got) and len(cobj2) == len(cobj),
               f"painting trial {trial} from pasted masks: same patch")
    got, cobj = c_paint(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                        np.zeros(0, np.int32), np.zeros((0, m, m), np.float32), h, w, 0.5)
    expect(not got.any() and not cobj, "no detections: an empty patch")
    if tp.failures:
        print(f"{len(tp.failures)} failures:", *tp.failures, sep="\n  ")
        return 1
    print("instance targets and painting equal numpy / torchvision")
    return 0
