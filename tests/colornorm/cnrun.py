"""Runs colornorm through gst-launch on raw RGB patches (filesrc ! rawvideoparse)."""
import os
import re
import shlex
import subprocess

import numpy as np

import wsitest

PROP_RE = re.compile(r"GstColorNorm:cn: ([a-z-]+) = (.*)$")


def parse_value(text):
    text = text.strip()
    if text.startswith("<"):
        return [float(x) for x in re.findall(r"\)\s*([-+0-9.eE]+|nan|inf)", text)]
    if text in ("true", "false"):
        return text == "true"
    return text


def run(patches, props="", video=False, tmp=None, frames_per_file=None):
    """patches: (N, H, W, 3) uint8. Returns (output array, {prop: [values...]}).
    Tensor output: (N, H, W, 3) float32; video output: uint8."""
    tmp = tmp or wsitest.tmpdir()
    n, h, w, _ = patches.shape
    src = os.path.join(tmp, "in.rgb")
    out = os.path.join(tmp, "out.bin")
    patches.astype(np.uint8).tofile(src)
    caps = "! video/x-raw " if video else ""
    pipe = (f"filesrc location={src} blocksize={h * w * 3} ! "
            f"rawvideoparse width={w} height={h} format=rgb framerate=1/1 ! "
            f"colornorm name=cn {props} {caps}! filesink location={out}")
    proc = subprocess.run(["gst-launch-1.0", "-v"] + shlex.split(pipe),
                          env=wsitest.gst_env(), capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"gst-launch failed: {pipe}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    props_seen = {}
    for line in proc.stdout.splitlines():
        m = PROP_RE.search(line)
        if m:
            props_seen.setdefault(m.group(1), []).append(parse_value(m.group(2)))
    if video:
        arr = np.fromfile(out, dtype=np.uint8)
    else:
        arr = np.fromfile(out, dtype=np.float32)
    expected = n * h * w * 3
    if arr.size != expected:
        raise RuntimeError(f"output has {arr.size} values, expected {expected}")
    return arr.reshape(n, h, w, 3), props_seen


def arr_prop(v):
    return "<" + ",".join(f"{float(x):.10g}" for x in v) + ">"


def sample_patches(size=256, count=6, min_tissue=0.5, level=0, skip=0):
    """Tissue-rich patches of the sample slide, raster order."""
    import openslide
    import cnref
    slide = wsitest.SAMPLE_SLIDE
    if not os.path.exists(slide):
        wsitest.skip(f"sample slide {slide} missing")
    s = openslide.OpenSlide(slide)
    W, H = s.level_dimensions[level]
    img = np.asarray(s.read_region((0, 0), level, (W, H)).convert("RGB"))
    out = []
    for y in range(0, H - size + 1, size):
        for x in range(0, W - size + 1, size):
            p = img[y:y + size, x:x + size]
            if cnref.tissue_mask(p).mean() >= min_tissue:
                out.append(p)
    out = out[skip:skip + count]
    return np.stack(out), img
