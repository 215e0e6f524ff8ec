"""labelpatch on real data (MoNuSeg tiles, skipped without ../shared/data):
1. slidesrc (PNG dataset) ! patchify ! labelpatch ! stitchsink rebuilds the
   binary mask, the instance map (GRAY16_LE) and the 3-class boundary map
   (vs skimage find_boundaries) exactly;
2. the training layout -- patchify with augmentation, tee to image and
   annotation branches -- gives label patches that sit exactly under their
   image patches: each RGB patch is located in the tile by trying every grid
   position and flip/turn, and its label patch must equal the mask there
   after the same transform."""
import os

import numpy as np
from skimage.segmentation import find_boundaries

import annot
import wsitest

root = wsitest.shared_path("nuclei", "monuseg-train")
c = wsitest.Checks()
tmp = wsitest.tmpdir()
images = os.path.join(root, "images")
names = sorted(n[:-len("_inst.png")] for n in os.listdir(os.path.join(root, "instances")))[:2]
masks = "{dir}/../masks/{name}.png"
instances = "{dir}/../instances/{name}_inst.png"
P, O = 256, 32


def stitched(name, label_opts, out, sink_opts=""):
    img = os.path.join(images, name + ".png")
    p = wsitest.gst_launch(
        f"slidesrc location={img} ! patchify patch-size={P} overlap={O} min-tissue=0 ! "
        f"labelpatch {label_opts} ! stitchsink location={out} {sink_opts}", timeout=60)
    ok = c.check(p.returncode == 0, f"{name}: pipeline with labelpatch {label_opts.split('=')[0]}",
                 (p.stderr or p.stdout)[-400:])
    return wsitest.read_png(out) if ok else None


for name in names:
    mask = wsitest.read_png(os.path.join(root, "masks", name + ".png"))
    inst = wsitest.read_png(os.path.join(root, "instances", name + "_inst.png"))
    got = stitched(name, f"masks={masks} binary=true num-classes=2", os.path.join(tmp, "m.png"))
    if got is not None:
        ref = (mask > 0).astype(np.uint8)
        c.check(got.shape == ref.shape and np.array_equal(got, ref),
                f"{name}: stitched label patches == mask", annot.diff_summary(got, ref))
    got = stitched(name, f"masks={instances} instance-mode=instances", os.path.join(tmp, "i.png"),
                   "instances=off")
    if got is not None:
        c.check(got.dtype == np.uint16 and np.array_equal(got, inst),
                f"{name}: stitched instance patches, ids kept == instance map (16-bit)",
                annot.diff_summary(got, inst))
    # labelpatch marks its output as instances: stitchsink merges them into global ids
    got = stitched(name, f"masks={instances} instance-mode=instances", os.path.join(tmp, "g.png"))
    if got is not None:
        pairs = np.unique(np.stack([got.ravel().astype(np.int64), inst.ravel()]), axis=1)
        one_to_one = (len(np.unique(pairs[0])) == pairs.shape[1]
                      and len(np.unique(pairs[1])) == pairs.shape[1])
        c.check(np.array_equal(got > 0, inst > 0) and one_to_one,
                f"{name}: merged instances == instance map up to renumbering",
                f"{pairs.shape[1]} id pairs, {len(np.unique(pairs[0]))} merged ids, "
                f"{len(np.unique(pairs[1]))} annotated ids")
    got = stitched(name, f"masks={instances} instance-mode=boundary num-classes=3",
                   os.path.join(tmp, "b.png"))
    if got is not None:
        edge = find_boundaries(inst, connectivity=1, mode="inner")
        ref = np.where(inst > 0, np.where(edge, 2, 1), 0).astype(np.uint8)
        c.check(np.array_equal(got, ref), f"{name}: stitched boundary map == skimage reference",
                annot.diff_summary(got, ref))
        c.check((ref == 2).sum() > 1000, f"{name}: boundary class present",
                str((ref == 2).sum()))

# training layout with augmentation: image and annotation branches of one tee
name = names[0]
img_path = os.path.join(images, name + ".png")
image = wsitest.read_png(img_path)[..., :3]
inst = wsitest.read_png(os.path.join(root, "instances", name + "_inst.png"))
edge = find_boundaries(inst, connectivity=1, mode="inner")
three = np.where(inst > 0, np.where(edge, 2, 1), 0).astype(np.uint8)
rgb_raw, lab_raw = os.path.join(tmp, "rgb.raw"), os.path.join(tmp, "lab.raw")
p = wsitest.gst_launch(
    f"slidesrc location={img_path} ! patchify patch-size={P} overlap={O} min-tissue=0 "
    f"augment-flip=true augment-rotate=true seed=5 ! tee name=t "
    f"t. ! queue ! filesink location={rgb_raw} "
    f"t. ! queue ! labelpatch masks={instances} instance-mode=boundary ! filesink location={lab_raw}",
    timeout=60)
if c.check(p.returncode == 0, "augmented tee pipeline", p.stderr[-400:]):
    rgb = np.fromfile(rgb_raw, np.uint8).reshape(-1, P, P, 3)
    lab = np.fromfile(lab_raw, np.uint8).reshape(-1, P, P)
    c.check(len(rgb) == len(lab) == 25, "one label patch per image patch", f"{len(rgb)}, {len(lab)}")
    S = P - O
    grid = [(cx * S - O // 2, ry * S - O // 2) for ry in range(5) for cx in range(5)]
    transforms = [(fh, fv, k) for fh in (0, 1) for fv in (0, 1) for k in range(4)]
    crops = []
    for (x, y) in grid:
        ref_rgb = np.stack([annot.crop(image[..., ch], x, y, P, P, 0) for ch in range(3)], -1)
        crops.append((x, y, ref_rgb, annot.crop(three, x, y, P, P, 255), max(-x, 0), max(-y, 0)))
    located = aligned = turned = 0
    for n in range(min(len(rgb), len(lab))):
        found = None
        for t in transforms:
            cand = annot.unaugment(rgb[n], *t)
            for (x, y, ref_rgb, ref_lab, vx, vy) in crops:
                # quick test on an 8x8 block of real pixels, then the whole valid area
                if not np.array_equal(cand[vy:vy + 8, vx:vx + 8], ref_rgb[vy:vy + 8, vx:vx + 8]):
                    continue
                valid = ref_lab != 255
                if np.array_equal(cand[valid], ref_rgb[valid]):
                    found = (t, ref_lab)
                    break
            if found:
                break
        if not found:
            continue
        located += 1
        t, ref_lab = found
        turned += t != (0, 0, 0)
        aligned += np.array_equal(lab[n], annot.augment(ref_lab, *t))
    c.check(located == len(rgb), "every image patch located in the tile", f"{located}/{len(rgb)}")
    c.check(aligned == located, "label patch == transformed mask crop under its image patch",
            f"{aligned}/{located}")
    c.check(turned > 5, "augmentation was applied", f"{turned} transformed patches")
c.finish()
