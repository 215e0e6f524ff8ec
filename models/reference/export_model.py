#!/usr/bin/python3
"""Writes a gst-wsiseg model file (safetensors) from a PyTorch checkpoint or
from a random initialisation.

  export_model.py out.safetensors --arch unet --classes background,tumor
  export_model.py out.safetensors --arch deeplabv3 --encoder resnet18 \\
      --checkpoint trained.pt --preprocess standardize \\
      --mean 0.7,0.55,0.7 --std 0.15,0.2,0.15 --mpp 0.5 --patch-size 512

--checkpoint takes a state_dict (or a dict holding one under "state_dict"
or "model") saved with torch.save from the reference modules.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import modelfile  # noqa: E402
import wsinn_ref  # noqa: E402


def floats(s):
    return [float(x) for x in s.split(",")]


def parse_colors(s, n):
    cols = []
    for c in s.split(","):
        c = c.strip().lstrip("#")
        if len(c) != 6:
            raise argparse.ArgumentTypeError(f"colour {c!r}: use RRGGBB hex")
        cols.append([int(c[i:i + 2], 16) for i in (0, 2, 4)])
    if len(cols) != n:
        raise SystemExit(f"--colors lists {len(cols)} colours for {n} classes")
    return cols


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output")
    p.add_argument("--arch", required=True, choices=wsinn_ref.ARCHS)
    p.add_argument("--encoder", choices=wsinn_ref.ENCODERS + ("unet",))
    p.add_argument("--classes", default="background,tissue",
                   help="comma-separated class names (their count is n_classes)")
    p.add_argument("--colors", help="comma-separated RRGGBB, one per class")
    p.add_argument("--depth", type=int, help="unet levels (default 4)")
    p.add_argument("--base-width", type=int,
                   help="first-level width (unet/vgg 32, resnet 64)")
    p.add_argument("--output-stride", type=int, choices=(8, 16),
                   help="deeplabv3 encoder output stride (default 16)")
    p.add_argument("--aspp-width", type=int, help="deeplabv3 ASPP width (256)")
    p.add_argument("--seed", type=int, default=0, help="random init seed")
    p.add_argument("--randomize-bn", action="store_true",
                   help="random BatchNorm statistics (engine tests)")
    p.add_argument("--checkpoint", help="torch.save'd state_dict to export")
    p.add_argument("--preprocess", default="rescale01", choices=modelfile.PREPROCESS)
    p.add_argument("--mean", type=floats, help="standardize mean, r,g,b on [0,1]")
    p.add_argument("--std", type=floats, help="standardize std, r,g,b on [0,1]")
    p.add_argument("--mpp", type=float, default=0.0,
                   help="microns per pixel of the training patches (0 unknown)")
    p.add_argument("--patch-size", type=int, default=0, help="training patch side")
    p.add_argument("--dtype", default="F32", choices=("F32", "F16", "BF16"))
    p.add_argument("--description", default="")
    p.add_argument("--model-card", default="", help="URL or path of a model card")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                   help="extra metadata (string value), repeatable")
    a = p.parse_args(argv)

    names = [c.strip() for c in a.classes.split(",") if c.strip()]
    extra = {}
    for kv in a.meta:
        if "=" not in kv:
            p.error(f"--meta {kv!r}: use KEY=VALUE")
        k, v = kv.split("=", 1)
        extra[k] = v
    meta = modelfile.make_metadata(
        a.arch, len(names), encoder=a.encoder, class_names=names,
        class_colors=parse_colors(a.colors, len(names)) if a.colors else None,
        preprocess=a.preprocess, mean=a.mean, std=a.std, mpp=a.mpp,
        patch_size=a.patch_size, description=a.description,
        model_card=a.model_card, extra=extra, depth=a.depth,
        base_width=a.base_width, output_stride=a.output_stride,
        aspp_width=a.aspp_width)

    torch.manual_seed(a.seed)
    model = wsinn_ref.build_model(meta)
    if a.checkpoint:
        state = torch.load(a.checkpoint, map_location="cpu")
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
        model.load_state_dict(state, strict=True)
    elif a.randomize_bn:
        g = torch.Generator().manual_seed(a.seed + 1)
        wsinn_ref.randomize_batchnorm(model, g)
    model.eval()
    modelfile.save_model(model, a.output, meta, a.dtype)
    n = sum(v.numel() for v in wsinn_ref.exported_state(model).values())
    print(f"wrote {a.output}: {meta['arch']}/{meta['encoder']}, "
          f"{len(names)} classes, {n} parameters ({a.dtype})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
