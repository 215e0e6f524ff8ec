#!/usr/bin/python3
"""models/detect (wsidetect) against python3-torchvision 0.14, through ctypes.

Usage: test_vs_torchvision.py path/to/libwsidetect_ctypes.so
Exit 77 (meson SKIP) only when torch / torchvision cannot be imported.
Tolerance: |c - ref| <= 1e-5 * |ref| + 1e-5 (values); exact for indices and anchors.
"""
import ctypes as C
import math
import os
import sys

if os.environ.get("WSISEG_ASAN_PRELOAD") and "LD_PRELOAD" not in os.environ:
    # an ASan-built module needs the runtime loaded first
    os.environ["LD_PRELOAD"] = os.environ["WSISEG_ASAN_PRELOAD"]
    os.environ.setdefault("ASAN_OPTIONS", "detect_leaks=0")
    os.execv(sys.executable, [sys.executable] + sys.argv)

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
    import torchvision
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList
    from torchvision.models.detection import roi_heads as tv_roi_heads
    from torchvision.models.detection.rpn import RegionProposalNetwork
    from torchvision.ops import boxes as box_ops
    from torchvision.ops import roi_align, MultiScaleRoIAlign
    from torchvision.ops import poolers as tv_poolers
except ImportError as e:  # a declared test dependency (pipelines/install-deps.sh --tests)
    print(f"SKIP: torchvision missing ({e})")
    sys.exit(77)

torch.set_num_threads(1)
lib = C.CDLL(sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.environ.get("WSISEG_BUILD_ROOT", "build"), "tests", "detect", "libwsidetect_ctypes.so"))

P = C.c_void_p
I = C.c_int
Fl = C.c_float
D = C.c_double


def sig(name, res, *args):
    f = getattr(lib, name)
    f.restype = res
    f.argtypes = list(args)
    return f


wsidet_cell_anchors = sig("wsidet_cell_anchors", I, P, I, P, I, P)
wsidet_grid_anchors = sig("wsidet_grid_anchors", I, P, I, I, I, I, I, P)
wsidet_anchor_stride = sig("wsidet_anchor_stride", I, I, I)
wsidet_box_coder_init = sig("wsidet_box_coder_init", None, P, Fl, Fl, Fl, Fl)
wsidet_box_encode = sig("wsidet_box_encode", None, P, P, P, I, P)
wsidet_box_decode = sig("wsidet_box_decode", None, P, P, I, P, I, P)
wsidet_clip_boxes = sig("wsidet_clip_boxes", None, P, I, I, I)
wsidet_remove_small_boxes = sig("wsidet_remove_small_boxes", I, P, I, Fl, P)
wsidet_box_iou = sig("wsidet_box_iou", None, P, I, P, I, P)
wsidet_nms = sig("wsidet_nms", I, P, P, I, D, P)
wsidet_batched_nms = sig("wsidet_batched_nms", I, P, P, P, I, D, P)
wsidet_topk_per_level = sig("wsidet_topk_per_level", I, P, P, I, I, P)
wsidet_match = sig("wsidet_match", I, P, I, I, Fl, Fl, I, P)
wsidet_match_labels = sig("wsidet_match_labels", None, P, I, P, P)
wsidet_rng_seed = sig("wsidet_rng_seed", None, P, C.c_uint64)
wsidet_rng_next = sig("wsidet_rng_next", C.c_uint64, P)
wsidet_randperm = sig("wsidet_randperm", None, P, I, P)
wsidet_sample_pos_neg = sig("wsidet_sample_pos_neg", I, P, I, I, D, P, P, P, P, P, P, P)
wsidet_roi_align_forward = sig("wsidet_roi_align_forward", I, P, P, I, I, I, I, P, I, P)
wsidet_roi_align_backward = sig("wsidet_roi_align_backward", I, P, P, I, I, I, I, P, I, P)
wsidet_roi_align_forward_nhwc = sig("wsidet_roi_align_forward_nhwc", I, P, P, I, I, I, I, P, I, P)
wsidet_infer_scale = sig("wsidet_infer_scale", D, I, I)
wsidet_level_mapper_init = sig("wsidet_level_mapper_init", None, P, D, D)
wsidet_map_levels = sig("wsidet_map_levels", None, P, P, I, I, I, P)
wsidet_ms_fwd = sig("wsidet_multiscale_roi_align_forward", I, P, I, I, I, P, I, I, I, P, I, P, P)
wsidet_ms_bwd = sig("wsidet_multiscale_roi_align_backward", I, P, I, I, I, P, I, I, I, P, I, P)
wsidet_bce = sig("wsidet_bce_with_logits", D, P, P, I, P)
wsidet_smooth_l1 = sig("wsidet_smooth_l1", D, P, P, I, Fl, D, P)
wsidet_ce = sig("wsidet_cross_entropy", D, P, P, I, I, P)
wsidet_rpn_loss = sig("wsidet_rpn_loss", I, P, P, P, P, P, I, P, I, I, Fl, P, P, P, P)
wsidet_fastrcnn_loss = sig("wsidet_fastrcnn_loss", I, P, P, P, P, I, I, I, Fl, P, P, P, P)
wsidet_project_masks = sig("wsidet_project_masks", I, P, I, I, I, P, P, I, I, P)
wsidet_rpn_proposals = sig("wsidet_rpn_proposals", I, P, P, P, P, P, I, I, I, P, P)
wsidet_postprocess = sig("wsidet_postprocess_detections", I, P, P, P, P, P, I, I, I, I, P, P, P)
wsidet_paste_masks = sig("wsidet_paste_masks", I, P, P, I, I, I, I, I, P)
wsidet_rpn_targets = sig("wsidet_rpn_targets", I, P, I, P, I, Fl, Fl, P, P)
wsidet_roi_targets = sig("wsidet_roi_targets", I, P, I, P, P, I, Fl, Fl, I, D, P, P, P, P, P, P)
wsidet_maskrcnn_loss = sig("wsidet_maskrcnn_loss", D, P, P, P, I, I, I, P)


class BoxCoder(C.Structure):
    _fields_ = [("wx", Fl), ("wy", Fl), ("ww", Fl), ("wh", Fl), ("clip", Fl)]


class RoiAlignP(C.Structure):
    _fields_ = [("pooled_h", I), ("pooled_w", I), ("spatial_scale", Fl),
                ("sampling_ratio", I), ("aligned", I)]


class LevelMapper(C.Structure):
    _fields_ = [("k_min", I), ("k_max", I), ("canonical_scale", Fl),
                ("canonical_level", Fl), ("eps", Fl)]


class FeatureLevel(C.Structure):
    _fields_ = [("data", P), ("grad", P), ("h", I), ("w", I), ("scale", D), ("nhwc", I)]


class RpnParams(C.Structure):
    _fields_ = [("pre_nms_top_n", I), ("post_nms_top_n", I), ("nms_thresh", D),
                ("score_thresh", Fl), ("min_size", Fl)]


class DetParams(C.Structure):
    _fields_ = [("score_thresh", Fl), ("nms_thresh", D), ("detections_per_img", I), ("min_size", Fl)]


class Rng(C.Structure):
    _fields_ = [("s", C.c_uint64)]


def f32(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def i32(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.int32))


def ptr(a):
    return a.ctypes.data_as(P)


FAILS = []
CHECKS = [0]


def close(name, got, ref, rtol=1e-5, atol=1e-5):
    CHECKS[0] += 1
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        FAILS.append(f"{name}: shape {got.shape} vs {ref.shape}")
        return
    with np.errstate(invalid="ignore"):
        bad = ~((got == ref) | (np.abs(got - ref) <= atol + rtol * np.abs(ref)) | (np.isnan(got) & np.isnan(ref)))
    if bad.any():
        i = np.flatnonzero(bad)[0]
        FAILS.append(f"{name}: {bad.sum()} of {bad.size} differ, first at {i}: "
                     f"{got.flat[i]!r} vs {ref.flat[i]!r}")


def equal(name, got, ref):
    CHECKS[0] += 1
    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape or not np.array_equal(got, ref, equal_nan=True):
        FAILS.append(f"{name}: {got.tolist()[:20]} vs {ref.tolist()[:20]} "
                     f"(shapes {got.shape} {ref.shape})")


rs = np.random.RandomState(1234)


def rand_boxes(n, size=100.0, minwh=0.0, maxwh=40.0):
    xy = rs.uniform(-10, size, (n, 2))
    wh = rs.uniform(minwh, maxwh, (n, 2))
    return f32(np.concatenate([xy, xy + wh], 1))


# ---- 1. anchors ---------------------------------------------------------------------
def test_anchors():
    configs = [
        (((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5),
        (((8, 16, 24), (40,)), ((0.25, 0.5, 1.0, 2.0, 3.0), (1.0, 1.7))),
        (((11, 13),), ((0.33, 0.75),)),
    ]
    for sizes, ratios in configs:
        ag = AnchorGenerator(sizes, ratios)
        H, W = 203, 317
        grids = [(max(1, H // (4 * 2 ** l)), max(1, W // (4 * 2 ** l))) for l in range(len(sizes))]
        il = ImageList(torch.zeros(1, 3, H, W), [(H, W)])
        feats = [torch.zeros(1, 1, gh, gw) for gh, gw in grids]
        ref = ag(il, feats)[0].numpy()
        outs = []
        for l, (gh, gw) in enumerate(grids):
            s, r = f32(sizes[l]), f32(ratios[l])
            cell = np.zeros((len(s) * len(r), 4), np.float32)
            assert wsidet_cell_anchors(ptr(s), len(s), ptr(r), len(r), ptr(cell)) == 0
            equal(f"cell anchors {sizes[l]} {ratios[l]}", cell,
                  ag.generate_anchors(list(sizes[l]), list(ratios[l])).numpy())
            sh, sw = wsidet_anchor_stride(H, gh), wsidet_anchor_stride(W, gw)
            out = np.zeros((gh * gw * len(cell), 4), np.float32)
            assert wsidet_grid_anchors(ptr(cell), len(cell), gh, gw, sh, sw, ptr(out)) == len(out)
            outs.append(out)
        equal(f"anchors {sizes}", np.concatenate(outs), ref)


# ---- 2. box coding --------------------------------------------------------------------
def test_box_coding():
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        tv = det_utils.BoxCoder(weights)
        bc = BoxCoder()
        wsidet_box_coder_init(C.byref(bc), *weights)
        n = 300
        ref_boxes = rand_boxes(n, minwh=0.5)
        gt = rand_boxes(n, minwh=0.5)
        gt[:5] = ref_boxes[:5]  # zero targets
        out = np.zeros((n, 4), np.float32)
        wsidet_box_encode(C.byref(bc), ptr(gt), ptr(ref_boxes), n, ptr(out))
        close(f"encode {weights}", out, tv.encode_single(torch.from_numpy(gt),
                                                          torch.from_numpy(ref_boxes)).numpy())
        for k in (1, 3):
            codes = f32(rs.normal(0, 1.5, (n, 4 * k)))
            codes[:10, 2::4] = 20.0  # beyond bbox_xform_clip * weight
            codes[10:20, 3::4] = -20.0
            dec = np.zeros((n, k, 4), np.float32)
            wsidet_box_decode(C.byref(bc), ptr(codes), k, ptr(ref_boxes), n, ptr(dec))
            r = tv.decode_single(torch.from_numpy(codes), torch.from_numpy(ref_boxes))
            close(f"decode {weights} k={k}", dec, r.reshape(n, k, 4).numpy())
    # clip + remove small (borders, degenerate, inverted)
    b = rand_boxes(200, size=60.0, maxwh=30.0)
    b[:5] = [[0, 0, 0, 0], [-5, -5, 0, 0], [50, 40, 50, 40], [10, 10, 10.0005, 30], [20, 20, 10, 10]]
    c = b.copy()
    wsidet_clip_boxes(ptr(c), len(c), 45, 55)
    rc = box_ops.clip_boxes_to_image(torch.from_numpy(b), (45, 55))
    equal("clip_boxes_to_image", c, rc.numpy())
    for ms in (1e-3, 1e-2, 0.0, 5.0):
        keep = np.zeros(len(c), np.int32)
        m = wsidet_remove_small_boxes(ptr(c), len(c), ms, ptr(keep))
        equal(f"remove_small_boxes {ms}", keep[:m], box_ops.remove_small_boxes(rc, ms).numpy())


# ---- 3. IoU, NMS, top-k ---------------------------------------------------------------
def nms_cases():
    cases = []
    for n in (0, 1, 7, 200, 1000):
        b = rand_boxes(n, size=200.0, maxwh=60.0)
        s = f32(rs.uniform(0, 1, n))
        cases.append((f"random{n}", b, s))
    # ties in scores, duplicates, degenerate boxes, boxes on borders
    b = rand_boxes(120, size=50.0, maxwh=30.0)
    b[10:20] = b[0]               # duplicates of box 0
    b[20:25] = [5, 5, 5, 5]       # zero area
    b[25:30] = [5, 5, 5, 25]      # zero width
    b[30:35] = [0, 0, 64, 64]     # whole-image boxes
    s = f32(rs.randint(0, 6, 120) / 5.0)  # many exact ties
    cases.append(("ties+degenerate", b, s))
    # a ladder of boxes whose IoU with the first hits typical thresholds exactly-ish
    lad = f32([[0, 0, 10, 10]] + [[0, 0, 10, 10 * t] for t in np.linspace(0.3, 1.0, 29)])
    cases.append(("ladder", lad, f32(np.linspace(1, 0, len(lad)))))
    return cases


def test_iou_nms():
    for name, b, s in nms_cases():
        n = len(b)
        iou = np.zeros((n, n), np.float32)
        wsidet_box_iou(ptr(b), n, ptr(b), n, ptr(iou))
        if n:
            close(f"box_iou {name}", iou, box_ops.box_iou(torch.from_numpy(b), torch.from_numpy(b)).numpy(),
                  rtol=1e-6, atol=1e-7)
        for thr in (0.0, 0.3, 0.5, 0.7, 1.0, 0.7000000000000001):
            keep = np.zeros(max(n, 1), np.int32)
            m = wsidet_nms(ptr(b), ptr(s), n, thr, ptr(keep))
            ref = torchvision.ops.nms(torch.from_numpy(b), torch.from_numpy(s), thr).numpy()
            equal(f"nms {name} thr={thr}", keep[:m], ref)
            for ncls in (1, 3, 17):
                idx = i32(rs.randint(0, ncls, n))
                m = wsidet_batched_nms(ptr(b), ptr(s), ptr(idx), n, thr, ptr(keep))
                tb, ts, ti = torch.from_numpy(b), torch.from_numpy(s), torch.from_numpy(idx).long()
                ref = box_ops._batched_nms_vanilla(tb, ts, ti, thr).numpy()
                if len(np.unique(s)) == len(s):  # the vanilla path re-sorts unstably on ties
                    equal(f"batched_nms {name} thr={thr} cls={ncls}", keep[:m], ref)
                else:
                    equal(f"batched_nms set {name} thr={thr} cls={ncls}", np.sort(keep[:m]), np.sort(ref))
                if 0 < n <= 1000 and name.startswith("random"):
                    # the public entry (coordinate trick below 4000 numbers)
                    equal(f"batched_nms public {name} thr={thr} cls={ncls}", keep[:m],
                          box_ops.batched_nms(tb, ts, ti, thr).numpy())
    # per-level top-k (RPN pre_nms_top_n), distinct scores
    sizes = [3 * 50 * 50, 3 * 25 * 25, 3 * 13 * 13, 3 * 7 * 7, 3 * 4 * 4]
    sc = f32(rs.permutation(sum(sizes)) / float(sum(sizes)) - 0.5)
    for k in (1, 48, 1000, 10000):
        idx = np.zeros(sum(sizes), np.int32)
        m = wsidet_topk_per_level(ptr(sc), ptr(i32(sizes)), len(sizes), k, ptr(idx))
        ref, off = [], 0
        for nl in sizes:
            ref.append(torch.from_numpy(sc[off:off + nl]).topk(min(k, nl)).indices.numpy() + off)
            off += nl
        equal(f"topk per level k={k}", idx[:m], np.concatenate(ref))


def test_proposals_detections():
    # RPN: anchors of a 160x200 image, 4 levels, decoded / top-k / clipped / NMS per level
    H, W = 160, 200
    ag = AnchorGenerator(((16,), (32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 4)
    grids = [(H // s, W // s) for s in (4, 8, 16, 32)]
    anchors = ag(ImageList(torch.zeros(1, 3, H, W), [(H, W)]), [torch.zeros(1, 1, *g) for g in grids])[0]
    sizes = [3 * gh * gw for gh, gw in grids]
    n = anchors.shape[0]
    for pre, post, thr, st in [(1000, 1000, 0.7, 0.0), (300, 200, 0.5, 0.3), (2000, 2000, 0.7, 0.0), (50, 40, 0.0, 0.0)]:
        obj = f32(rs.normal(0, 2, n))
        dl = f32(rs.normal(0, 0.4, (n, 4)))
        dl[:20, 2:] = 8.0  # clipped dw/dh, boxes beyond the image
        rpn = RegionProposalNetwork(None, None, 0.7, 0.3, 256, 0.5, dict(testing=pre), dict(testing=post), thr,
                                    score_thresh=st)
        rpn.eval()
        props = rpn.box_coder.decode(torch.from_numpy(dl), [anchors]).view(1, -1, 4)
        rb, rsc = rpn.filter_proposals(props, torch.from_numpy(obj), [(H, W)], sizes)
        pp = RpnParams(pre, post, thr, st, 1e-3)
        ob, osc = np.zeros((post, 4), np.float32), np.zeros(post, np.float32)
        m = wsidet_rpn_proposals(C.byref(pp), ptr(obj), ptr(dl), ptr(f32(anchors.numpy())), ptr(i32(sizes)),
                                 len(sizes), H, W, ptr(ob), ptr(osc))
        close(f"rpn proposals boxes pre={pre} post={post}", ob[:max(m, 0)], rb[0].numpy())
        close(f"rpn proposals scores pre={pre} post={post}", osc[:max(m, 0)], rsc[0].numpy())
    # box head post-processing
    from torchvision.models.detection.roi_heads import RoIHeads
    for nprop, ncls, st, nt, dpi in [(300, 2, 0.05, 0.5, 100), (500, 4, 0.05, 0.5, 100), (100, 3, 0.2, 0.3, 10),
                                     (0, 3, 0.05, 0.5, 100)]:
        props = rand_boxes(nprop, size=180.0, minwh=1.0, maxwh=80.0)
        lg = f32(rs.normal(0, 2, (nprop, ncls)))
        br = f32(rs.normal(0, 1, (nprop, ncls * 4)))
        heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, (10.0, 10.0, 5.0, 5.0), st, nt, dpi)
        rb, rsc, rl = heads.postprocess_detections(torch.from_numpy(lg), torch.from_numpy(br),
                                                   [torch.from_numpy(props)], [(H, W)])
        bc = BoxCoder()
        wsidet_box_coder_init(C.byref(bc), 10.0, 10.0, 5.0, 5.0)
        dp = DetParams(st, nt, dpi, 1e-2)
        ob, osc, ol = np.zeros((dpi, 4), np.float32), np.zeros(dpi, np.float32), np.zeros(dpi, np.int32)
        m = wsidet_postprocess(C.byref(dp), C.byref(bc), ptr(lg), ptr(br), ptr(props), nprop, ncls, H, W,
                               ptr(ob), ptr(osc), ptr(ol))
        tag = f"postprocess n={nprop} classes={ncls}"
        close(tag + " boxes", ob[:max(m, 0)], rb[0].numpy())
        close(tag + " scores", osc[:max(m, 0)], rsc[0].numpy())
        equal(tag + " labels", ol[:max(m, 0)], rl[0].numpy())
    # masks pasted into the image (inference output)
    for k, M, (ih, iw) in [(20, 28, (90, 110)), (5, 14, (40, 30)), (0, 28, (10, 10))]:
        masks = f32(1 / (1 + np.exp(-rs.normal(0, 3, (k, 1, M, M)))))
        bb = rand_boxes(k, size=float(min(ih, iw)), minwh=0.0, maxwh=60.0)
        if k:
            bb[:4] = [[0, 0, iw, ih], [3, 3, 3, 3], [iw - 2, ih - 2, iw, ih], [0.4, 0.6, 1.2, 50]]
        bb = np.clip(bb, 0, [iw, ih, iw, ih]).astype(np.float32)
        ref = tv_roi_heads.paste_masks_in_image(torch.from_numpy(masks), torch.from_numpy(bb), (ih, iw))
        o = np.zeros((k, 1, ih, iw), np.float32)
        assert wsidet_paste_masks(ptr(masks), ptr(bb), k, M, 1, ih, iw, ptr(o)) == 0
        close(f"paste_masks_in_image k={k} M={M}", o, ref.numpy())


# ---- 4. matcher / sampler ---------------------------------------------------------------
def test_matcher_sampler():
    for trial in range(12):
        ng, npred = [(0, 10), (1, 50), (5, 300), (12, 40)][trial % 4]
        if ng == 0:
            q = np.zeros((0, npred), np.float32)
        elif trial % 3 == 0:
            q = f32(rs.randint(0, 11, (ng, npred)) / 10.0)  # exact thresholds and ties
        else:
            gt = rand_boxes(ng, size=80)
            pr = np.concatenate([gt + f32(rs.normal(0, 3, gt.shape)), rand_boxes(npred - ng, size=80)])
            q = box_ops.box_iou(torch.from_numpy(gt), torch.from_numpy(f32(pr))).numpy()
        for hi, lo, allow in [(0.7, 0.3, True), (0.5, 0.5, False), (0.7, 0.3, False), (0.5, 0.5, True)]:
            m = np.zeros(npred, np.int32)
            assert wsidet_match(ptr(f32(q)), ng, npred, hi, lo, int(allow), ptr(m)) == 0
            if ng == 0:
                ref = np.full(npred, -1)
            else:
                ref = det_utils.Matcher(hi, lo, allow)(torch.from_numpy(f32(q))).numpy()
            equal(f"matcher trial {trial} {hi},{lo},{allow}", m, ref)
            gl = i32(rs.randint(1, 5, max(ng, 1)))
            lab = np.zeros(npred, np.int32)
            wsidet_match_labels(ptr(m), npred, ptr(gl) if ng else None, ptr(lab))
            exp = np.where(m >= 0, gl[np.clip(m, 0, None)] if ng else 1, np.where(m == -1, 0, -1))
            equal(f"match labels trial {trial}", lab, exp)
    # sampler: the same permutations on both sides (torch.randperm replaced by the C ones)
    for n, batch, frac, seed in [(500, 256, 0.5, 1), (3000, 256, 0.5, 7), (40, 512, 0.25, 3), (0, 256, 0.5, 5)]:
        labels = i32(rs.choice([-1, 0, 0, 0, 1, 2], n))
        pos_m, neg_m = np.zeros(max(n, 1), np.uint8), np.zeros(max(n, 1), np.uint8)
        pi, ni = np.zeros(max(n, 1), np.int32), np.zeros(max(n, 1), np.int32)
        npos, nneg = I(), I()
        rng = Rng()
        wsidet_rng_seed(C.byref(rng), seed)
        assert wsidet_sample_pos_neg(ptr(labels), n, batch, frac, C.byref(rng), ptr(pos_m), ptr(neg_m),
                                     ptr(pi), C.byref(npos), ptr(ni), C.byref(nneg)) == 0
        rng2 = Rng()
        wsidet_rng_seed(C.byref(rng2), seed)
        perms = []
        for cnt in (int((labels >= 1).sum()), int((labels == 0).sum())):
            sub = Rng()
            wsidet_rng_seed(C.byref(sub), wsidet_rng_next(C.byref(rng2)))
            p = np.zeros(max(cnt, 1), np.int32)
            wsidet_randperm(C.byref(sub), cnt, ptr(p))
            perms.append(torch.from_numpy(p[:cnt].astype(np.int64)))
        orig = torch.randperm
        it = iter(perms)
        torch.randperm = lambda k, device=None: next(it)
        try:
            rp, rn = det_utils.BalancedPositiveNegativeSampler(batch, frac)([torch.from_numpy(labels)])
        finally:
            torch.randperm = orig
        equal(f"sampler pos n={n}", pos_m[:n], rp[0].numpy())
        equal(f"sampler neg n={n}", neg_m[:n], rn[0].numpy())
        equal(f"sampler pos idx n={n}", pi[:npos.value], np.flatnonzero(rp[0].numpy()))
        equal(f"sampler neg idx n={n}", ni[:nneg.value], np.flatnonzero(rn[0].numpy()))


def test_targets():
    from torchvision.models.detection.roi_heads import RoIHeads
    H, W = 128, 160
    ag = AnchorGenerator(((16,), (32,), (64,)), ((0.5, 1.0, 2.0),) * 3)
    anchors = ag(ImageList(torch.zeros(1, 3, H, W), [(H, W)]),
                 [torch.zeros(1, 1, H // s, W // s) for s in (4, 8, 16)])[0]
    an = f32(anchors.numpy())
    n = len(an)
    rpn = RegionProposalNetwork(None, None, 0.7, 0.3, 256, 0.5, dict(training=1), dict(training=1), 0.7)
    for ng in (0, 1, 9, 40):
        gt = rand_boxes(ng, size=130.0, minwh=4.0, maxwh=70.0)
        if ng:
            gt[0] = an[n // 2]  # an exact anchor: IoU 1
        lab, tg = np.zeros(n, np.float32), np.zeros((n, 4), np.float32)
        assert wsidet_rpn_targets(ptr(an), n, ptr(gt), ng, 0.7, 0.3, ptr(lab), ptr(tg)) == 0
        rl, rm = rpn.assign_targets_to_anchors([anchors], [{"boxes": torch.from_numpy(gt)}])
        rt = rpn.box_coder.encode(rm, [anchors])[0]
        equal(f"rpn labels ng={ng}", lab, rl[0].numpy())
        close(f"rpn targets ng={ng}", tg, rt.numpy())
    for ng, nprop, ncls, seed in ((5, 300, 3, 1), (0, 100, 2, 2), (30, 2000, 4, 3), (3, 0, 2, 4)):
        gt = rand_boxes(ng, size=130.0, minwh=4.0, maxwh=50.0)
        gl = i32(rs.randint(1, ncls, ng))
        props = np.concatenate([gt[rs.randint(0, max(ng, 1), nprop)] + f32(rs.normal(0, 4, (nprop, 4)))
                                if ng else rand_boxes(nprop, size=130.0)]).astype(np.float32) if nprop \
            else np.zeros((0, 4), np.float32)
        cap = max(512, nprop + ng)
        o_r, o_l = np.zeros((cap, 4), np.float32), np.zeros(cap, np.int32)
        o_m, o_t = np.zeros(cap, np.int32), np.zeros((cap, 4), np.float32)
        bc = BoxCoder()
        wsidet_box_coder_init(C.byref(bc), 10.0, 10.0, 5.0, 5.0)
        rng = Rng()
        wsidet_rng_seed(C.byref(rng), seed)
        k = wsidet_roi_targets(ptr(props), nprop, ptr(gt), ptr(gl), ng, 0.5, 0.5, 512, 0.25, C.byref(bc),
                               C.byref(rng), ptr(o_r), ptr(o_l), ptr(o_m), ptr(o_t))
        heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, (10.0, 10.0, 5.0, 5.0), 0.05, 0.5, 100)
        tgts = [{"boxes": torch.from_numpy(gt), "labels": torch.from_numpy(gl).long()}]

        def sampler(labels_list, seed=seed):
            lbl = i32(labels_list[0].numpy())
            pm, nm = np.zeros(len(lbl), np.uint8), np.zeros(len(lbl), np.uint8)
            r2 = Rng()
            wsidet_rng_seed(C.byref(r2), seed)
            wsidet_sample_pos_neg(ptr(lbl), len(lbl), 512, 0.25, C.byref(r2), ptr(pm), ptr(nm), None, None,
                                  None, None)
            return [torch.from_numpy(pm.astype(bool))], [torch.from_numpy(nm.astype(bool))]
        heads.fg_bg_sampler = sampler
        rp, rmi, rla, rrt = heads.select_training_samples([torch.from_numpy(props)], tgts)
        tag = f"roi targets ng={ng} nprop={nprop}"
        equal(tag + " rois", o_r[:k], rp[0].numpy())
        equal(tag + " labels", o_l[:k], rla[0].numpy())
        equal(tag + " matched", o_m[:k], rmi[0].numpy())
        close(tag + " targets", o_t[:k], rrt[0].numpy())


# ---- 5. RoIAlign ------------------------------------------------------------------------
def roi_cases(n, h, w, scale, k):
    H, W = h / scale, w / scale
    x1 = rs.uniform(-0.2 * W, W, k)
    y1 = rs.uniform(-0.2 * H, H, k)
    bw = rs.uniform(0, 0.6 * W, k)
    bh = rs.uniform(0, 0.6 * H, k)
    b = np.stack([rs.randint(0, n, k), x1, y1, x1 + bw, y1 + bh], 1)
    edge = [[0, 0, 0, W, H], [0, 0, 0, 0, 0], [n - 1, W - 1, H - 1, W, H], [0, W, H, W + 10, H + 10],
            [0, -30, -30, -1, -1], [0, 3, 3, 3, 20], [n - 1, 5, 5, 4, 4], [0, -W, -H, 2 * W, 2 * H],
            [0, 0.5, 0.5, 1.5, 1.5], [0, W - 0.25, 0, W + 0.25, H]]
    return f32(np.concatenate([b, edge])[:k + len(edge)])


def test_roi_align():
    cfgs = [(2, 5, 13, 17, 0.25, (7, 7), -1), (1, 3, 9, 9, 1.0, (3, 4), 2), (2, 4, 16, 12, 0.5, (14, 14), 0),
            (1, 1, 20, 20, 0.125, (2, 2), 1), (3, 40, 11, 7, 0.0625, (5, 3), 3)]
    for n, c, h, w, scale, out, sr in cfgs:
        x = f32(rs.normal(0, 1, (n, c, h, w)))
        rois = roi_cases(n, h, w, scale, 40)
        k = len(rois)
        for aligned in (False, True):
            p = RoiAlignP(out[0], out[1], scale, sr, int(aligned))
            o = np.zeros((k, c) + out, np.float32)
            assert wsidet_roi_align_forward(C.byref(p), ptr(x), n, c, h, w, ptr(rois), k, ptr(o)) == 0
            xt = torch.from_numpy(x).requires_grad_(True)
            r = roi_align(xt, torch.from_numpy(rois), out, scale, sr, aligned)
            tag = f"roi_align n={n} c={c} {h}x{w} s={scale} out={out} sr={sr} aligned={aligned}"
            close(tag + " fwd", o, r.detach().numpy())
            on = np.zeros_like(o)
            xn = f32(x.transpose(0, 2, 3, 1))
            wsidet_roi_align_forward_nhwc(C.byref(p), ptr(xn), n, c, h, w, ptr(rois), k, ptr(on))
            equal(tag + " nhwc == nchw", on, o)
            g = f32(rs.normal(0, 1, o.shape))
            r.backward(torch.from_numpy(g))
            gi = np.zeros_like(x)
            assert wsidet_roi_align_backward(C.byref(p), ptr(g), n, c, h, w, ptr(rois), k, ptr(gi)) == 0
            close(tag + " bwd", gi, xt.grad.numpy())
    # empty RoI set
    p = RoiAlignP(7, 7, 0.25, 2, 0)
    x = f32(rs.normal(0, 1, (1, 2, 8, 8)))
    assert wsidet_roi_align_forward(C.byref(p), ptr(x), 1, 2, 8, 8, None, 0, None) == 0


def test_multiscale():
    torch.manual_seed(0)
    img_shapes = [(250, 300), (256, 320)]
    H, W = 256, 320
    names = ["0", "1", "2", "3"]
    for out, sr in [(7, 2), (14, 2), (5, -1)]:
        feats = {nm: torch.randn(2, 6, H // 2 ** (l + 2), W // 2 ** (l + 2)) for l, nm in enumerate(names)}
        boxes = []
        for b in range(2):
            bb = rand_boxes(60, size=240.0, minwh=0.0, maxwh=250.0)
            bb[:6] = [[0, 0, 0, 0], [10, 10, 10, 10], [0, 0, 320, 256], [5, 5, 117, 117],
                      [1, 1, 225, 225], [100, 100, 90, 90]]  # zero, full, level edges, inverted
            boxes.append(bb)
        pool = MultiScaleRoIAlign(names, out, sr)
        ft = {kk: v.clone().requires_grad_(True) for kk, v in feats.items()}
        ref = pool(ft, [torch.from_numpy(b) for b in boxes], img_shapes)
        scales = [wsidet_infer_scale(feats[nm].shape[-2], max(s[0] for s in img_shapes)) for nm in names]
        equal(f"infer_scale out={out}", f32(scales), f32(pool.scales))
        lm = LevelMapper()
        wsidet_level_mapper_init(C.byref(lm), scales[0], scales[-1])
        equal("level mapper k", [lm.k_min, lm.k_max], [pool.map_levels.k_min, pool.map_levels.k_max])
        rois = f32(np.concatenate([np.concatenate([np.full((len(b), 1), i), b], 1) for i, b in enumerate(boxes)]))
        k = len(rois)
        lv = np.zeros(k, np.int32)
        wsidet_map_levels(C.byref(lm), ptr(rois), 5, 1, k, ptr(lv))
        rl = pool.map_levels([torch.from_numpy(b) for b in boxes]).numpy()
        ok = lv >= 0
        equal("map_levels", lv[ok], rl[ok])
        arrs = [f32(feats[nm].numpy()) for nm in names]
        grads = [np.zeros_like(a) for a in arrs]
        levels = (FeatureLevel * 4)(*[FeatureLevel(ptr(a), ptr(g), a.shape[2], a.shape[3], s, 0)
                                      for a, g, s in zip(arrs, grads, scales)])
        o = np.zeros((k, 6, out, out), np.float32)
        assert wsidet_ms_fwd(levels, 4, 2, 6, C.byref(lm), out, out, sr, ptr(rois), k, ptr(o), None) == 0
        close(f"multiscale fwd out={out} sr={sr}", o, ref.detach().numpy())
        g = f32(rs.normal(0, 1, o.shape))
        ref.backward(torch.from_numpy(g))
        assert wsidet_ms_bwd(levels, 4, 2, 6, C.byref(lm), out, out, sr, ptr(rois), k, ptr(g)) == 0
        for l, nm in enumerate(names):
            close(f"multiscale bwd out={out} level {nm}", grads[l], ft[nm].grad.numpy())
        # channel-last maps: the same numbers
        arrs_l = [f32(a.transpose(0, 2, 3, 1)) for a in arrs]
        grads_l = [np.zeros_like(a) for a in arrs_l]
        lvl_l = (FeatureLevel * 4)(*[FeatureLevel(ptr(a), ptr(g), a.shape[1], a.shape[2], s, 1)
                                     for a, g, s in zip(arrs_l, grads_l, scales)])
        ol = np.zeros_like(o)
        assert wsidet_ms_fwd(lvl_l, 4, 2, 6, C.byref(lm), out, out, sr, ptr(rois), k, ptr(ol), None) == 0
        equal(f"multiscale nhwc fwd out={out}", ol, o)
        assert wsidet_ms_bwd(lvl_l, 4, 2, 6, C.byref(lm), out, out, sr, ptr(rois), k, ptr(g)) == 0
        for l in range(4):
            close(f"multiscale nhwc bwd level {l}", grads_l[l].transpose(0, 3, 1, 2), grads[l], rtol=1e-6, atol=1e-7)


# ---- 6. losses --------------------------------------------------------------------------
def autograd(fn, *arrays):
    ts = [torch.from_numpy(a.copy()).requires_grad_(True) for a in arrays]
    v = fn(*ts)
    v.backward()
    return v.item(), [t.grad.numpy() if t.grad is not None else np.zeros_like(a) for t, a in zip(ts, arrays)]


def test_losses():
    for n in (1, 17, 1000):
        x = f32(rs.normal(0, 4, n))
        x[:3] = [0.0, 40.0, -40.0][:n] if n >= 3 else x[:3]
        y = f32(rs.uniform(0, 1, n))
        y[: n // 2] = np.round(y[: n // 2])
        g = np.zeros(n, np.float32)
        v = wsidet_bce(ptr(x), ptr(y), n, ptr(g))
        rv, (rg,) = autograd(lambda a: F.binary_cross_entropy_with_logits(a, torch.from_numpy(y)), x)
        close(f"bce n={n}", v, rv)
        close(f"bce grad n={n}", g, rg)
        t = f32(rs.normal(0, 0.3, n))
        p = t + f32(rs.normal(0, 0.2, n))
        p[:1] = t[:1]
        for beta, norm in ((1 / 9, n), (1.0, 1.0), (0.0, 7.0)):
            v = wsidet_smooth_l1(ptr(p), ptr(t), n, beta, norm, ptr(g))
            fn = (lambda a: F.smooth_l1_loss(a, torch.from_numpy(t), beta=beta, reduction="sum") / norm) if beta \
                else (lambda a: F.l1_loss(a, torch.from_numpy(t), reduction="sum") / norm)
            rv, (rg,) = autograd(fn, p)
            close(f"smooth_l1 n={n} beta={beta}", v, rv)
            close(f"smooth_l1 grad n={n} beta={beta}", g, rg)
        for ncls in (2, 5):
            lg = f32(rs.normal(0, 3, (n, ncls)))
            lab = i32(rs.randint(0, ncls, n))
            gg = np.zeros_like(lg)
            v = wsidet_ce(ptr(lg), ptr(lab), n, ncls, ptr(gg))
            rv, (rg,) = autograd(lambda a: F.cross_entropy(a, torch.from_numpy(lab).long()), lg)
            close(f"cross_entropy n={n} c={ncls}", v, rv)
            close(f"cross_entropy grad n={n} c={ncls}", gg, rg)

    # fastrcnn_loss (smooth L1 beta 1/9, / #sampled)
    for n, ncls in ((512, 2), (64, 4), (10, 3)):
        lg = f32(rs.normal(0, 2, (n, ncls)))
        br = f32(rs.normal(0, 0.5, (n, ncls * 4)))
        lab = i32(rs.choice(ncls, n, p=[0.75] + [0.25 / (ncls - 1)] * (ncls - 1)))
        tg = f32(rs.normal(0, 0.5, (n, 4)))
        gl, gb = np.zeros_like(lg), np.zeros_like(br)
        lc, lb = D(), D()
        assert wsidet_fastrcnn_loss(ptr(lg), ptr(br), ptr(lab), ptr(tg), n, ncls, 0, 1 / 9,
                                    C.byref(lc), C.byref(lb), ptr(gl), ptr(gb)) == 0
        tl, tb = torch.from_numpy(lg).requires_grad_(True), torch.from_numpy(br).requires_grad_(True)
        rc, rb = tv_roi_heads.fastrcnn_loss(tl, tb, [torch.from_numpy(lab).long()], [torch.from_numpy(tg)])
        (rc + rb).backward()
        close(f"fastrcnn cls n={n}", lc.value, rc.item())
        close(f"fastrcnn box n={n}", lb.value, rb.item())
        close(f"fastrcnn grad logits n={n}", gl, tl.grad.numpy())
        close(f"fastrcnn grad box n={n}", gb, tb.grad.numpy())

    # RPN compute_loss, sampled with the C sampler on both sides
    n = 4000
    obj = f32(rs.normal(0, 2, n))
    dl = f32(rs.normal(0, 0.3, (n, 4)))
    labels = f32(rs.choice([-1.0, 0.0, 0.0, 1.0], n))
    tg = f32(rs.normal(0, 0.3, (n, 4)))
    rng = Rng()
    wsidet_rng_seed(C.byref(rng), 42)
    pm, nm = np.zeros(n, np.uint8), np.zeros(n, np.uint8)
    pi, ni = np.zeros(n, np.int32), np.zeros(n, np.int32)
    npos, nneg = I(), I()
    wsidet_sample_pos_neg(ptr(i32(labels)), n, 256, 0.5, C.byref(rng), ptr(pm), ptr(nm), ptr(pi),
                          C.byref(npos), ptr(ni), C.byref(nneg))
    go, gd = np.zeros_like(obj), np.zeros_like(dl)
    lo, lb = D(), D()
    wsidet_rpn_loss(ptr(obj), ptr(dl), ptr(labels), ptr(tg), ptr(pi), npos.value, ptr(ni), nneg.value,
                    0, 1 / 9, C.byref(lo), C.byref(lb), ptr(go), ptr(gd))
    rpn = RegionProposalNetwork(None, None, 0.7, 0.3, 256, 0.5, dict(training=1), dict(training=1), 0.7)
    rpn.fg_bg_sampler = lambda lbls: ([torch.from_numpy(pm.astype(bool))], [torch.from_numpy(nm.astype(bool))])
    to, td = torch.from_numpy(obj).requires_grad_(True), torch.from_numpy(dl).requires_grad_(True)
    ro, rb = rpn.compute_loss(to, td, [torch.from_numpy(labels)], [torch.from_numpy(tg)])
    (ro + rb).backward()
    close("rpn objectness loss", lo.value, ro.item())
    close("rpn box loss", lb.value, rb.item())
    close("rpn grad objectness", go, to.grad.numpy())
    close("rpn grad deltas", gd, td.grad.numpy())

    # mask targets + mask loss
    G, Hm, Wm, M = 3, 40, 50, 28
    masks = f32(rs.uniform(0, 1, (G, Hm, Wm)) > 0.5)
    k = 30
    boxes = rand_boxes(k, size=45.0, maxwh=30.0)
    boxes[:4] = [[0, 0, Wm, Hm], [0, 0, 0, 0], [45, 35, 60, 50], [10, 10, 11, 11]]
    matched = i32(rs.randint(0, G, k))
    tgt = np.zeros((k, M, M), np.float32)
    assert wsidet_project_masks(ptr(masks), G, Hm, Wm, ptr(boxes), ptr(matched), k, M, ptr(tgt)) == 0
    rt = tv_roi_heads.project_masks_on_boxes(torch.from_numpy(masks), torch.from_numpy(boxes),
                                             torch.from_numpy(matched).long(), M)
    close("project_masks_on_boxes", tgt, rt.numpy())
    ncls = 3
    gt_labels = i32(rs.randint(1, ncls, G))
    ml = f32(rs.normal(0, 2, (k, ncls, M, M)))
    gm = np.zeros_like(ml)
    v = wsidet_maskrcnn_loss(ptr(ml), ptr(i32(gt_labels[matched])), ptr(tgt), k, ncls, M, ptr(gm))
    tml = torch.from_numpy(ml).requires_grad_(True)
    rv = tv_roi_heads.maskrcnn_loss(tml, [torch.from_numpy(boxes)], [torch.from_numpy(masks)],
                                    [torch.from_numpy(gt_labels).long()], [torch.from_numpy(matched).long()])
    rv.backward()
    close("maskrcnn_loss", v, rv.item())
    close("maskrcnn_loss grad", gm, tml.grad.numpy())
    equal("maskrcnn_loss empty", wsidet_maskrcnn_loss(None, None, None, 0, ncls, M, None), 0.0)


lib.wsidet_isa.restype = C.c_char_p
print("wsidetect kernels:", lib.wsidet_isa().decode())
for t in (test_anchors, test_box_coding, test_iou_nms, test_proposals_detections, test_matcher_sampler, test_targets, test_roi_align,
          test_multiscale, test_losses):
    t()
    print(f"{t.__name__}: done ({len(FAILS)} failures so far)")
print(f"{CHECKS[0]} checks, {len(FAILS)} failures")
for f in FAILS[:40]:
    print("FAIL", f)
sys.exit(1 if FAILS else 0)
