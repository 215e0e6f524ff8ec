#!/usr/bin/python3
"""Writes a gst-wsiseg model file (safetensors) from a PyTorch checkpoint or
from a random initialisation.

  export_model.py out.safetensors --arch unet --classes background,tumor
  export_model.py out.safetensors --arch deeplabv3 --encoder resnet18 \\
      --checkpoint trained.pt --preprocess standardize \\
      --mean 0.7,0.55,0.7 --std 0.15,0.2,0.15 --mpp 0.5 --patch-size 512

--checkpoint takes a state_dict (or a dict holding one under "state_dict"
or "model", or a whole pickled module) saved with torch.save from the
reference modules.

Mask R-CNN (torchvision MaskRCNN, docs/model-format.md):

  export_model.py nuclei-init.safetensors --arch maskrcnn --backbone resnet18 \
      --classes background,nucleus --mpp 0.5 --patch-size 256 --init calibrated
  export_model.py tv.safetensors --arch maskrcnn --checkpoint maskrcnn_state.pt \
      --anchor-sizes 32,64,128,256,512 --classes background,a,b

--init torchvision: torchvision's random initialisation (FrozenBatchNorm as
identity); calibrated: the same with every backbone FrozenBatchNorm set to
the statistics of its input on random images (an ImageNet-free start that
keeps activations normalised); --backbone-from FILE copies a project model's
ResNet encoder (encoder.* of fcn8s/deeplabv3 files and pretrain
checkpoints) into backbone.body.*.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import modelfile  # noqa: E402
import safetensors_io  # noqa: E402
import wsinn_ref  # noqa: E402

MRCNN_HELP = "Mask R-CNN: "


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
    p.add_argument("--arch", required=True, choices=wsinn_ref.ARCHS + ("maskrcnn",))
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
    p.add_argument("--backbone", choices=("resnet18", "resnet34"),
                   help=MRCNN_HELP + "backbone (default resnet18)")
    p.add_argument("--anchor-sizes", type=floats,
                   help=MRCNN_HELP + "5 anchor sizes, FPN levels P2..P6 (default 8,16,32,64,128)")
    p.add_argument("--aspect-ratios", type=floats,
                   help=MRCNN_HELP + "1-3 anchor aspect ratios h/w (default 0.5,1,2)")
    p.add_argument("--mask-size", type=int, help=MRCNN_HELP + "mask head output side (28)")
    p.add_argument("--score-threshold", type=float,
                   help=MRCNN_HELP + "detection score threshold (0.5)")
    p.add_argument("--nms-iou", type=float, help=MRCNN_HELP + "detector NMS IoU (0.5)")
    p.add_argument("--max-detections", type=int,
                   help=MRCNN_HELP + "detections per image (300)")
    p.add_argument("--mask-threshold", type=float,
                   help=MRCNN_HELP + "mask probability painted (0.5)")
    p.add_argument("--rpn-pre-nms-top-n", type=int, help=MRCNN_HELP + "(1000)")
    p.add_argument("--rpn-post-nms-top-n", type=int, help=MRCNN_HELP + "(1000)")
    p.add_argument("--rpn-nms-iou", type=float, help=MRCNN_HELP + "(0.7)")
    p.add_argument("--init", choices=("torchvision", "calibrated"), default="torchvision",
                   help=MRCNN_HELP + "random initialisation (see above)")
    p.add_argument("--backbone-from",
                   help=MRCNN_HELP + "model file whose encoder.* initialises backbone.body.*")
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
        aspp_width=a.aspp_width, **mrcnn_keys(a))
    ref = modelfile._ref(meta)

    torch.manual_seed(a.seed)
    model = ref.build_model(meta)
    if a.checkpoint:
        state = torch.load(a.checkpoint, map_location="cpu")
        if isinstance(state, torch.nn.Module):
            state = state.state_dict()
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
        model.load_state_dict(state, strict=True)
    elif a.randomize_bn:
        g = torch.Generator().manual_seed(a.seed + 1)
        if meta["arch"] == "maskrcnn":
            ref.randomize_frozen_bn(model, g)
        else:
            wsinn_ref.randomize_batchnorm(model, g)
    elif meta["arch"] == "maskrcnn":
        if a.init == "calibrated":
            side = a.patch_size if a.patch_size >= 32 else 256
            g = torch.Generator().manual_seed(a.seed + 2)
            x = preprocess_random(meta, 8, side, g)
            ref.calibrate_frozen_bn(model, x)
        if a.backbone_from:
            tensors, _, _ = safetensors_io.load(a.backbone_from)
            n = ref.backbone_from(model, {k: torch.from_numpy(v.copy())
                                          for k, v in tensors.items()})
            if n == 0:
                p.error(f"--backbone-from {a.backbone_from}: no encoder.* tensor of a "
                        f"{meta['backbone']} backbone")
            print(f"backbone: {n} tensors from {a.backbone_from}")
    model.eval()
    modelfile.save_model(model, a.output, meta, a.dtype)
    n = sum(v.numel() for v in ref.exported_state(model).values())
    print(f"wrote {a.output}: {meta['arch']}/{meta.get('encoder') or meta.get('backbone')}, "
          f"{len(names)} classes, {n} parameters ({a.dtype})")
    return 0


def mrcnn_keys(a):
    """The Mask R-CNN keys given on the command line (others: defaults)."""
    if a.arch != "maskrcnn":
        return {}
    keys = {"backbone": a.backbone or a.encoder, "anchor_sizes": a.anchor_sizes,
            "aspect_ratios": a.aspect_ratios, "mask_size": a.mask_size,
            "score_threshold": a.score_threshold, "nms_iou": a.nms_iou,
            "max_detections": a.max_detections, "mask_threshold": a.mask_threshold,
            "rpn_pre_nms_top_n": a.rpn_pre_nms_top_n, "rpn_post_nms_top_n": a.rpn_post_nms_top_n,
            "rpn_nms_iou": a.rpn_nms_iou}
    return {k: v for k, v in keys.items() if v is not None}


def preprocess_random(meta, n, side, generator):
    """n random RGB images (uniform 8-bit noise smoothed into blobs) through
    the metadata's preprocessing: N x 3 x side x side."""
    x = torch.rand(n, 3, side // 8, side // 8, generator=generator)
    x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear",
                                        align_corners=False) * 255.0
    mode = meta["preprocess"]
    if mode == "rescale01":
        return x / 255.0
    if mode == "rescale11":
        return x / 127.5 - 1.0
    mean = torch.tensor(json.loads(meta["mean"])).view(1, 3, 1, 1)
    std = torch.tensor(json.loads(meta["std"])).view(1, 3, 1, 1)
    return (x / 255.0 - mean) / std


if __name__ == "__main__":
    sys.exit(main())
