#!/usr/bin/python3
"""Prepares the shipped models' training data from ../shared/data: resamples
images (area averaging) and label maps (nearest neighbour) to the microns per
pixel the model is trained at, and splits off a held-back validation part.

  prepare_data.py nuclei OUT   # MoNuSeg, the first 13 instance maps, 0.25 -> 0.5 um/px (shipped v1)
  prepare_data.py nuclei30 OUT # MoNuSeg, all 30 instance maps, split by organ (NUCLEI30_VAL)
  prepare_data.py glands OUT   # GlaS images, gland instance maps, 20x -> 10x (~1.24 um/px)

Writes OUT/{train,val}/{images,labels}/NAME.png (same NAME in both). For
nuclei also OUT/test: the 17 MoNuSeg images that have only binary masks
(never used in training; labels 0/1, for pixel Dice)."""
import os
import sys

import numpy as np
import skimage.io
import skimage.measure
import skimage.transform

SHARED = os.environ.get("WSISEG_SHARED_DATA",
                        os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data"))


def resample(img, factor, labels):
    if factor == 1:
        return img
    if labels:  # nearest neighbour keeps instance ids
        return img[factor // 2::factor, factor // 2::factor]
    h, w = img.shape[0] // factor * factor, img.shape[1] // factor * factor
    x = img[:h, :w].astype(np.float64).reshape(h // factor, factor, w // factor, factor, -1)
    return np.rint(x.mean(axis=(1, 3))).astype(np.uint8).squeeze()


def write(out, split, name, img, lab):
    for sub, arr in (("images", img), ("labels", lab)):
        d = os.path.join(out, split, sub)
        os.makedirs(d, exist_ok=True)
        skimage.io.imsave(os.path.join(d, name + ".png"), arr, check_contrast=False)


def nuclei(out):
    root = os.path.join(SHARED, "nuclei", "monuseg-train")
    names = sorted(f[:-9] for f in os.listdir(os.path.join(root, "instances")) if f.endswith("_inst.png"))
    val = set(names[::6])  # every sixth image held back: 3 of 13
    for n in names:
        img = skimage.io.imread(os.path.join(root, "images", n + ".png"))[..., :3]
        inst = skimage.io.imread(os.path.join(root, "instances", n + "_inst.png"))
        write(out, "val" if n in val else "train", n, resample(img, 2, False),
              resample(inst, 2, True).astype(np.uint16))
    nuclei_test(out)
    nuclei_glass(out)
    return len(names) - len(val), len(val)


# MoNuSeg organs (the dataset's table; TCGA tissue-source-site codes):
# breast A7/AR/E2, kidney B0/HE, liver 18/21/38/49/50, prostate CH/G9,
# bladder DK/G2, colon AY/NH, stomach KB/RD. Each image is one patient.
# Held back: two patients of each six-image organ, from two different sites
# where the organ has them; the three two-image organs train only.
NUCLEI30_VAL = {
    "TCGA-A7-A13F-01Z-00-DX1", "TCGA-E2-A1B5-01Z-00-DX1",  # breast
    "TCGA-B0-5710-01Z-00-DX1", "TCGA-HE-7129-01Z-00-DX1",  # kidney
    "TCGA-21-5786-01Z-00-DX1", "TCGA-49-4488-01Z-00-DX1",  # liver
    "TCGA-CH-5767-01Z-00-DX1", "TCGA-G9-6362-01Z-00-DX1",  # prostate
}


def nuclei30(out):
    """All 30 MoNuSeg instance maps: 22 train / 8 held back (NUCLEI30_VAL)."""
    root = os.path.join(SHARED, "nuclei", "monuseg-train")
    names = sorted(f[:-9] for f in os.listdir(os.path.join(root, "instances")) if f.endswith("_inst.png"))
    missing = NUCLEI30_VAL - set(names)
    if missing:
        sys.exit(f"held-back images missing from {root}: {sorted(missing)}")
    for n in names:
        img = skimage.io.imread(os.path.join(root, "images", n + ".png"))[..., :3]
        inst = skimage.io.imread(os.path.join(root, "instances", n + "_inst.png"))
        write(out, "val" if n in NUCLEI30_VAL else "train", n, resample(img, 2, False),
              resample(inst, 2, True).astype(np.uint16))
    nuclei_glass(out)
    return len(names) - len(NUCLEI30_VAL), len(NUCLEI30_VAL)


def nuclei_glass(out, seed=5):
    """Tissue edges: each training image again with a wavy strip replaced by
    synthetic glass (near-white, noisy, faint debris; label background), so
    that the model sees slide background, which MoNuSeg tiles never show.
    Written as glass-NAME.png (atomically: slidesrc may be globbing)."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(out, "train")
    names = sorted(f[:-4] for f in os.listdir(os.path.join(folder, "images"))
                   if f.endswith(".png") and not f.startswith("glass-"))
    for n in names:
        img = skimage.io.imread(os.path.join(folder, "images", n + ".png"))[..., :3].astype(np.float64)
        lab = skimage.io.imread(os.path.join(folder, "labels", n + ".png"))
        h, w = lab.shape
        tint = rng.uniform(225, 250) + rng.normal(0, 4, 3)
        glass = tint + rng.normal(0, 3, (h, w, 3))
        for _ in range(rng.integers(3, 12)):  # pale debris specks
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.uniform(1, 6)
            yy, xx = np.ogrid[:h, :w]
            glass[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] -= rng.uniform(10, 40)
        # glass beyond a wavy edge, from a random side, covering 25-50%
        side = rng.integers(4)
        t = np.arange(max(h, w))
        edge = rng.uniform(0.5, 0.75) * (h if side < 2 else w) + 15 * np.sin(t / rng.uniform(15, 40)) \
            + 8 * np.sin(t / rng.uniform(5, 12))
        yy, xx = np.mgrid[:h, :w]
        along, across = (xx, yy) if side < 2 else (yy, xx)
        size = h if side < 2 else w
        if side % 2:
            across = size - 1 - across
        mask = across > edge[along]
        img[mask] = glass[mask]
        lab = lab.copy()
        lab[mask] = 0
        staging = os.path.join(out, "staging")
        os.makedirs(staging, exist_ok=True)
        for sub, arr in (("images", np.clip(img, 0, 255).astype(np.uint8)), ("labels", lab)):
            tmp = os.path.join(staging, f"{sub}-glass-{n}.png")
            skimage.io.imsave(tmp, arr, check_contrast=False)
            os.replace(tmp, os.path.join(folder, sub, f"glass-{n}.png"))
    return len(names)


def nuclei_test(out):
    """MoNuSeg images without instance maps: a pixel-level test set."""
    root = os.path.join(SHARED, "nuclei", "monuseg-train")
    have = {f[:-9] for f in os.listdir(os.path.join(root, "instances")) if f.endswith("_inst.png")}
    names = sorted(f[:-4] for f in os.listdir(os.path.join(root, "masks")) if f.endswith(".png"))
    for n in names:
        if n in have:
            continue
        img = skimage.io.imread(os.path.join(root, "images", n + ".png"))[..., :3]
        mask = skimage.io.imread(os.path.join(root, "masks", n + ".png"))
        if mask.ndim == 3:
            mask = mask[..., 0]
        # a low-resolution pixel is nucleus when most of its 2x2 block is
        frac = resample((mask > 0).astype(np.uint8) * 255, 2, False)
        write(out, "test", n, resample(img, 2, False), (frac >= 128).astype(np.uint8))
    return len(names) - len(have)


def glands(out):
    root = os.path.join(SHARED, "glands", "glas-train")
    names = sorted(f[:-4] for f in os.listdir(os.path.join(root, "images")) if f.endswith(".png"))
    val = set(names[::5])  # every fifth image held back: 17 of 85
    for n in names:
        img = skimage.io.imread(os.path.join(root, "images", n + ".png"))[..., :3]
        mask = skimage.io.imread(os.path.join(root, "masks", n + ".png"))
        if mask.ndim == 3:
            mask = mask[..., 0]
        # a low-resolution pixel is gland when most of its 2x2 block is; the
        # glands are its 8-connected components (as wsiseg-eval counts them)
        frac = resample((mask > 0).astype(np.uint8) * 255, 2, False)
        inst = skimage.measure.label(frac >= 128, connectivity=2).astype(np.uint16)
        write(out, "val" if n in val else "train", n, resample(img, 2, False), inst)
    return len(names) - len(val), len(val)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("nuclei", "nuclei30", "glands"):
        sys.exit(__doc__)
    if not os.path.isdir(SHARED):
        sys.exit(f"needs the real data folder {SHARED}")
    ntrain, nval = {"nuclei": nuclei, "nuclei30": nuclei30, "glands": glands}[sys.argv[1]](sys.argv[2])
    print(f"{sys.argv[1]}: {ntrain} training and {nval} validation images in {sys.argv[2]}")
