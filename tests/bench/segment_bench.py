#!/usr/bin/python3
"""segment-fcn vs the PyTorch reference, same run, same models, same machine.

For U-Net (depth 4, base 32), FCN-8s (VGG) and DeepLabv3 (ResNet-18) on
256x256 patches, batch 1 and 8: patches/s of segment-fcn in a GStreamer
pipeline (from the element's own stats message: forward time only, and wall
time of the whole run) vs PyTorch (2 threads, eval, no_grad, best of NCHW and
channels_last); GFLOP/s as a fraction of the FMA peak. Then the whole
pipeline on the sample slide: time per megapixel and the share of wall time
spent outside segment-fcn.

usage: tests/bench/segment_bench.py [build-dir]   (Debian's /usr/bin/python3)
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

torch.set_num_threads(2)
ENV = dict(os.environ, GST_PLUGIN_PATH=os.path.join(BUILD, "gst"), OMP_NUM_THREADS="2")
TMP = tempfile.mkdtemp(prefix="wsiseg-bench-")
SIZE = 256
MODELS = [
    ("unet-d4-b32", ["--arch", "unet", "--depth", "4", "--base-width", "32"]),
    ("fcn8s-vgg-b32", ["--arch", "fcn8s", "--encoder", "vgg", "--base-width", "32"]),
    ("deeplabv3-resnet18", ["--arch", "deeplabv3", "--encoder", "resnet18"]),
]


def fma_peak():
    """Measured FMA peak of the machine (tests/bench/fma_peak, 2 threads)."""
    out = subprocess.run([os.path.join(BUILD, "tests", "bench", "fma_peak"), "2"],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), out[1]


def conv_flops(model, shape):
    """Multiply-adds x 2 of every Conv2d / ConvTranspose2d for one input."""
    total = [0]

    def hook(mod, inp, out):
        k = mod.kernel_size[0] * mod.kernel_size[1]
        if isinstance(mod, torch.nn.ConvTranspose2d):
            total[0] += 2 * inp[0].numel() * mod.out_channels * k // inp[0].shape[0]
        else:
            total[0] += 2 * out.numel() * mod.in_channels * k // out.shape[0]
    hs = [m.register_forward_hook(hook) for m in model.modules()
          if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    with torch.no_grad():
        model(torch.zeros(*shape))
    for h in hs:
        h.remove()
    return total[0]


def torch_rate(model, batch, reps):
    model.eval()
    best = 0.0
    for mf in (torch.contiguous_format, torch.channels_last):
        m = model.to(memory_format=mf)
        x = torch.randn(batch, 3, SIZE, SIZE).to(memory_format=mf)
        with torch.no_grad():
            m(x)
            for _ in range(reps):
                t = time.perf_counter()
                m(x)
                best = max(best, batch / (time.perf_counter() - t))
    return best


def last_stats(text):
    found = re.findall(r"segment-fcn-stats.*", text)
    if not found:
        return None
    line = found[-1]
    get = lambda k: float(re.search(k + r"=\(double\)([\d.e+-]+)", line).group(1))
    return {"pps": get("patches-per-second"), "share": get("inference-share"),
            "lat": get("mean-batch-latency-ms")}


def gst_rate(model_path, batch, n):
    t = time.perf_counter()
    p = subprocess.run(["gst-launch-1.0", "-m", "videotestsrc", f"num-buffers={n}", "pattern=snow",
                        "!", f"video/x-raw,format=RGB,width={SIZE},height={SIZE}",
                        "!", "segment-fcn", f"model={model_path}", f"batch-size={batch}",
                        "!", "fakesink"], env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - t
    st = last_stats(p.stdout)
    if p.returncode != 0 or not st:
        sys.exit(f"segment-fcn run failed: {p.stderr[-500:]}")
    # forward-only rate: patches / time spent in forward passes
    fwd = n / (st["lat"] / 1000 * (n / batch))
    return fwd, n / wall


peak, isa = fma_peak()
print(f"machine: {os.cpu_count()} cores, FMA peak {peak:.0f} GFLOP/s measured "
      f"(register-resident {isa} FMA loop, 2 threads); torch {torch.__version__}")
print(f"{SIZE}x{SIZE} patches, random weights; segment-fcn: forward-only rate "
      "(from its stats message) and whole gst-launch wall rate incl. start-up\n")
print("| model | batch | GFLOP/patch | segment-fcn patches/s | (wall) | PyTorch patches/s | ratio | segment-fcn GFLOP/s | % peak |")
print("|---|---|---|---|---|---|---|---|---|")
for name, args in MODELS:
    path = os.path.join(TMP, name + ".safetensors")
    subprocess.run([sys.executable, os.path.join(REF, "export_model.py"), path, "--seed", "1",
                    "--classes", "bg,fg"] + args, check=True, capture_output=True)
    model, _ = modelfile.load_model(path)
    gflop = conv_flops(model.eval(), (1, 3, SIZE, SIZE)) / 1e9
    for batch in (1, 8):
        n = 16 if batch == 1 else 32
        fwd, wall = gst_rate(path, batch, n)
        ref = torch_rate(model, batch, 3 if batch == 1 else 2)
        g = fwd * gflop
        print(f"| {name} | {batch} | {gflop:.2f} | {fwd:.2f} | ({wall:.2f}) | {ref:.2f} | "
              f"{fwd / ref:.2f}x | {g:.0f} | {100 * g / peak:.0f}% |", flush=True)

# Whole pipeline on the sample slide.
slide = os.path.join(ROOT, "data", "cmu-1-small-region.svs")
unet = os.path.join(TMP, "unet-d4-b32.safetensors")
out = os.path.join(TMP, "mask.png")
t = time.perf_counter()
p = subprocess.run(["gst-launch-1.0", "-m", "slidesrc", f"location={slide}", "!",
                    "patchify", "patch-size=256", "overlap=32", "!", "colornorm", "mode=rescale01", "!",
                    "segment-fcn", f"model={unet}", "batch-size=8", "!",
                    "stitchsink", f"location={out}"], env=ENV, capture_output=True, text=True)
wall = time.perf_counter() - t
st = last_stats(p.stdout)
if p.returncode != 0 or not st:
    sys.exit(f"pipeline failed: {p.stderr[-500:]}")
mp = 2220 * 2967 / 1e6
print(f"\nwhole pipeline, sample slide {mp:.2f} MPix, U-Net d4 b32, patch 256 overlap 32, batch 8:")
print(f"  wall {wall:.1f} s = {wall / mp:.2f} s/MPix; inside segment-fcn's forward "
      f"{100 * st['share']:.1f}% of the streaming time, outside {100 * (1 - st['share']):.1f}%")
