"""Training inside the pipeline: a PNG dataset (generated: bright discs on
textured background, with 0/255 masks) goes through slidesrc ! patchify !
tee; one branch colornorm ! seg.sink, the other labelpatch ! seg.annotation;
segment-fcn mode=train backpropagates. Shown: the loss falls, checkpoints are
written, a resumed run continues the step count and its loss curve, the
trained model segments held-out images, and bad annotation input gives
errors naming the file and patch."""
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np

import wsitest

c = wsitest.Checks()
tmp = wsitest.tmpdir()
REF = os.path.join(wsitest.SOURCE_ROOT, "models", "reference")
rng = np.random.default_rng(0)


def write_png(path, arr):
    import skimage.io
    skimage.io.imsave(path, arr, check_contrast=False)


def make_dataset(folder, n, size=96):
    os.makedirs(os.path.join(folder, "images"))
    os.makedirs(os.path.join(folder, "masks"))
    for i in range(n):
        img = rng.normal(120, 25, (size, size, 3))
        mask = np.zeros((size, size), np.uint8)
        yy, xx = np.mgrid[0:size, 0:size]
        for _ in range(3):
            cy, cx, r = rng.integers(12, size - 12), rng.integers(12, size - 12), rng.integers(6, 12)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            mask[disc] = 255
            img[disc] = rng.normal([200, 90, 180], 20, (disc.sum(), 3))
        write_png(os.path.join(folder, "images", f"img{i:02d}.png"), np.clip(img, 0, 255).astype(np.uint8))
        write_png(os.path.join(folder, "masks", f"img{i:02d}.png"), mask)
    return folder


data = make_dataset(os.path.join(tmp, "train"), 8)
held = make_dataset(os.path.join(tmp, "held"), 2)
init = os.path.join(tmp, "init.safetensors")
r = subprocess.run([sys.executable, os.path.join(REF, "export_model.py"), init, "--arch", "unet",
                    "--depth", "2", "--base-width", "8", "--classes", "background,disc",
                    "--seed", "3"], capture_output=True, text=True)
if r.returncode != 0:
    wsitest.skip(f"cannot export the initial model (PyTorch?): {r.stderr[-300:]}")

ckpt = os.path.join(tmp, "ckpt.safetensors")


def train(model, loops, extra="", masks=None, images=None):
    masks = masks or os.path.join(data, "masks", "{name}.png")
    images = images or os.path.join(data, "images", "*.png")
    p = wsitest.gst_launch(
        f"slidesrc location='{images}' loop={loops} shuffle=true seed=1 tile-width=96 tile-height=96 ! "
        f"patchify patch-size=48 overlap=0 augment-flip=true seed=2 ! tee name=t "
        f"t. ! queue ! colornorm mode=rescale01 ! seg.sink "
        f"t. ! queue ! labelpatch masks={masks} binary=true ! seg.annotation "
        f"segment-fcn name=seg mode=train model={model} checkpoint={ckpt} batch-size=8 "
        f"optimizer=adam learning-rate=0.01 checkpoint-interval=10 post-messages=true {extra} ! fakesink",
        messages=True, timeout=600)
    steps = [(int(m.group(1)), float(m.group(2))) for m in re.finditer(
        r"segment-fcn-train, step=\(gint64\)(\d+), epoch=\(int\)\d+, loss=\(double\)([\d.e+-]+)", p.stdout)]
    epochs = re.findall(r"segment-fcn-epoch, epoch=\(int\)(\d+)", p.stdout)
    return p, steps, epochs


p, steps, epochs = train(init, 6)
ok = c.check(p.returncode == 0 and steps, "train run completes", p.stderr[-800:])
if ok:
    first = np.mean([l for _, l in steps[:3]])
    last = np.mean([l for _, l in steps[-3:]])
    c.check(last < 0.6 * first, "loss falls", f"first {first:.3f} -> last {last:.3f} over {len(steps)} steps")
    c.check(len(epochs) >= 5, "an epoch message per dataset pass", f"{len(epochs)} epochs")
    c.check(os.path.exists(ckpt), "checkpoint written")
    c.check(not [f for f in os.listdir(tmp) if "partial" in f or f.startswith(".ckpt")],
            "no temporary files left")

    # resume: the step count continues and the loss stays at its level
    p2, steps2, _ = train(ckpt, 1, "resume=true")
    if c.check(p2.returncode == 0 and steps2, "resumed run completes", p2.stderr[-500:]):
        c.check(steps2[0][0] == steps[-1][0] + 1, "resume continues the step count",
                f"{steps[-1][0]} -> {steps2[0][0]}")
        c.check(np.mean([l for _, l in steps2]) < 0.8 * first, "resumed loss continues the curve",
                f"{np.mean([l for _, l in steps2]):.3f} vs first {first:.3f}")

    # the checkpoint is a model file: segment held-out images with it
    out = os.path.join(tmp, "pred.png")
    img = os.path.join(held, "images", "img00.png")
    p3 = wsitest.gst_launch(f"slidesrc location={img} tile-width=96 tile-height=96 ! "
                            f"patchify patch-size=48 overlap=0 ! colornorm mode=rescale01 ! "
                            f"segment-fcn model={ckpt} ! stitchsink location={out}")
    if c.check(p3.returncode == 0, "trained checkpoint runs in inference", p3.stderr[-500:]):
        pred = wsitest.read_png(out) > 0
        gt = wsitest.read_png(os.path.join(held, "masks", "img00.png")) > 0
        dice = 2 * (pred & gt).sum() / max(1, pred.sum() + gt.sum())
        c.check(dice > 0.6, "held-out Dice of the trained model", f"{dice:.3f}")

# a one-image dataset: every slidesrc pass is an epoch (tile meta epoch)
one = os.path.join(data, "images", "img00.png")
p, steps1, epochs1 = train(init, 3, images=one)
c.check(p.returncode == 0 and len(epochs1) == 3, "one-image dataset: an epoch per pass",
        f"{len(epochs1)} epochs over {len(steps1)} steps")

# validation stream: one pass of the held-out images after every epoch and at
# the end; its Dice must equal an independent computation with the final model
val = (f"slidesrc location='{held}/images/*.png' loop=0 tile-width=96 tile-height=96 ! "
       f"patchify patch-size=48 overlap=0 ! tee name=v "
       f"v. ! queue ! colornorm mode=rescale01 ! seg.validation "
       f"v. ! queue ! labelpatch masks={held}/masks/{{name}}.png binary=true ! seg.validation_annotation ")
def peak_rss_mb(pipeline):
    """Runs gst-launch in a child python and returns (returncode, stdout, peak RSS in MB)."""
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(r.returncode); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024); "
            "print(r.stdout)")
    r = subprocess.run([sys.executable, "-c", code, "gst-launch-1.0", "-m"] + shlex.split(pipeline),
                       env=wsitest.gst_env(), capture_output=True, text=True, timeout=600)
    rc, mb, out = r.stdout.split("\n", 2)
    return int(rc), int(mb), out


vckpt = os.path.join(tmp, "val-ckpt.safetensors")
rc, rss, out = peak_rss_mb(
    f"slidesrc location='{data}/images/*.png' loop=3 shuffle=true seed=1 tile-width=96 tile-height=96 ! "
    f"patchify patch-size=48 overlap=0 augment-flip=true seed=2 ! tee name=t "
    f"t. ! queue ! colornorm mode=rescale01 ! seg.sink "
    f"t. ! queue ! labelpatch masks={data}/masks/{{name}}.png binary=true ! seg.annotation "
    f"segment-fcn name=seg mode=train model={init} checkpoint={vckpt} batch-size=8 "
    f"optimizer=adam learning-rate=0.01 ! fakesink " + val)
p = subprocess.CompletedProcess([], rc, out, out)
# the validation source loops forever: it must wait while training runs
c.check(rss < 400, "validation stream waits (bounded queues) while training runs", f"peak RSS {rss} MB")
vals = [(int(m.group(1)), int(m.group(2)), float(m.group(3)), m.group(4)) for m in re.finditer(
    r"segment-fcn-validation, step=\(gint64\)(\d+), epoch=\(int\)\d+, patches=\(guint64\)(\d+), "
    r"loss=\(double\)([\d.e+-]+), accuracy=\(double\)[\d.e+-]+, mean-dice=\(double\)[\d.e+-]+, "
    r"dice=\(double\)< ([^>]*) >", p.stdout)]
vepochs = re.findall(r"segment-fcn-epoch, epoch=\(int\)\d+, .*validation-mean-dice", p.stdout)
if c.check(p.returncode == 0 and vals, "training with a validation stream completes", p.stderr[-800:]):
    c.check(len(vals) == 3 and len(vepochs) == 3,
            "a validation run after every epoch and at the end; epoch messages carry it",
            f"{len(vals)} runs, {len(vepochs)} epoch messages with validation")
    c.check(all(v[1] == 8 for v in vals), "each run is one pass of the validation images (2 x 4 patches)",
            str([v[1] for v in vals]))
    c.check(vals[-1][2] < vals[0][2], "validation loss falls", f"{vals[0][2]:.3f} -> {vals[-1][2]:.3f}")
    # independent: the final checkpoint segments the held-out images in a separate pipeline
    inter = tot = 0
    for i in range(2):
        out = os.path.join(tmp, f"vpred{i}.png")
        q = wsitest.gst_launch(f"slidesrc location={held}/images/img{i:02d}.png tile-width=96 tile-height=96 ! "
                               f"patchify patch-size=48 overlap=0 ! colornorm mode=rescale01 ! "
                               f"segment-fcn model={vckpt} ! stitchsink location={out}")
        pred = wsitest.read_png(out) > 0
        gt = wsitest.read_png(os.path.join(held, "masks", f"img{i:02d}.png")) > 0
        inter += (pred & gt).sum()
        tot += pred.sum() + gt.sum()
    ref = 2 * inter / max(1, tot)
    got = float(vals[-1][3].split(",")[1])
    c.check(abs(got - ref) < 2e-3, "final validation Dice equals an independent inference run",
            f"validation {got:.4f}, inference {ref:.4f}")

# autoencoder pretraining on unlabelled patches, then transfer of its encoder
pre = os.path.join(tmp, "pretrain.safetensors")
p = wsitest.gst_launch(
    f"slidesrc location='{data}/images/*.png' loop=2 tile-width=96 tile-height=96 ! "
    f"patchify patch-size=48 ! colornorm mode=rescale01 ! "
    f"segment-fcn mode=pretrain model={init} checkpoint={pre} batch-size=8 optimizer=adam "
    f"learning-rate=0.005 post-messages=true ! fakesink", messages=True)
losses = [float(x) for x in re.findall(r"segment-fcn-train, step=\(gint64\)\d+, epoch=\(int\)\d+, "
                                       r"loss=\(double\)([\d.e+-]+)", p.stdout)]
if c.check(p.returncode == 0 and len(losses) >= 4, "pretraining runs", p.stderr[-500:]):
    c.check(losses[-1] < losses[0], "reconstruction loss falls", f"{losses[0]:.4f} -> {losses[-1]:.4f}")
    p, steps3, _ = train(init, 1, f"init-from={pre} init-from-prefix=down.,bottom. freeze=down. freeze-steps=2")
    m = re.search(r"segment-fcn-init-from, .*copied=\(int\)(\d+), shape-mismatch=\(int\)(\d+)", p.stdout)
    c.check(p.returncode == 0 and m and int(m.group(1)) > 0 and int(m.group(2)) == 0,
            "init-from copies the pretrained encoder", m.group(0)[:200] if m else p.stderr[-300:])

# bad annotation input
bad = wsitest.tmpdir()
# a missing mask: labelpatch's error ends the training pipeline (a hang here
# would show as a timeout, which fails the check)
nomask = os.path.join(bad, "nomask")
os.makedirs(nomask)
for i in range(8):
    if i != 3:
        write_png(os.path.join(nomask, f"img{i:02d}.png"), np.zeros((96, 96), np.uint8))
try:
    p = wsitest.gst_launch(
        f"slidesrc location='{data}/images/*.png' tile-width=96 tile-height=96 ! patchify patch-size=48 ! "
        f"tee name=t t. ! queue ! colornorm mode=rescale01 ! seg.sink "
        f"t. ! queue ! labelpatch masks={nomask}/{{name}}.png ! seg.annotation "
        f"segment-fcn name=seg mode=train model={init} batch-size=2 ! fakesink", timeout=120)
    c.check(p.returncode != 0 and "img03.png" in p.stderr, "missing mask: error names the file",
            p.stderr.strip()[-300:])
except subprocess.TimeoutExpired:
    c.check(False, "missing mask: error names the file", "gst-launch hung for 120 s")
three = os.path.join(bad, "three")
os.makedirs(three)
for i in range(8):
    write_png(os.path.join(three, f"img{i:02d}.png"), np.full((96, 96), 3, np.uint8))
p = wsitest.gst_launch(
    f"slidesrc location='{data}/images/*.png' tile-width=96 tile-height=96 ! patchify patch-size=48 ! tee name=t "
    f"t. ! queue ! colornorm mode=rescale01 ! seg.sink "
    f"t. ! queue ! labelpatch masks={three}/{{name}}.png ! seg.annotation "
    f"segment-fcn name=seg mode=train model={init} batch-size=2 ! fakesink")
c.check(p.returncode != 0 and "beyond the model's 2 classes" in p.stderr and "img0" in p.stderr,
        "label beyond the classes: error names the patch", p.stderr.strip()[-300:])
p = wsitest.gst_launch(f"videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=48,height=48 ! "
                       f"segment-fcn mode=train model={init} ! fakesink")
c.check(p.returncode != 0 and "annotation pad" in p.stderr, "train without annotation pad: error",
        p.stderr.strip()[-300:])
p = wsitest.gst_launch(f"videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=48,height=48 ! "
                       f"segment-fcn name=seg model={init} ! fakesink "
                       f"videotestsrc num-buffers=2 ! video/x-raw,format=GRAY8,width=48,height=48 ! seg.annotation")
c.check(p.returncode != 0 and "mode=train only" in p.stderr, "annotation pad in inference: error",
        p.stderr.strip()[-300:])
p = wsitest.gst_launch(
    f"slidesrc location='{data}/images/*.png' tile-width=96 tile-height=96 ! patchify patch-size=48 ! tee name=t "
    f"t. ! queue ! colornorm mode=rescale01 ! seg.sink "
    f"t. ! queue ! labelpatch masks={data}/masks/{{name}}.png binary=true ! seg.annotation "
    f"segment-fcn name=seg mode=train model={init} batch-size=2 ! fakesink "
    f"slidesrc location='{held}/images/*.png' tile-width=96 tile-height=96 ! patchify patch-size=48 ! "
    f"colornorm mode=rescale01 ! seg.validation")
c.check(p.returncode != 0 and "validation_annotation" in p.stderr,
        "validation without its annotation pad: error", p.stderr.strip()[-300:])
c.finish()
