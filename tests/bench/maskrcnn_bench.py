#!/usr/bin/python3
"""segment-maskrcnn vs torchvision's Mask R-CNN, same run, same weights.

The shipped nuclei model (models/weights/nuclei-maskrcnn.safetensors) when it
exists, else a model of the same configuration (ResNet-18 FPN, NUCLEI_CONFIG:
slim heads for hundreds of small objects per patch) with calibrated random
weights (export_model.py --init calibrated: frozen BN fitted to H&E patches,
so the detector finds objects and both sides do the same post-processing);
256x256 patches of the sample slide at 0.5 um/px.
Inference: patches/s at batch 1 and 8 -- segment-maskrcnn from its own stats
message (time in batches only) and the whole gst-launch wall rate, torchvision
in eval + no_grad with torch threads = cores. Training: seconds per step of
segment-maskrcnn mode=train (from its -train messages, SGD, batch 1) and of
torchvision's training forward + backward + SGD step on the same patch size.
GFLOP/s against the measured FMA peak (convolutions and linear layers counted
on the torchvision forward, 2 x multiply-adds).

usage: tests/bench/maskrcnn_bench.py [build-dir]   (Debian's /usr/bin/python3)
"""
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
REF = os.path.join(ROOT, "models", "reference")
sys.path.insert(0, REF)
import modelfile  # noqa: E402

THREADS = os.cpu_count()
torch.set_num_threads(THREADS)
ENV = dict(os.environ, GST_PLUGIN_PATH=os.path.join(BUILD, "gst"), OMP_NUM_THREADS=str(THREADS))
TMP = tempfile.mkdtemp(prefix="wsiseg-mrcnn-bench-")
SIZE = 256
SLIDE = os.path.join(ROOT, "data", "cmu-1-small-region.svs")
SHIPPED = os.path.join(ROOT, "models", "weights", "nuclei-maskrcnn.safetensors")
# the shipped nuclei model's sizes (pipelines/train/train.sh nuclei-maskrcnn)
NUCLEI_CONFIG = ["--backbone", "resnet18", "--meta", "fpn_channels=128",
                 "--meta", "representation=256", "--meta", "mask_width=64"]
SOURCE = (f"slidesrc location={SLIDE} target-mpp=0.5 ! "
          f"patchify patch-size={SIZE} overlap=0 min-tissue=0.5")


def fma_peak():
    out = subprocess.run([os.path.join(BUILD, "tests", "bench", "fma_peak"), str(THREADS)],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), out[1]


def patches(n):
    """n RGB patches of the sample slide, as the pipeline cuts them."""
    raw = os.path.join(TMP, "patches.raw")
    subprocess.run(f"gst-launch-1.0 -q {SOURCE} ! filesink location={raw}", shell=True,
                   check=True, env=ENV)
    a = np.fromfile(raw, np.uint8).reshape(-1, SIZE, SIZE, 3)
    reps = -(-n // len(a))
    return np.concatenate([a] * reps)[:n]


def flops(model, x):
    """2 x multiply-adds of every conv and linear layer in one eval forward."""
    total = [0]

    def conv(mod, inp, out):
        k = mod.kernel_size[0] * mod.kernel_size[1]
        if isinstance(mod, torch.nn.ConvTranspose2d):
            total[0] += 2 * inp[0].numel() * mod.out_channels * k
        else:
            total[0] += 2 * out.numel() * mod.in_channels * k // mod.groups

    def lin(mod, inp, out):
        total[0] += 2 * out.numel() * mod.in_features

    hs = [m.register_forward_hook(conv) for m in model.modules()
          if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    hs += [m.register_forward_hook(lin) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        dets = model(list(x))
    for h in hs:
        h.remove()
    return total[0] / len(x), sum(len(d["boxes"]) for d in dets) / len(x)


def torch_rate(model, x, batch, reps):
    model.eval()
    best = 0.0
    with torch.no_grad():
        model(list(x[:batch]))
        for r in range(reps):
            xb = x[(r * batch) % len(x):][:batch]
            t = time.perf_counter()
            model(list(xb))
            best = max(best, len(xb) / (time.perf_counter() - t))
    return best


def last_stats(text, name):
    found = re.findall(name + r"-stats.*", text)
    if not found:
        return None
    get = lambda k: float(re.search(k + r"=\(double\)([\d.e+-]+)", found[-1]).group(1))
    return {"lat": get("mean-batch-latency-ms"), "batches": None}


def gst_rate(model_path, batch):
    t = time.perf_counter()
    p = subprocess.run(f"gst-launch-1.0 -m {SOURCE} ! "
                       f"segment-maskrcnn model={model_path} batch-size={batch} post-messages=true ! "
                       f"fakesink", shell=True, env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - t
    st = last_stats(p.stdout, "segment-maskrcnn")
    if p.returncode != 0 or not st:
        sys.exit(f"segment-maskrcnn run failed: {p.stderr[-800:]}")
    got = int(re.findall(r"segment-maskrcnn-stats.*?patches=\(guint64\)(\d+)", p.stdout)[-1])
    batches = -(-got // batch)
    return got / (st["lat"] / 1000 * batches), got / wall, got


def disc_training_data():
    """A 1024x1024 H&E-like image with discs and its instance map (PNG)."""
    from PIL import Image
    rng = np.random.default_rng(1)
    h = w = 1024
    img = np.full((h, w, 3), (235, 200, 225), np.uint8)
    inst = np.zeros((h, w), np.uint16)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(1, 400):
        cy, cx, r = rng.integers(8, h - 8), rng.integers(8, w - 8), rng.integers(4, 10)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        inst[m] = i
        img[m] = (90, 40, 140)
    d = os.path.join(TMP, "train")
    os.makedirs(os.path.join(d, "labels"), exist_ok=True)
    Image.fromarray(img).save(os.path.join(d, "img.png"))
    Image.fromarray(inst.astype(np.uint16), "I;16").save(os.path.join(d, "labels", "img.png"))
    return d, img, inst


def gst_train_step(model_path):
    """Seconds per step of segment-maskrcnn mode=train over the 16 patches of
    the disc image (median gap between -train messages)."""
    d, _, _ = disc_training_data()
    ckpt = os.path.join(TMP, "ckpt.safetensors")
    cmd = (f"gst-launch-1.0 -m slidesrc location={d}/img.png mpp=0.5 loop=1 ! "
           f"patchify patch-size={SIZE} overlap=0 ! tee name=t "
           f"t. ! queue ! seg.sink "
           f"t. ! queue ! labelpatch masks={d}/labels/{{name}}.png instance-mode=instances ! "
           f"seg.annotation "
           f"segment-maskrcnn name=seg mode=train model={model_path} checkpoint={ckpt} "
           f"optimizer=sgd learning-rate=0.001 batch-size=1 post-messages=true ! "
           f"fakesink")
    p = subprocess.Popen(cmd, shell=True, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    times = []
    for line in p.stdout:
        if "segment-maskrcnn-train" in line:
            times.append(time.perf_counter())
    err = p.stderr.read()
    p.wait()
    if len(times) < 3:
        return None, (err or "no segment-maskrcnn-train messages")[-300:]
    return float(np.median(np.diff(times))), None


def torch_train_step(model, x, reps):
    _, img, inst = disc_training_data()
    tile = inst[:SIZE, :SIZE].astype(np.int64)
    ids = [i for i in np.unique(tile) if i]
    masks = torch.from_numpy(np.stack([tile == i for i in ids]).astype(np.uint8))
    boxes = []
    for m in masks.numpy():
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    target = [{"boxes": torch.tensor(boxes, dtype=torch.float32),
               "labels": torch.ones(len(ids), dtype=torch.int64), "masks": masks}]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.001)
    model.train()
    ts = []
    for _ in range(reps + 1):
        t = time.perf_counter()
        opt.zero_grad()
        loss = sum(model(list(x[:1]), target).values())
        loss.backward()
        opt.step()
        ts.append(time.perf_counter() - t)
    model.eval()
    return float(np.median(ts[1:]))


def main():
    peak, isa = fma_peak()
    flags = next((ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")), "")
    avx = " ".join(f for f in flags.split() if f.startswith("avx512") or f in ("avx2", "fma"))
    print(f"machine: {THREADS} cores, FMA peak {peak:.0f} GFLOP/s measured ({isa}); "
          f"torch {torch.__version__} with {THREADS} threads; CPU flags: {avx}")
    path = SHIPPED
    if not os.path.exists(path):
        path = os.path.join(TMP, "mrcnn.safetensors")
        subprocess.run([sys.executable, os.path.join(REF, "export_model.py"), path,
                        "--arch", "maskrcnn", "--classes", "background,nucleus", "--mpp", "0.5",
                        "--patch-size", str(SIZE), "--init", "calibrated", "--seed", "1"]
                       + NUCLEI_CONFIG, check=True, capture_output=True)
    print(f"model: {path}")
    model, meta = modelfile.load_model(path)
    rgb = patches(16)
    x = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
    gflop, ndet = flops(model.eval(), x[:4])
    gflop /= 1e9
    print(f"{SIZE}x{SIZE} patches of the sample slide at 0.5 um/px; {gflop:.2f} GFLOP per patch "
          f"(conv + linear, eval), {ndet:.0f} detections per patch on average\n")
    print("| run | batch | segment-maskrcnn | (wall) | torchvision | ratio | segment-maskrcnn GFLOP/s | % peak |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in (1, 8):
        fwd, wall, n = gst_rate(path, batch)
        ref = torch_rate(model, x, batch, 4 if batch == 1 else 2)
        g = fwd * gflop
        print(f"| inference patches/s | {batch} | {fwd:.2f} | ({wall:.2f}) | {ref:.2f} | "
              f"{fwd / ref:.2f}x | {g:.0f} | {100 * g / peak:.0f}% |", flush=True)
    step, why = gst_train_step(path)
    ref = torch_train_step(model, x, 3)
    if step is None:
        print(f"| training step s | 1 | n/a ({why}) | | {ref:.2f} | | | |")
    else:
        # a training step's FLOPs depend on the sampled RoIs, not on the eval forward's
        print(f"| training step s | 1 | {step:.2f} | | {ref:.2f} | {ref / step:.2f}x | - | - |")


if __name__ == "__main__":
    main()
