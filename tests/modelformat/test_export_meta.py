#!/usr/bin/python3
"""export_model.py -> C parser: metadata, tensor names and shapes as the
reference module defines them, the model metadata check passes; F16/BF16
exports convert to the values Python decodes."""
import json
import os
import subprocess
import sys

import numpy as np
import torch

import mfutil
import export_model
import load_model
import modelfile
import safetensors_io
import wsinn_ref
import wsitest

torch.set_num_threads(1)  # shared 2-core machine
c = wsitest.Checks()
tmp = wsitest.tmpdir()
EXPORT = os.path.join(mfutil.REFERENCE, "export_model.py")
LOAD = os.path.join(mfutil.REFERENCE, "load_model.py")

configs = [
    ("unet", ["--depth", "3", "--base-width", "4", "--classes", "bg,tumor,stroma",
              "--colors", "000000,ff0000,00ff00", "--mpp", "0.5", "--patch-size", "256"]),
    ("fcn8s", ["--encoder", "vgg", "--base-width", "4", "--preprocess", "rescale11"]),
    ("fcn8s", ["--encoder", "resnet18", "--base-width", "4"]),
    ("deeplabv3", ["--encoder", "resnet18", "--base-width", "4", "--aspp-width", "8",
                   "--preprocess", "standardize", "--mean", "0.7,0.55,0.7",
                   "--std", "0.15,0.2,0.15", "--dtype", "F16"]),
    ("deeplabv3", ["--encoder", "vgg", "--base-width", "4", "--aspp-width", "8",
                   "--output-stride", "8", "--classes", "tissue", "--dtype", "BF16",
                   "--meta", "trained_on=synthetic", "--model-card", "docs/x.md"]),
    ("deeplabv3", ["--encoder", "resnet34", "--base-width", "4", "--aspp-width", "8"]),
]

for i, (arch, opts) in enumerate(configs):
    label = f"{arch} {' '.join(opts[:2])}"
    path = os.path.join(tmp, f"m{i}.safetensors")
    argv = [path, "--arch", arch, "--seed", str(i), "--randomize-bn", *opts]
    if i == 0:  # the command line once, the rest in-process (torch start-up is slow)
        p = subprocess.run([sys.executable, EXPORT, *argv], capture_output=True, text=True)
        rc, out = p.returncode, (p.stdout + p.stderr).strip()[-300:]
    else:
        rc, out = export_model.main(argv), ""
    if not c.check(rc == 0, f"{label}: export", out):
        continue
    py_tensors, py_meta, _ = safetensors_io.load(path)
    info = mfutil.st_info(path)
    c.check(info["metadata"] == py_meta, f"{label}: C metadata equals Python's")
    m = info["metadata"]
    c.check(m["arch"] == arch and m["format"] == "gst-wsiseg-model"
            and m["format_version"] == "1", f"{label}: arch/format keys")
    p = mfutil.st_tool("checkmeta", path)
    c.check(p.returncode == 0, f"{label}: C model metadata check", p.stdout.strip())
    c.check(modelfile.check_metadata(m) == [], f"{label}: Python metadata check")

    ref = wsinn_ref.exported_state(wsinn_ref.build_model(m))
    got = {t["name"]: t["shape"] for t in info["tensors"]}
    want = {k: list(v.shape) for k, v in ref.items()}
    c.check(got == want, f"{label}: C sees the reference tensor names and shapes",
            f"{len(got)} tensors")
    c.check([t["name"] for t in info["tensors"]] == list(ref),
            f"{label}: file order = state_dict order")

    if "--classes" in opts:
        names = opts[opts.index("--classes") + 1].split(",")
        c.check(json.loads(m["class_names"]) == names and m["n_classes"] == str(len(names)),
                f"{label}: class names")
        c.check(m["output"] == ("sigmoid" if len(names) == 1 else "softmax"),
                f"{label}: output activation")
    if "--colors" in opts:
        c.check(json.loads(m["class_colors"]) == [[0, 0, 0], [255, 0, 0], [0, 255, 0]],
                f"{label}: class colours")
    if "--mpp" in opts:
        c.check(float(m["mpp"]) == 0.5 and m["patch_size"] == "256", f"{label}: mpp, patch size")
    if "--mean" in opts:
        c.check(m["preprocess"] == "standardize" and json.loads(m["mean"]) == [0.7, 0.55, 0.7]
                and json.loads(m["std"]) == [0.15, 0.2, 0.15], f"{label}: standardize stats")
    if "--meta" in opts:
        c.check(m.get("trained_on") == "synthetic" and m.get("model_card") == "docs/x.md",
                f"{label}: free metadata")
    if "--dtype" in opts:
        dt = opts[opts.index("--dtype") + 1]
        c.check(all(t["dtype"] == dt for t in info["tensors"]), f"{label}: stored as {dt}")
        out = os.path.join(tmp, f"m{i}-f32.safetensors")
        p = mfutil.st_tool("convert", path, out)
        conv = safetensors_io.load(out)[0] if p.returncode == 0 else {}
        same = all(np.array_equal(conv.get(k), np.asarray(v, np.float32))
                   for k, v in py_tensors.items())
        c.check(same, f"{label}: C {dt} -> F32 equals numpy's conversion")
    if i == len(configs) - 1:
        p = subprocess.run([sys.executable, LOAD, path], capture_output=True, text=True)
        c.check(p.returncode == 0, f"{label}: load_model.py verifies it",
                (p.stdout + p.stderr).strip()[-300:])
    else:
        c.check(load_model.main([path]) == 0, f"{label}: load_model verifies it")
c.finish()
