"""segment-maskrcnn's instance label patches equal torchvision's Mask R-CNN
(models/reference/maskrcnn_ref.py, the same weights) on real patches of the
sample slide: the detections painted by descending score (a pixel belongs to
the highest-scoring detection whose pasted mask is >= mask_threshold;
detections that win no pixel are left out; ids 1.. in score order). Both
input paths: RGB (the element preprocesses) and colornorm tensors."""
import os
import sys

import numpy as np

import wsitest

try:
    import torch
    sys.path.insert(0, os.path.join(wsitest.SOURCE_ROOT, "models", "reference"))
    import maskrcnn_ref  # noqa: E402
    import modelfile  # noqa: E402
except ImportError as e:
    wsitest.skip(f"python3-torch / torchvision not importable ({e}; tests/run.sh installs them)")

from slides import openslide_region  # noqa: E402

torch.set_num_threads(2)
c = wsitest.Checks()
tmp = wsitest.tmpdir()
P = 64
REGION = (600, 900, 2 * P, P)   # tissue on the sample slide: two patches

rgb, _ = openslide_region(wsitest.SAMPLE_SLIDE, 0, REGION)
patches = [rgb[:, i * P:(i + 1) * P] for i in range(2)]


def make_model(path):
    torch.manual_seed(3)
    meta = modelfile.make_metadata(
        "maskrcnn", n_classes=3, class_names=["background", "nucleus", "other"],
        fpn_channels=32, representation=64, mask_width=16, mask_layers=2,
        score_threshold=0.2, mpp=0.25, patch_size=P)
    model = maskrcnn_ref.build_model(meta)
    maskrcnn_ref.randomize_frozen_bn(model)
    with torch.no_grad():   # fewer, well separated detections than random init
        model.roi_heads.box_predictor.cls_score.weight.mul_(4.0)
    modelfile.save_model(model, path, meta)
    return model, meta


def paint(det, threshold):
    """The label patch of torchvision's detections (sorted by score)."""
    masks = det["masks"][:, 0].numpy()
    owner = np.full(masks.shape[1:], -1, np.int64)
    for k in range(masks.shape[0]):
        owner[(owner < 0) & (masks[k] >= threshold)] = k
    out = np.zeros(owner.shape, np.uint16)
    winners = [k for k in range(masks.shape[0]) if (owner == k).any()]
    for i, k in enumerate(winners):
        out[owner == k] = i + 1
    return out, len(winners)


def torch_labels(model, meta):
    thr = float(meta["mask_threshold"])
    out = []
    for p in patches:
        x = torch.from_numpy(p.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        det = maskrcnn_ref.detect(model, x)[0]
        out.append(paint(det, thr))
    return out


def gst_labels(model_path, tensors, batch):
    raw = os.path.join(tmp, "labels.raw")
    norm = "colornorm mode=rescale01 ! " if tensors else ""
    x, y, w, h = REGION
    p = wsitest.gst_launch(
        f"slidesrc location={wsitest.SAMPLE_SLIDE} region={x},{y},{w},{h} "
        f"tile-width={P} tile-height={P} ! {norm}"
        f"segment-maskrcnn model={model_path} batch-size={batch} ! "
        f"filesink location={raw}")
    if p.returncode != 0:
        return None, p.stderr[-800:]
    return np.fromfile(raw, np.uint16).reshape(2, P, P), ""


model_path = os.path.join(tmp, "maskrcnn.safetensors")
model, meta = make_model(model_path)
ref = torch_labels(model, meta)
c.check(sum(n for _, n in ref) > 0, "torchvision detects objects on the patches",
        f"{[n for _, n in ref]} instances")
for tensors, batch in ((False, 1), (False, 2), (True, 2)):
    label = f"{'colornorm tensors' if tensors else 'RGB'}, batch-size={batch}"
    got, err = gst_labels(model_path, tensors, batch)
    if not c.check(got is not None, f"{label}: pipeline runs", err):
        continue
    for i, (want, n) in enumerate(ref):
        n_got = int(got[i].max())
        same = (got[i] == want).mean()
        # masks at the threshold may round either way (float32 sums)
        c.check(n_got == n and same >= 0.999, f"{label}, patch {i}: equals torchvision",
                f"{n_got} instances (torchvision {n}), {100 * same:.3f}% pixels equal")
c.finish()
