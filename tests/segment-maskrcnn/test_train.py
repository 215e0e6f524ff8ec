"""segment-maskrcnn mode=train through the pipeline (docs/segment-maskrcnn.md,
"Training"): synthetic discs (generated here) with 16-bit instance maps,
annotation by labelpatch instance-mode=instances.

 - a few steps lower the loss; the checkpoint is written atomically (no
   temporary file left, a loadable model file); resume continues from its
   step;
 - the validation run's AJI / PQ / object F1 / pixel Dice equal segeval's on
   the same prediction (the checkpoint run by segment-maskrcnn ! stitchsink
   over the same images) and annotation;
 - an annotation patch with more instances than max-instances is an error
   naming the limit; patches without objects train (background only)."""
import json
import os
import re
import struct
import subprocess
import sys

import numpy as np

import wsitest

c = wsitest.Checks()
tmp = wsitest.tmpdir()
REF = os.path.join(wsitest.SOURCE_ROOT, "models", "reference")
rng = np.random.default_rng(11)
SIZE, PATCH, OVERLAP = 96, 64, 32
PREFIX = "segment-maskrcnn"


def png16(path, arr):
    from PIL import Image
    Image.fromarray(arr.astype(np.uint16), "I;16").save(path)


def png_rgb(path, arr):
    import skimage.io
    skimage.io.imsave(path, arr, check_contrast=False)


def make_dataset(folder, n, discs=4, empty=()):
    """n RGB images with bright discs on a noisy background and their
    instance maps (ids 1..k); images in @empty have no disc."""
    os.makedirs(os.path.join(folder, "images"))
    os.makedirs(os.path.join(folder, "labels"))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for i in range(n):
        img = rng.normal(60, 12, (SIZE, SIZE, 3))
        inst = np.zeros((SIZE, SIZE), np.uint16)
        for k in range(0 if i in empty else discs):
            cy, cx, r = rng.integers(10, SIZE - 10), rng.integers(10, SIZE - 10), rng.integers(5, 9)
            disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (inst == 0)
            inst[disc] = k + 1
            img[disc] = rng.normal([210, 120, 190], 10, (disc.sum(), 3))
        png_rgb(os.path.join(folder, "images", f"img{i:02d}.png"), np.clip(img, 0, 255).astype(np.uint8))
        png16(os.path.join(folder, "labels", f"img{i:02d}.png"), inst)
    return folder


def step_of(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return int(json.loads(f.read(n)).get("__metadata__", {}).get("train_step", "0"))


def fields(line, name, kind="double"):
    m = re.search(rf"\b{name}=\({kind}\)([^,;]+)", line)
    return float(m.group(1)) if m else None


train = make_dataset(os.path.join(tmp, "train"), 3, empty=(1,))
val = make_dataset(os.path.join(tmp, "val"), 2)
init = os.path.join(tmp, "init.safetensors")
r = subprocess.run([sys.executable, os.path.join(REF, "export_model.py"), init, "--arch", "maskrcnn",
                    "--backbone", "resnet18", "--classes", "background,disc", "--mpp", "0.5",
                    "--patch-size", str(PATCH), "--anchor-sizes", "8,16,32,64,128",
                    "--max-detections", "40", "--rpn-pre-nms-top-n", "300",
                    "--rpn-post-nms-top-n", "100", "--init", "calibrated", "--seed", "3",
                    "--meta", "fpn_channels=32", "--meta", "representation=64",
                    "--meta", "mask_layers=2", "--meta", "mask_width=16"],
                   capture_output=True, text=True)
if r.returncode != 0:
    wsitest.skip(f"cannot export the initial model (PyTorch?): {r.stderr[-300:]}")
ckpt = os.path.join(tmp, "ckpt.safetensors")
cut = f"patchify patch-size={PATCH} overlap={OVERLAP}"
tiles = f"tile-width={SIZE} tile-height={SIZE}"
labels = "labelpatch instance-mode=instances masks={}/labels/{{name}}.png"


def train_pipeline(model, loops, extra="", val_branch=True):
    p = (f"slidesrc location='{train}/images/*.png' loop={loops} {tiles} ! {cut} ! tee name=t "
         f"t. ! queue ! seg.sink "
         f"t. ! queue ! {labels.format(train)} ! seg.annotation "
         f"segment-maskrcnn name=seg mode=train model={model} checkpoint={ckpt} batch-size=2 "
         f"threads=1 optimizer=adam learning-rate=0.001 checkpoint-interval=4 {extra} ! fakesink ")
    if val_branch:
        p += (f"slidesrc location='{val}/images/*.png' loop=0 {tiles} ! {cut} ! tee name=v "
              f"v. ! queue ! seg.validation "
              f"v. ! queue ! {labels.format(val)} ! seg.validation_annotation")
    return wsitest.gst_launch(p, messages=True, timeout=600)


# ---- a few epochs: the loss goes down, checkpoints, validation messages
p = train_pipeline(init, 3, "post-messages=true")
epochs = re.findall(rf"{PREFIX}-epoch, .*", p.stdout)
steps = re.findall(rf"{PREFIX}-train, .*", p.stdout)
runs = re.findall(rf"{PREFIX}-validation, .*", p.stdout)
ok = c.check(p.returncode == 0 and len(epochs) == 3 and runs,
             "training with validation runs completes (3 epochs, validation messages)",
             (p.stderr + p.stdout)[-1500:])
if not ok:
    c.finish()
losses = [fields(e, "mean-loss") for e in epochs]
c.check(losses[-1] < losses[0], "the epoch loss goes down", f"{losses}")
c.check(all(fields(steps[0], k) is not None for k in
            ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask")),
        "step messages carry the five Mask R-CNN losses", steps[0][:400])
c.check(os.path.exists(ckpt) and step_of(ckpt) > 0, "the checkpoint holds the step",
        f"step {step_of(ckpt) if os.path.exists(ckpt) else None}")
c.check(not [f for f in os.listdir(tmp) if f.startswith(".ckpt")],
        "no temporary checkpoint file left", str(os.listdir(tmp)))
c.check(len(re.findall(rf"{PREFIX}-checkpoint, ", p.stdout)) >= 2, "checkpoint messages")
last = runs[-1]
for k in ("aji", "pq", "f1", "pixel-dice", "sq", "dq"):
    c.check(fields(last, k) is not None, f"validation message has {k}", last[:600])
c.check(fields(epochs[-1], "validation-aji") is not None, "the epoch message has validation-aji",
        epochs[-1][:600])

# ---- resume continues from the checkpoint's step
saved = step_of(ckpt)
p = train_pipeline(f"{ckpt} resume=true", 1, val_branch=False)
first = re.findall(rf"{PREFIX}-checkpoint, .*", p.stdout)
steps_after = step_of(ckpt)
c.check(p.returncode == 0 and steps_after > saved, "resume continues from the saved step",
        f"saved {saved}, after {steps_after}; {p.stderr[-500:]}")
m = re.search(r"step=\(gint64\)(\d+)", first[-1]) if first else None
c.check(m and int(m.group(1)) == steps_after, "the last checkpoint message names the step",
        first[-1] if first else "")

# ---- validation metrics == segeval on the stitched prediction of the same weights
# (score-threshold=0: every detection counts, whatever this short training learnt)
p = train_pipeline(f"{ckpt} resume=true score-threshold=0", 1)
runs = re.findall(rf"{PREFIX}-validation, .*", p.stdout)
if c.check(p.returncode == 0 and runs, "a resumed run validates", p.stderr[-500:]):
    last = runs[-1]
    final = os.path.join(tmp, "final.safetensors")
    os.replace(ckpt, final)
    pred_dir = os.path.join(tmp, "pred")
    os.makedirs(pred_dir)
    for f in sorted(os.listdir(os.path.join(val, "images"))):
        q = wsitest.gst_launch(
            f"slidesrc location={val}/images/{f} {tiles} ! {cut} ! "
            f"segment-maskrcnn model={final} threads=1 score-threshold=0 ! stitchsink location={pred_dir}/{f}")
        c.check(q.returncode == 0, f"inference + stitchsink of {f}", q.stderr[-300:])
    report = os.path.join(tmp, "eval.json")
    q = wsitest.gst_launch(
        f"segeval name=e instances=true location={report} ! fakesink "
        f"slidesrc location='{val}/images/*.png' {tiles} ! patchify patch-size={SIZE} ! tee name=v "
        f"v. ! queue ! labelpatch instance-mode=instances masks={pred_dir}/{{name}}.png ! e.prediction "
        f"v. ! queue ! {labels.format(val)} ! e.annotation")
    if c.check(q.returncode == 0 and os.path.exists(report), "segeval over the stitched predictions",
               q.stderr[-500:]):
        ev = json.load(open(report))
        agg = ev["instance"]["aggregate"]
        for k, e in (("aji", "aji"), ("pq", "pq"), ("f1", "f1")):
            v = fields(last, k)
            c.check(v is not None and agg[e] is not None and abs(v - agg[e]) < 1e-9,
                    f"validation {k} equals segeval's", f"validation {v}, segeval {agg[e]}")
        fg = ev["pixel"]["classes"][1]["dice"]
        v = fields(last, "pixel-dice")
        c.check(v is not None and abs(v - fg) < 1e-9, "validation pixel Dice equals segeval's",
                f"validation {v}, segeval {fg}")
        n_pred = int(re.search(r"pred-objects=\(guint64\)(\d+)", last).group(1))
        c.check(n_pred == agg["pred_objects"], "same number of predicted objects",
                f"validation {n_pred}, segeval {agg['pred_objects']}")

# ---- class_map pad: the class of each object from GRAY8 class patches of the same tee
def class_masks(folder, value):
    out = os.path.join(folder, f"classes{value}")
    os.makedirs(out, exist_ok=True)
    import skimage.io
    for f in sorted(os.listdir(os.path.join(folder, "labels"))):
        inst = skimage.io.imread(os.path.join(folder, "labels", f))
        png_rgb(os.path.join(out, f), ((inst > 0) * value).astype(np.uint8))
    return out


def class_run(value):
    cls = class_masks(train, value)
    return wsitest.gst_launch(
        f"slidesrc location='{train}/images/*.png' {tiles} ! {cut} ! tee name=t "
        f"t. ! queue ! seg.sink t. ! queue ! {labels.format(train)} ! seg.annotation "
        f"t. ! queue ! labelpatch masks={cls}/{{name}}.png ! seg.class_map "
        f"segment-maskrcnn name=seg mode=train model={init} batch-size=2 threads=1 "
        f"optimizer=adam learning-rate=0.001 ! fakesink", messages=True, timeout=300)


p = class_run(1)
c.check(p.returncode == 0 and re.search(rf"{PREFIX}-epoch, ", p.stdout),
        "training with a class_map pad completes", (p.stderr + p.stdout)[-600:])
p = class_run(3)
c.check(p.returncode != 0 and "class map value 3" in p.stderr + p.stdout,
        "a class beyond the model's classes is an error naming it", (p.stderr + p.stdout)[-600:])

# ---- more instances than max-instances: an error naming the limit
p = train_pipeline(init, 1, "max-instances=2", val_branch=False)
c.check(p.returncode != 0 and "max-instances" in p.stderr + p.stdout
        and "limit of 2" in p.stderr + p.stdout,
        "an annotation patch beyond max-instances is an error naming the limit",
        (p.stderr + p.stdout)[-600:])
c.finish()
