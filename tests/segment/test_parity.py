"""segment-fcn's probabilities equal the PyTorch reference's within 1e-4
(relative to max(1, |p|)) on real patches of the sample slide, for each
architecture, with random weights exported by models/reference. Both input
paths: colornorm tensors and RGB (the element preprocesses)."""
import os
import subprocess
import sys

import numpy as np

import wsitest

try:
    import torch
except ImportError:
    wsitest.skip("python3-torch is not installed (tests/run.sh installs it)")

REF = os.path.join(wsitest.SOURCE_ROOT, "models", "reference")
sys.path.insert(0, REF)
import modelfile  # noqa: E402
from slides import openslide_region  # noqa: E402

torch.set_num_threads(2)
c = wsitest.Checks()
tmp = wsitest.tmpdir()
P = 64
REGION = (600, 900, 2 * P, P)   # tissue on the sample slide: two patches

ref_rgb, _ = openslide_region(wsitest.SAMPLE_SLIDE, 0, REGION)
patches = [ref_rgb[:, i * P:(i + 1) * P] for i in range(2)]

CONFIGS = [
    ("unet", ["--arch", "unet", "--depth", "3", "--base-width", "8",
              "--classes", "bg,nucleus,boundary"], "rescale01"),
    ("fcn8s-vgg", ["--arch", "fcn8s", "--encoder", "vgg", "--base-width", "8",
                   "--classes", "bg,tumour"], "rescale11"),
    ("fcn8s-resnet18", ["--arch", "fcn8s", "--encoder", "resnet18", "--base-width", "8",
                        "--classes", "bg,a,b"], "rescale01"),
    ("deeplabv3-resnet34", ["--arch", "deeplabv3", "--encoder", "resnet34",
                            "--base-width", "8", "--aspp-width", "16",
                            "--classes", "bg,gland"], "standardize"),
    ("unet-sigmoid", ["--arch", "unet", "--depth", "2", "--base-width", "8",
                      "--classes", "nucleus"], "rescale01"),
]


def export(name, args, pre):
    path = os.path.join(tmp, name + ".safetensors")
    extra = ["--preprocess", pre]
    if pre == "standardize":
        extra += ["--mean", "0.7,0.55,0.7", "--std", "0.15,0.2,0.15"]
    subprocess.run([sys.executable, os.path.join(REF, "export_model.py"), path,
                    "--seed", "7", "--randomize-bn"] + args + extra, check=True)
    return path


def torch_probs(model_path):
    model, meta = modelfile.load_model(model_path)
    import load_model
    out = []
    for p in patches:
        x = load_model.preprocess(p, meta)
        out.append(load_model.run(model, x)[0].transpose(1, 2, 0))  # H W C
    return np.stack(out), meta


def gst_probs(model_path, n_classes, tensor_input):
    raw = os.path.join(tmp, "probs.raw")
    norm = "colornorm mode={} ! ".format(PRE) if tensor_input else ""
    x, y, w, h = REGION
    p = wsitest.gst_launch(
        f"slidesrc location={wsitest.SAMPLE_SLIDE} region={x},{y},{w},{h} "
        f"tile-width={P} tile-height={P} ! {norm}"
        f"segment-fcn model={model_path} output=probabilities batch-size=2 ! "
        f"filesink location={raw}")
    if p.returncode != 0:
        return None, p.stderr[-800:]
    return np.fromfile(raw, np.float32).reshape(2, P, P, n_classes), ""


for name, args, PRE in CONFIGS:
    model_path = export(name, args, PRE)
    ref, meta = torch_probs(model_path)
    n_classes = ref.shape[-1]
    paths = [True, False] if PRE != "standardize" else [False]
    for tensor_input in paths:
        label = f"{name} ({'colornorm tensors' if tensor_input else 'RGB'})"
        got, err = gst_probs(model_path, n_classes, tensor_input)
        if not c.check(got is not None, f"{label}: pipeline runs", err):
            continue
        rel = np.abs(got - ref) / np.maximum(1.0, np.abs(ref))
        c.check(rel.max() <= 1e-4, f"{label}: equals PyTorch", f"max rel diff {rel.max():.2e}")
c.finish()
