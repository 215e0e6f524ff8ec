#!/usr/bin/python3
"""Loads a gst-wsiseg model file into the PyTorch reference module, checks
its metadata and tensor names/shapes, and optionally runs an input.

  load_model.py model.safetensors                     # verify + summary
  load_model.py model.safetensors --input x.npy --output probs.npy
  load_model.py model.safetensors --rgb patch.png --output probs.npy

--input: float32 .npy, N x 3 x H x W (or N x H x W x 3 with --nhwc), already
preprocessed. --rgb: an 8-bit RGB image, preprocessed here as the metadata
says. --output: probabilities (softmax/sigmoid), same layout as the input.

arch maskrcnn: the file loads into torchvision's MaskRCNN built with the
same backbone, anchors, sizes and thresholds (maskrcnn_ref.build_model);
--output is then an .npz with, per image i, boxes_i [K, 4], scores_i,
labels_i and masks_i [K, H, W] (pasted mask probabilities).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import modelfile  # noqa: E402


def preprocess(rgb, meta):
    """uint8 H x W x 3 -> float32 1 x 3 x H x W following the metadata."""
    x = rgb.astype(np.float32)
    mode = meta["preprocess"]
    if mode == "rescale01":
        x = x / 255.0
    elif mode == "rescale11":
        x = x / 127.5 - 1.0
    else:
        mean = np.array(json.loads(meta["mean"]), np.float32)
        std = np.array(json.loads(meta["std"]), np.float32)
        x = (x / 255.0 - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def run(model, x):
    with torch.no_grad():
        return model.predict(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--input", help="preprocessed float32 .npy")
    p.add_argument("--nhwc", action="store_true", help="--input/--output are NHWC")
    p.add_argument("--rgb", help="8-bit RGB image (png, ...) to preprocess and run")
    p.add_argument("--output", help="where to save the probabilities (.npy)")
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        model, meta = modelfile.load_model(a.model)
    except (ValueError, KeyError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n = sum(v.numel() for v in model.state_dict().values() if v.is_floating_point())
    mrcnn = meta["arch"] == "maskrcnn"
    print(f"{a.model}: {meta['arch']}/{meta.get('encoder') or meta.get('backbone')}, "
          f"{meta['n_classes']} classes "
          f"{json.loads(meta['class_names'])}, {n} parameters, preprocess "
          f"{meta['preprocess']}, mpp {meta.get('mpp', '0')}, size multiple "
          f"{meta.get('size_multiple', '32')}")
    x = None
    if a.input:
        x = np.load(a.input).astype(np.float32)
        if a.nhwc:
            x = x.transpose(0, 3, 1, 2)
    elif a.rgb:
        import skimage.io
        img = skimage.io.imread(a.rgb)[..., :3]
        x = preprocess(img, meta)
    if x is not None and mrcnn:
        import maskrcnn_ref
        dets = maskrcnn_ref.detect(model, torch.from_numpy(np.ascontiguousarray(x, np.float32)))
        out = {}
        for i, d in enumerate(dets):
            print(f"image {i}: {len(d['boxes'])} detections")
            out.update({f"boxes_{i}": d["boxes"].numpy(), f"scores_{i}": d["scores"].numpy(),
                        f"labels_{i}": d["labels"].numpy(), f"masks_{i}": d["masks"][:, 0].numpy()})
        if a.output:
            np.savez(a.output, **out)
    elif x is not None:
        y = run(model, x)
        if a.nhwc:
            y = y.transpose(0, 2, 3, 1)
        print(f"output {y.shape}, min {y.min():.4g}, max {y.max():.4g}")
        if a.output:
            np.save(a.output, np.ascontiguousarray(y))
    return 0


if __name__ == "__main__":
    sys.exit(main())
