#!/usr/bin/python3
"""Ships a trained model: strips the optimiser state from its checkpoint into
models/weights/NAME.safetensors (ship_model.py), measures it on the held-back data with
the project's own pipeline (evaluate.py), counts the training wall time from
train.log, and writes the model card models/NAME.md.

  ship.py nuclei|glands [build-dir]"""
import datetime
import glob
import json
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HERE = os.path.dirname(os.path.abspath(__file__))

CARDS = {
    "nuclei": dict(
        title="Nuclei segmentation (H&E), U-Net with a nucleus-boundary class",
        task="Semantic segmentation of nuclei in H&E tissue into background, nucleus interior and "
             "nucleus boundary (a 1-pixel ring from the instance maps); instances are the connected "
             "interiors grown into their ring (stitchsink `geojson-boundary-class=2` does this for "
             "GeoJSON).",
        data="MoNuSeg 2018 training set (Kumar et al., IEEE TMI 2017; MICCAI 2018 challenge): "
             "the 13 of its 30 TCGA H&E tiles (1000x1000 at 40x, 0.25 um/px, 7 organs) for which "
             "../shared/data holds instance maps, resampled to 0.5 um/px (2x2 area average; labels "
             "nearest neighbour). 10 images train, 3 are held back (every sixth name: "
             "validation). The 10 training images appear a second time with a wavy strip replaced "
             "by synthetic slide glass labelled background (prepare_data.py `nuclei_glass`, added "
             "at step ~4050), because MoNuSeg tiles never show slide background. The other 17 "
             "MoNuSeg images, which have only binary masks, were never used in training: they are "
             "the pixel-level test set. CPM-15 was not used: its tiles mix 20x and 40x without a "
             "per-image resolution, and the model is defined by its 0.5 um/px.",
        licence="CC BY-NC-SA 4.0 (MoNuSeg's licence carries over to weights trained on it): "
                "non-commercial, share alike, attribute MoNuSeg.",
        limits="Trained on 13 tiles of 7 organs at 0.5 um/px: other stains, scanners and tissue "
               "types are outside what it has seen. The sample slide (CMU-1) is not in its "
               "training data. Glass was learnt from synthetic examples only; pen marks, folds "
               "and blur were never seen. On the sample slide (skin) it also marks thin dark "
               "strands (keratin, condensed collagen) as nuclei. Run it with `slidesrc "
               "target-mpp=0.5` and patchify "
               "`min-tissue` to skip empty glass."),
    "glands": dict(
        title="Gland segmentation (colon H&E), U-Net with a gland-boundary class",
        task="Semantic segmentation of colon glands into background, gland interior and gland "
             "boundary (the edge pixels of each annotated gland, 8-neighbourhood); gland objects "
             "are the connected interiors grown into their boundary, so that glands the network "
             "sees touching stay apart (the DCAN idea with one network head).",
        data="GlaS@MICCAI2015 training part (Sirinukunwattana et al., Med Image Anal 2017): 85 "
             "colon H&E images (mostly 775x522 at 20x, ~0.62 um/px), resampled to 10x (~1.24 "
             "um/px: 2x2 area average; a label pixel is gland when most of its 2x2 block is). "
             "Glands are the 8-connected components of that mask. 68 images train, 17 held back "
             "(every fifth name: validation). Training had three stages, each initialised from "
             "the previous one's last checkpoint with init-from (transfer learning): background/"
             "gland at 20x with 256-pixel patches (900 steps, train-stage1.log), background/gland "
             "at 10x with 128-pixel patches (800 steps, train-stage2.log; pixel Dice 0.83 but "
             "object F1 0.15: neighbouring glands merged), then the three classes at 10x "
             "(train.log; the new output layer starts fresh, everything else is copied).",
        licence="Research use only, not commercial (GlaS's terms carry over).",
        limits="Trained on 68 images of one centre's colon tissue; benign and malignant glands "
               "are one class. Run it with `slidesrc target-mpp=1.24`; stitchsink "
               "`geojson-boundary-class=2` exports one polygon per gland."),
}


def wall_time(logs):
    """Seconds of training: gaps between consecutive log timestamps shorter
    than 20 minutes (longer gaps are between sessions)."""
    stamps = []
    for log in logs:
        if not os.path.exists(log):
            continue
        day = None
        for line in open(log):
            m = re.match(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)Z", line)
            if m:
                day = m.group(1)
                stamps.append(datetime.datetime.fromisoformat(f"{m.group(1)} {m.group(2)}"))
                continue
            m = re.match(r"(\d\d:\d\d:\d\d) ", line)
            if m and day:
                t = datetime.datetime.fromisoformat(f"{day} {m.group(1)}")
                if stamps and t < stamps[-1]:
                    t += datetime.timedelta(days=1)
                stamps.append(t)
    total = 0.0
    for a, b in zip(stamps, stamps[1:]):
        d = (b - a).total_seconds()
        if 0 <= d < 1200:
            total += d
    return total


def validation_curve(log, rows=8):
    """(step, loss, foreground Dice per class) of the validation runs in
    train.log, thinned to about @rows entries (the last one kept)."""
    runs = []
    if os.path.exists(log):
        for line in open(log):
            m = re.search(r"segment-fcn-validation, step=\(gint64\)(\d+).*?loss=\(double\)([\d.e+-]+)"
                          r".*?dice=\(double\)< ([^>]*) >", line)
            if m:
                runs.append((int(m.group(1)), float(m.group(2)),
                             [float(x) for x in m.group(3).split(",")][1:]))
    if len(runs) > rows:
        keep = sorted({round(i * (len(runs) - 1) / (rows - 1)) for i in range(rows)})
        runs = [runs[i] for i in keep]
    return runs


def lr_changes(log):
    """[(step, lr)] where train.log records a lowered learning rate."""
    out, lr = [], None
    if os.path.exists(log):
        for line in open(log):
            m = re.search(r"learning rate lowered to ([\d.e-]+)", line)
            if m:
                lr = m.group(1)
                continue
            m = re.search(r": step (\d+) of", line)
            if m and lr:
                out.append((int(m.group(1)), lr))
                lr = None
    return out


def meta_of(path):
    sys.path.insert(0, os.path.join(ROOT, "models", "reference"))
    import safetensors_io
    _, meta, _ = safetensors_io.load(path)
    return meta


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in CARDS:
        sys.exit(__doc__)
    name = sys.argv[1]
    build = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "build"))
    work = os.path.join(ROOT, "models", "weights", "training-runs", name)
    ckpt = os.path.join(work, "checkpoint.safetensors")
    out = os.path.join(ROOT, "models", "weights", f"{name}.safetensors")
    card = os.path.join(ROOT, "models", "weights", f"{name}.md")
    subprocess.run([sys.executable, os.path.join(HERE, "ship_model.py"), ckpt, out,
                    f"models/weights/{name}.md"], check=True)
    ev = json.loads(subprocess.run([sys.executable, os.path.join(HERE, "evaluate.py"), name, out, build],
                                   check=True, capture_output=True, text=True).stdout)
    meta = meta_of(out)
    logs = sorted(glob.glob(os.path.join(work, "train-stage*.log"))) + [os.path.join(work, "train.log")]
    hours = wall_time(logs) / 3600
    c = CARDS[name]
    agg, mean = ev["aggregate"], ev["mean_over_images"]
    rows = "\n".join(f"| {r['image']} | {r['dice']:.3f} | {r['f1']:.3f} | {r['pq']:.3f} | "
                     f"{r['aji']:.3f} | {r['gt_objects']} | {r['pred_objects']} |" for r in ev["per_image"])
    curve = validation_curve(os.path.join(work, "train.log"))
    min_note = ", objects under 100 pixels dropped" if name == "glands" else ""
    lr_note = "".join(f", {lr} from step {st} (`WSISEG_TRAIN_LR`)"
                      for st, lr in lr_changes(os.path.join(work, "train.log")))
    names = json.loads(meta.get("class_names", "[]"))[1:]
    curve_md = ""
    if curve:
        curve_md = ("\nValidation runs during training (segment-fcn `validation` pads, one pass over the "
                    "held-back images; Dice per class over all their pixels, patches without blending):\n\n"
                    "| step | loss | " + " | ".join(f"Dice {n}" for n in names) + " |\n|---|---|"
                    + "---|" * len(names) + "\n"
                    + "\n".join(f"| {st} | {lo:.3f} | " + " | ".join(f"{d:.3f}" for d in ds) + " |"
                                 for st, lo, ds in curve) + "\n")
    test = ""
    if "test_pixel" in ev:
        t = ev["test_pixel"]
        test = (f"\nPixel Dice (nucleus = interior or boundary) on the {t['images']} MoNuSeg images never "
                f"used in training (binary masks): **{t['pixel_dice']:.3f}** over all pixels, "
                f"{t['mean_pixel_dice']:.3f} mean per image.\n")
    mpp = meta.get("mpp", "?")
    patch = meta.get("patch_size", "?")
    text = f"""# Model card: {name} — {c['title']}

File: `models/{name}.safetensors` (gst-wsiseg model format, docs/model-format.md; the training
checkpoint without optimiser state). Architecture: `{meta.get('arch')}` depth {meta.get('depth')},
base width {meta.get('base_width')}, BatchNorm; {len(json.loads(meta.get('class_names', '[]')))} classes
{meta.get('class_names')}; preprocessing `{meta.get('preprocess')}`; trained at **{mpp} um/px** with
{patch}-pixel patches.

## Task
{c['task']}

## Data
{c['data']}

## Licence
{c['licence']}

## Training (this project's own train mode)
`pipelines/train/train.sh {name}` — the exact pipeline, resumed across sessions from
`models/weights/training-runs/{name}/checkpoint.safetensors`:

    slidesrc location='train/images/*.png' shuffle=true loop=5 seed=S tile-width=512 tile-height=512 !
      patchify patch-size={patch} overlap=... augment-flip=true augment-rotate=true seed=S ! tee name=t
      t. ! queue ! colornorm mode=rescale01 augment=true seed=S ! seg.sink
      t. ! queue ! labelpatch masks='train/labels/{{name}}.png' ... ! seg.annotation
      segment-fcn name=seg mode=train model=... checkpoint=... checkpoint-interval=50 batch-size=8
        loss=ce+dice optimizer=adam learning-rate=0.001 ... ! fakesink
      slidesrc location='val/images/*.png' loop=0 ... ! patchify ... ! tee name=v
      v. ! queue ! colornorm mode=rescale01 ! seg.validation
      v. ! queue ! labelpatch masks='val/labels/{{name}}.png' ... ! seg.validation_annotation

Steps: {meta.get('trained_step', '?')} optimiser steps of 8 patches (epoch {meta.get('trained_epoch', '?')}),
Adam, learning rate 0.001{lr_note}. Wall time: {hours:.1f} h of training on this project's machine (2 cores AVX2, no GPU), one
engine thread per job at low priority while a second model trained and the project was being
built and tested on the same cores. `train.log` holds every epoch, validation run and checkpoint.
{curve_md}
## Evaluation on the held-back images
`pipelines/train/evaluate.py {name} models/{name}.safetensors` runs slidesrc ! patchify
(128, overlap 32) ! colornorm ! segment-fcn (probabilities) ! stitchsink (gaussian blend) and
wsiseg-eval. A pixel is foreground when its class is interior or boundary; objects are the
4-connected interiors grown by up to 2 pixels into the foreground{min_note}.
{ev['validation_images']} held-back images; aggregate over all objects/pixels:

| metric | value |
|---|---|
| pixel Dice | **{agg['pixel_dice']:.3f}** |
| object F1 (IoU > 0.5) | **{agg['object_f1']:.3f}** |
| PQ | {agg['pq']:.3f} |
| AJI | {agg['aji']:.3f} |

Mean over images: Dice {mean['dice']:.3f}, F1 {mean['f1']:.3f}, PQ {mean['pq']:.3f}, AJI {mean['aji']:.3f},
object Dice {mean['object_dice']:.3f}.
{test}
| image | Dice | F1 | PQ | AJI | true objects | predicted |
|---|---|---|---|---|---|---|
{rows}

## Limits
{c['limits']}
"""
    with open(card + ".tmp", "w") as f:
        f.write(text)
    os.replace(card + ".tmp", card)
    with open(os.path.join(work, "evaluation.json"), "w") as f:
        json.dump(ev, f, indent=1)
    print(f"{name}: step {meta.get('trained_step')}, {hours:.1f} h, Dice {agg['pixel_dice']:.3f}, "
          f"F1 {agg['object_f1']:.3f}, AJI {agg['aji']:.3f}, PQ {agg['pq']:.3f}")


if __name__ == "__main__":
    main()
