"""Malformed model files given to segment-fcn: each gives a GStreamer error
naming the problem, gst-launch exits non-zero, no crash (run under ASan in
the asan suite)."""
import os
import struct
import subprocess
import sys

import numpy as np

import wsitest

REF = os.path.join(wsitest.SOURCE_ROOT, "models", "reference")
sys.path.insert(0, REF)
try:
    import safetensors_io  # noqa: E402
except ImportError as e:
    wsitest.skip(f"models/reference needs numpy: {e}")

c = wsitest.Checks()
tmp = wsitest.tmpdir()
good = os.path.join(tmp, "good.safetensors")
r = subprocess.run([sys.executable, os.path.join(REF, "export_model.py"), good,
                    "--arch", "unet", "--depth", "2", "--base-width", "4",
                    "--classes", "bg,fg", "--seed", "1"], capture_output=True, text=True)
if r.returncode != 0:
    wsitest.skip(f"cannot export a model (PyTorch missing?): {r.stderr[-300:]}")
blob = open(good, "rb").read()
tensors, meta, _ = safetensors_io.load(good)


def variant(name, data):
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def resave(name, tensors, meta):
    path = os.path.join(tmp, name)
    safetensors_io.save(path, tensors, meta)
    return path


first = next(iter(tensors))
wrong_shape = dict(tensors)
wrong_shape[first] = np.zeros((3, 3), np.float32)
nan_weights = {k: v.copy() for k, v in tensors.items()}
nan_weights[first].flat[0] = np.nan
missing = dict(tensors)
del missing[first]
extra = dict(tensors)
extra["stray.weight"] = np.zeros(4, np.float32)

cases = [
    ("missing file", os.path.join(tmp, "nope.safetensors"), ["nope.safetensors"]),
    ("directory", tmp, []),
    ("empty file", variant("empty.safetensors", b""), []),
    ("truncated", variant("trunc.safetensors", blob[: len(blob) // 2]), []),
    ("lying header length", variant("lie.safetensors", struct.pack("<Q", len(blob) * 4) + blob[8:]),
     ["header"]),
    ("random bytes", variant("random.safetensors", np.random.default_rng(0).bytes(4096)), []),
    ("unknown arch", resave("arch.safetensors", tensors, {**meta, "arch": "transformer9000"}),
     ["transformer9000"]),
    ("wrong shape", resave("shape.safetensors", wrong_shape, meta), [first]),
    ("NaN weights", resave("nan.safetensors", nan_weights, meta), [first]),
    ("missing tensor", resave("missing.safetensors", missing, meta), [first]),
    ("stray tensor", resave("extra.safetensors", extra, meta), ["stray.weight"]),
    ("colour not an integer", resave("color.safetensors", tensors,
                                     {**meta, "class_colors": '[[0, 0, 0], [0, "200", 0]]'}), ["class_colors"]),
    ("mean not numeric", resave("mean.safetensors", tensors,
                                {**meta, "preprocess": "standardize", "mean": '[0.5, "x", 0.5]',
                                 "std": "[0.2, 0.2, 0.2]"}), ["mean"]),
    ("mpp with trailing text", resave("mpp.safetensors", tensors, {**meta, "mpp": "0.5um"}), ["mpp"]),
    ("patch_size not an integer", resave("ps.safetensors", tensors, {**meta, "patch_size": "12x"}),
     ["patch_size"]),
]

for name, path, words in cases:
    p = wsitest.gst_launch(
        f"videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=64,height=64 ! "
        f"segment-fcn model={path} ! fakesink")
    err = p.stderr + p.stdout
    ok = p.returncode != 0 and "ERROR" in err and all(w in err for w in words)
    c.check(ok, f"{name}: error names the problem", err.strip().splitlines()[-3:] if err else "")
    c.check(wsitest.asan_clean(p), f"{name}: no sanitizer report")
c.finish()
