"""One Dice definition (issue 9, point 6): the final validation run of a
training pipeline and segeval, over the same validation images with
overlapping patches and the same (final) weights, report the same per-class
Dice, mean Dice and pixel count: both go through elements/core/wsimetrics and count
the centre crop of each patch, so every image pixel once."""
import json
import os
import re
import subprocess
import sys

import numpy as np

import wsitest

c = wsitest.Checks()
tmp = wsitest.tmpdir()
REF = os.path.join(wsitest.SOURCE_ROOT, "models", "reference")
rng = np.random.default_rng(5)
SIZE, PATCH, OVERLAP = 80, 32, 16


def write_png(path, arr):
    import skimage.io
    skimage.io.imsave(path, arr, check_contrast=False)


def make_dataset(folder, n):
    os.makedirs(os.path.join(folder, "images"))
    os.makedirs(os.path.join(folder, "masks"))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for i in range(n):
        img = rng.normal(120, 25, (SIZE, SIZE, 3))
        mask = np.zeros((SIZE, SIZE), np.uint8)
        for _ in range(3):
            cy, cx, r = rng.integers(10, SIZE - 10), rng.integers(10, SIZE - 10), rng.integers(5, 10)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            mask[disc] = 255
            img[disc] = rng.normal([200, 90, 180], 20, (disc.sum(), 3))
        write_png(os.path.join(folder, "images", f"img{i:02d}.png"), np.clip(img, 0, 255).astype(np.uint8))
        write_png(os.path.join(folder, "masks", f"img{i:02d}.png"), mask)
    return folder


train = make_dataset(os.path.join(tmp, "train"), 3)
val = make_dataset(os.path.join(tmp, "val"), 2)
init = os.path.join(tmp, "init.safetensors")
r = subprocess.run([sys.executable, os.path.join(REF, "export_model.py"), init, "--arch", "unet",
                    "--depth", "2", "--base-width", "8", "--classes", "background,disc",
                    "--seed", "3"], capture_output=True, text=True)
if r.returncode != 0:
    wsitest.skip(f"cannot export the initial model (PyTorch?): {r.stderr[-300:]}")
ckpt = os.path.join(tmp, "ckpt.safetensors")
cut = f"patchify patch-size={PATCH} overlap={OVERLAP}"
tiles = f"tile-width={SIZE} tile-height={SIZE}"

p = wsitest.gst_launch(
    f"slidesrc location='{train}/images/*.png' loop=3 {tiles} ! {cut} ! tee name=t "
    f"t. ! queue ! colornorm mode=rescale01 ! seg.sink "
    f"t. ! queue ! labelpatch masks={train}/masks/{{name}}.png binary=true ! seg.annotation "
    f"segment-fcn name=seg mode=train model={init} checkpoint={ckpt} batch-size=4 threads=1 "
    f"optimizer=adam learning-rate=0.01 ! fakesink "
    f"slidesrc location='{val}/images/*.png' loop=0 {tiles} ! {cut} ! tee name=v "
    f"v. ! queue ! colornorm mode=rescale01 ! seg.validation "
    f"v. ! queue ! labelpatch masks={val}/masks/{{name}}.png binary=true ! seg.validation_annotation",
    messages=True, timeout=300)
runs = re.findall(r"segment-fcn-validation, .*", p.stdout)
c.check(p.returncode == 0 and runs, "training with overlapping validation patches completes",
        p.stderr[-500:])
if not runs:
    c.finish()
last = runs[-1]


def field(name):
    m = re.search(name + r"=\(double\)([^,;]+)", last)
    return float(m.group(1)) if m else None


train_dice = [float(x) for x in re.search(r"dice=\(double\)< ([^>]*) >", last).group(1).split(",")]
train_pixels = int(re.search(r"pixels=\(guint64\)(\d+)", last).group(1)) if "pixels=" in last else None

report = os.path.join(tmp, "eval.json")
p = wsitest.gst_launch(
    f"segeval name=e num-classes=2 location={report} ! fakesink "
    f"slidesrc location='{val}/images/*.png' {tiles} ! {cut} ! tee name=v "
    f"v. ! queue ! colornorm mode=rescale01 ! segment-fcn model={ckpt} threads=1 ! queue ! e.prediction "
    f"v. ! queue ! labelpatch masks={val}/masks/{{name}}.png binary=true ! queue ! e.annotation",
    timeout=120)
if c.check(p.returncode == 0 and os.path.exists(report), "segeval over the same images", p.stderr[-500:]):
    px = json.load(open(report))["pixel"]
    ev_dice = [k["dice"] for k in px["classes"]]
    c.check(train_pixels == px["pixels"] == 2 * SIZE * SIZE,
            "both count every image pixel once (centre crops)",
            f"validation {train_pixels}, segeval {px['pixels']}, images {2 * SIZE * SIZE}")
    # same weights; the inference path folds BatchNorm, so a few pixels may flip
    c.check(len(train_dice) == len(ev_dice) and all(abs(a - b) < 2e-3 for a, b in zip(train_dice, ev_dice)),
            "per-class Dice (background included) equals segeval's",
            f"validation {train_dice}, segeval {ev_dice}")
    c.check(abs(field("mean-dice") - px["mean_dice"]) < 2e-3, "mean Dice equals segeval's",
            f"validation {field('mean-dice'):.4f}, segeval {px['mean_dice']:.4f}")
    c.check(abs(field("accuracy") - px["accuracy"]) < 2e-3, "accuracy equals segeval's",
            f"validation {field('accuracy'):.4f}, segeval {px['accuracy']:.4f}")
c.finish()
