"""Helpers of the labelpatch tests: run the harness driver, write masks,
numpy references of the documented lookup convention."""
import os
import subprocess
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import wsitest  # noqa: E402

DRIVER = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    wsitest.BUILD_ROOT, "tests", "annotate", "labelpatch-run")


class Result:
    def __init__(self, proc, labels, fmt, metas):
        self.proc = proc
        self.returncode = proc.returncode
        self.stderr = proc.stderr
        self.labels = labels      # list of arrays, one per patch
        self.format = fmt
        self.metas = metas        # list of dicts

    def error(self):
        return "\n".join(l for l in self.stderr.splitlines() if l.startswith("ERROR"))


def run(props, slide, patches, size=(64, 48), slide_size=None, ds=None,
        valid=None, flip_h=False, flip_v=False, rot90=0, extra=()):
    """Runs labelpatch on patches [(x, y) or (x, y, slide)] of size (w, h)
    before augmentation; returns a Result with (h', w') label arrays."""
    out = os.path.join(wsitest.tmpdir(), "labels.raw")
    args = [DRIVER, "--out", out, "--size", f"{size[0]}x{size[1]}"]
    if slide is not None:
        args += ["--slide", slide]
    for k, v in props.items():
        args += ["--set", f"{k}={v}"]
    for p in patches:
        args += ["--patch=" + ",".join(str(v) for v in p)]
    if slide_size:
        args += ["--slide-size", f"{slide_size[0]}x{slide_size[1]}"]
    if ds:
        args += ["--ds", str(ds)]
    if valid:
        args += ["--valid", ",".join(str(v) for v in valid)]
    if flip_h:
        args.append("--flip-h")
    if flip_v:
        args.append("--flip-v")
    if rot90:
        args += ["--rot90", str(rot90)]
    args += list(extra)
    proc = subprocess.run(args, env=wsitest.gst_env(), capture_output=True,
                          text=True, timeout=60)
    fmt, metas, labels = None, [], []
    for line in proc.stdout.splitlines():
        f = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
        if line.startswith("format="):
            fmt = dict(kv.split("=", 1) for kv in line.split())
        elif line.startswith("meta"):
            metas.append(f)
    if fmt and os.path.exists(out):
        dtype = np.dtype("<u2") if fmt["format"] == "GRAY16_LE" else np.uint8
        w, h = int(fmt["width"]), int(fmt["height"])
        raw = np.fromfile(out, dtype)
        n = raw.size // (w * h)
        labels = list(raw[:n * w * h].reshape(n, h, w))
    return Result(proc, labels, fmt and fmt["format"], metas)


def write_png(path, array, mode=None):
    """Writes a grayscale PNG: uint8 -> 8-bit, uint16 -> 16-bit; mode 'P'
    (indexed, palette index = value) or '1' (1-bit, values 0/1)."""
    if mode == "P":
        im = Image.frombytes("P", (array.shape[1], array.shape[0]),
                             array.astype(np.uint8).tobytes())
        im.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    elif mode == "1":
        im = Image.fromarray((array > 0).astype(np.uint8) * 255, "L").convert("1")
    elif array.dtype == np.uint16:
        im = Image.fromarray(array.astype(np.uint16), "I;16")
    else:
        im = Image.fromarray(array.astype(np.uint8), "L")
    tmp = path + ".tmp.png"
    im.save(tmp)
    os.replace(tmp, path)
    return path


def crop(full, x, y, w, h, fill):
    """full[y:y+h, x:x+w] with `fill` where the window leaves the array."""
    out = np.full((h, w), fill, full.dtype)
    H, W = full.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 > x0 and y1 > y0:
        out[y0 - y:y1 - y, x0 - x:x1 - x] = full[y0:y1, x0:x1]
    return out


def augment(a, flip_h, flip_v, rot90):
    """Same order as patchify: fliplr, flipud, rot90 (counter-clockwise)."""
    if flip_h:
        a = np.fliplr(a)
    if flip_v:
        a = np.flipud(a)
    return np.rot90(a, rot90)


def unaugment(a, flip_h, flip_v, rot90):
    """Inverse of augment()."""
    a = np.rot90(a, -rot90)
    if flip_v:
        a = np.flipud(a)
    if flip_h:
        a = np.fliplr(a)
    return a


def diff_summary(got, ref):
    if got.shape != ref.shape:
        return f"shape {got.shape} vs {ref.shape}"
    bad = np.argwhere(got != ref)
    if len(bad) == 0:
        return "identical"
    j, i = bad[0]
    return f"{len(bad)} pixels differ, first at (x={i}, y={j}): {got[j, i]} vs {ref[j, i]}"
