#!/usr/bin/python3
"""Evaluates a shipped model on its held-back validation images with the
project's own pipeline (slidesrc ! patchify ! colornorm ! segment-fcn !
stitchsink, or segment-maskrcnn ! stitchsink for Mask R-CNN) and metrics tool
(wsiseg-eval), and prints the figures for the model card as JSON.

  evaluate.py nuclei MODEL [build-dir]   # + pixel Dice on the 17 binary-mask test images
  evaluate.py nuclei30 MODEL [build-dir]          # U-Net, the nuclei30 split
  evaluate.py nuclei-maskrcnn MODEL [build-dir]   # Mask R-CNN, the same nuclei30 images
  evaluate.py glands MODEL [build-dir]

The U-Net models have the classes background, object interior, object
boundary. A pixel is foreground when its class is interior or boundary (pixel
Dice); instances are the connected components (4-connectivity) of the interior
class, each grown by up to 2 pixels into predicted foreground (skimage
expand_labels), glands smaller than MIN_AREA dropped. Mask R-CNN gives the
instances itself: the patches' instance label maps merged across patches by
stitchsink (a 16-bit instance PNG); foreground = any instance. Both are
compared with the annotated instance maps (object F1, PQ, AJI, object Dice,
counts), so nuclei30 and nuclei-maskrcnn are side by side on the same
held-back images."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import skimage.io
import skimage.measure
import skimage.segmentation
from PIL import Image

# Smallest object kept, in model pixels: nuclei none; glands 100 px
# (150 um^2 at 1.24 um/px).
MIN_AREA = {"nuclei": 0, "nuclei30": 0, "nuclei-maskrcnn": 0, "glands": 100}
# the prepared data of a task (prepare_data.py) when it is another task's
DATA_OF = {"nuclei-maskrcnn": "nuclei30"}
MASKRCNN = {"nuclei-maskrcnn"}
# patch size and overlap of the pipeline, as the model was trained
PATCHING = {"nuclei-maskrcnn": (256, 64)}
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def png16(path, arr):
    """A 16-bit grayscale PNG whatever the values (imageio writes 8 bits when
    they fit, and wsiseg-eval reads 8-bit maps as classes, not instances)."""
    Image.fromarray(arr.astype(np.uint16), "I;16").save(path)


def predict(model, image, out, build, patch, overlap):
    env = dict(os.environ, GST_PLUGIN_PATH=os.path.join(build, "gst"))
    cmd = (f"gst-launch-1.0 -q slidesrc location={image} tile-width=512 tile-height=512 ! "
           f"patchify patch-size={patch} overlap={overlap} ! colornorm mode=rescale01 ! "
           f"segment-fcn model={model} output=probabilities batch-size=4 ! "
           f"stitchsink blend=gaussian location={out}")
    subprocess.run(cmd, shell=True, check=True, env=env)
    return skimage.io.imread(out)


def predict_instances(model, image, out, build, patch, overlap):
    """Mask R-CNN: the instance map of the image (stitchsink merges the
    patches' objects into global ids)."""
    env = dict(os.environ, GST_PLUGIN_PATH=os.path.join(build, "gst"))
    cmd = (f"gst-launch-1.0 -q slidesrc location={image} tile-width=512 tile-height=512 ! "
           f"patchify patch-size={patch} overlap={overlap} ! colornorm mode=rescale01 ! "
           f"segment-maskrcnn model={model} batch-size=2 ! stitchsink location={out}")
    subprocess.run(cmd, shell=True, check=True, env=env)
    return skimage.io.imread(out)


def wsiseg_eval(build, pred, gt, *args):
    tool = os.path.join(build, "elements", "core", "wsiseg-eval")
    if not os.path.exists(tool):  # build trees from before the elements/core layout
        tool = os.path.join(build, "gst", "wsiseg-eval")
    r = subprocess.run([tool, *args, pred, gt],
                       check=True, capture_output=True, text=True)
    return json.loads(r.stdout)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    task, model = sys.argv[1], os.path.abspath(sys.argv[2])
    build = os.path.abspath(sys.argv[3] if len(sys.argv) > 3 else os.path.join(ROOT, "build"))
    if task not in MIN_AREA:
        sys.exit(__doc__)
    data = os.path.join(ROOT, "out", f"train-{DATA_OF.get(task, task)}", "val")
    patch, overlap = PATCHING.get(task, (128, 32))
    tmp = tempfile.mkdtemp(prefix=f"wsiseg-eval-{task}-")
    names = sorted(f[:-4] for f in os.listdir(os.path.join(data, "images")))
    per_image, totals = [], {}
    for n in names:
        img = os.path.join(data, "images", n + ".png")
        gt = skimage.io.imread(os.path.join(data, "labels", n + ".png"))
        if task in MASKRCNN:
            inst = predict_instances(model, img, os.path.join(tmp, n + ".png"), build,
                                     patch, overlap).astype(np.int64)
            fg = inst > 0
        else:
            pred = predict(model, img, os.path.join(tmp, n + ".png"), build,
                           patch, overlap)
            # foreground = any non-background class; instances = connected
            # interiors (class 1) grown by up to 2 pixels into the foreground
            fg = pred > 0
            inst = skimage.measure.label(pred == 1, connectivity=1)
            inst = skimage.segmentation.expand_labels(inst, 2) * fg
        if MIN_AREA[task]:  # fragments smaller than any real object
            areas = np.bincount(inst.ravel())
            small = np.flatnonzero(areas < MIN_AREA[task])
            inst[np.isin(inst, small[small > 0])] = 0
        png16(os.path.join(tmp, n + "-pred-inst.png"), inst)
        skimage.io.imsave(os.path.join(tmp, n + "-pred-fg.png"), fg.astype(np.uint8), check_contrast=False)
        skimage.io.imsave(os.path.join(tmp, n + "-gt-fg.png"), (gt > 0).astype(np.uint8), check_contrast=False)
        pix = wsiseg_eval(build, os.path.join(tmp, n + "-pred-fg.png"), os.path.join(tmp, n + "-gt-fg.png"))
        png16(os.path.join(tmp, n + "-gt-inst.png"), gt)
        ins = wsiseg_eval(build, os.path.join(tmp, n + "-pred-inst.png"),
                          os.path.join(tmp, n + "-gt-inst.png"), "--instances")
        im = ins["instance"]["images"][0]
        row = {"image": n, "dice": pix["pixel"]["classes"][1]["dice"], "f1": im["f1"],
               "pq": im["pq"], "aji": im["aji"], "object_dice": im["object_dice"],
               "gt_objects": im["gt_objects"], "pred_objects": im["pred_objects"]}
        per_image.append(row)
        for k in ("tp", "fp", "fn", "iou_sum", "aji_intersection", "aji_union",
                  "gt_objects", "pred_objects"):
            totals[k] = totals.get(k, 0) + im[k]
        totals["dice_tp"] = totals.get("dice_tp", 0) + pix["pixel"]["classes"][1]["tp"]
        totals["dice_fp"] = totals.get("dice_fp", 0) + pix["pixel"]["classes"][1]["fp"]
        totals["dice_fn"] = totals.get("dice_fn", 0) + pix["pixel"]["classes"][1]["fn"]
    t = totals
    agg = {
        "pixel_dice": 2 * t["dice_tp"] / max(1, 2 * t["dice_tp"] + t["dice_fp"] + t["dice_fn"]),
        "object_f1": 2 * t["tp"] / max(1, 2 * t["tp"] + t["fp"] + t["fn"]),
        "pq": t["iou_sum"] / max(1e-9, t["tp"] + 0.5 * t["fp"] + 0.5 * t["fn"]),
        "aji": t["aji_intersection"] / max(1, t["aji_union"]),
        "gt_objects": t["gt_objects"], "pred_objects": t["pred_objects"],
    }
    mean = {k: float(np.mean([r[k] for r in per_image if r[k] is not None]))
            for k in ("dice", "f1", "pq", "aji", "object_dice")}
    result = {"task": task, "model": model, "validation_images": len(names),
              "aggregate": agg, "mean_over_images": mean, "per_image": per_image}
    if task == "nuclei":
        result["test_pixel"] = nuclei_test_dice(model, build, tmp)
    result["card_row"] = (f"| {os.path.basename(model)} | {agg['pixel_dice']:.3f} | {agg['aji']:.3f} | "
                          f"{agg['pq']:.3f} | {agg['object_f1']:.3f} | {agg['gt_objects']} | "
                          f"{agg['pred_objects']} |")
    print(json.dumps(result, indent=1))


def nuclei_test_dice(model, build, tmp):
    """Pixel Dice on the MoNuSeg images that have only binary masks."""
    test = os.path.join(ROOT, "out", "train-nuclei", "test")
    if not os.path.isdir(test):
        sys.path.insert(0, os.path.dirname(__file__))
        import prepare_data
        prepare_data.nuclei_test(os.path.dirname(test))
    tp = fp = fn = 0
    dices = []
    for f in sorted(os.listdir(os.path.join(test, "images"))):
        pred = predict(model, os.path.join(test, "images", f), os.path.join(tmp, "test-" + f), build, 128, 32) > 0
        gt = skimage.io.imread(os.path.join(test, "labels", f)) > 0
        a, b, c = int((pred & gt).sum()), int((pred & ~gt).sum()), int((~pred & gt).sum())
        tp, fp, fn = tp + a, fp + b, fn + c
        dices.append(2 * a / max(1, 2 * a + b + c))
    return {"images": len(dices), "pixel_dice": 2 * tp / max(1, 2 * tp + fp + fn),
            "mean_pixel_dice": float(np.mean(dices)) if dices else None}


if __name__ == "__main__":
    main()
