"""labelpatch with PNG masks: label patches equal numpy crops of the mask the
test wrote (offsets inside, negative, beyond the edge), padding, half-
resolution masks, downsampled patches, binary / 1-bit / indexed masks,
16-bit instance maps (classes, boundary vs skimage find_boundaries,
instances), augmentation replay and switching between images."""
import os

import numpy as np
from skimage.segmentation import find_boundaries

import annot
import wsitest

c = wsitest.Checks()
tmp = wsitest.tmpdir()
rng = np.random.default_rng(7)
os.makedirs(os.path.join(tmp, "images"))
os.makedirs(os.path.join(tmp, "masks"))
SW, SH = 200, 150
slide = os.path.join(tmp, "images", "case.01.png")   # never opened: only named
pattern = os.path.join(tmp, "masks", "{name}.png")
W, H = 64, 48
positions = [(0, 0), (37, 11), (-10, 5), (-30, -20), (150, 120), (190, 140), (500, 500)]


def check_patches(name, res, ref_of, positions, fmt="GRAY8"):
    if not c.check(res.returncode == 0, f"{name}: runs", res.stderr[-400:]):
        return
    c.check(res.format == fmt, f"{name}: output {fmt}", str(res.format))
    c.check(len(res.labels) == len(positions), f"{name}: one label patch per patch")
    for got, pos in zip(res.labels, positions):
        ref = ref_of(*pos[:2])
        c.check(np.array_equal(got, ref), f"{name}: patch at {pos[:2]}",
                annot.diff_summary(got, ref))


# 8-bit class indices, same size as the slide
classes = rng.integers(0, 5, (SH, SW)).astype(np.uint8)
annot.write_png(os.path.join(tmp, "masks", "case.01.png"), classes)
res = annot.run({"masks": pattern}, slide, positions, (W, H), (SW, SH))
check_patches("classes", res, lambda x, y: annot.crop(classes, x, y, W, H, 255), positions)
if res.metas:
    m = res.metas[1]
    c.check(m.get("slide") == slide and m.get("x") == "37" and m.get("y") == "11"
            and m.get("frame") == "1", "tile meta kept on the label patch", str(m))

# custom ignore value and padding (valid area of the meta)
valid = (4, 2, 50, 40)
res = annot.run({"masks": pattern, "ignore-index": 7}, slide, positions[:3], (W, H),
                (SW, SH), valid=valid)


def padded_ref(x, y):
    ref = annot.crop(classes, x, y, W, H, 7)
    keep = np.zeros((H, W), bool)
    keep[valid[1]:valid[1] + valid[3], valid[0]:valid[0] + valid[2]] = True
    ref[~keep] = 7
    return ref


check_patches("padding + ignore-index=7", res, padded_ref, positions[:3])

# downsampled patch (level with downsample 2): pixel centres at odd level-0 pixels
res = annot.run({"masks": pattern}, slide, [(0, 0), (-9, 13), (100, 60)], (W, H), (SW, SH), ds=2)
check_patches("downsample 2", res,
              lambda x, y: annot.crop(classes, x, y, 2 * W, 2 * H, 255)[1::2, 1::2],
              [(0, 0), (-9, 13), (100, 60)])

# half-resolution mask: every mask pixel covers 2x2 slide pixels
half = rng.integers(0, 4, (SH // 2, SW // 2)).astype(np.uint8)
annot.write_png(os.path.join(tmp, "masks", "half.png"), half)
up = np.repeat(np.repeat(half, 2, 0), 2, 1)
half_slide = os.path.join(tmp, "images", "half.tif")
res = annot.run({"masks": pattern}, half_slide, positions, (W, H), (SW, SH))
check_patches("half-resolution mask", res, lambda x, y: annot.crop(up, x, y, W, H, 255), positions)
res = annot.run({"masks": pattern}, half_slide, [(3, 7), (-5, 40)], (W, H), (SW, SH), ds=4)
check_patches("half-resolution mask, downsample 4", res,
              lambda x, y: annot.crop(up, x, y, 4 * W, 4 * H, 255)[2::4, 2::4],
              [(3, 7), (-5, 40)])

# binary 0/255 mask: binary=true gives 0/1; without it 255 stays (ignore) and a warning says so
binary = (rng.random((SH, SW)) > 0.6).astype(np.uint8) * 255
annot.write_png(os.path.join(tmp, "masks", "bin.png"), binary)
bin_slide = os.path.join(tmp, "images", "bin.png")
res = annot.run({"masks": pattern, "binary": "true", "num-classes": 2}, bin_slide,
                positions[:4], (W, H), (SW, SH))
check_patches("binary=true", res, lambda x, y: annot.crop(binary // 255, x, y, W, H, 255),
              positions[:4])
res = annot.run({"masks": pattern}, bin_slide, positions[:2], (W, H), (SW, SH))
check_patches("binary=false keeps 255", res, lambda x, y: annot.crop(binary, x, y, W, H, 255),
              positions[:2])
c.check("WARNING" in res.stderr and "binary=true" in res.stderr,
        "binary=false on a 0/255 mask warns", res.stderr[-300:])

# 1-bit grayscale and indexed (palette) PNGs give their values / palette indices
annot.write_png(os.path.join(tmp, "masks", "onebit.png"), binary, mode="1")
res = annot.run({"masks": pattern}, os.path.join(tmp, "images", "onebit.png"),
                positions[:3], (W, H), (SW, SH))
check_patches("1-bit PNG", res, lambda x, y: annot.crop(binary // 255, x, y, W, H, 255),
              positions[:3])
annot.write_png(os.path.join(tmp, "masks", "indexed.png"), classes, mode="P")
res = annot.run({"masks": pattern}, os.path.join(tmp, "images", "indexed.png"),
                positions[:3], (W, H), (SW, SH))
check_patches("indexed PNG", res, lambda x, y: annot.crop(classes, x, y, W, H, 255),
              positions[:3])

# 16-bit instance map: touching and separate discs, ids up to 400
yy, xx = np.mgrid[0:SH, 0:SW]
inst = np.zeros((SH, SW), np.uint16)
for k in range(1, 401):
    cx, cy, r = rng.uniform(0, SW), rng.uniform(0, SH), rng.uniform(2, 9)
    inst[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = k
inst[0:6, 0:6] = 399  # an instance cut by the image edge
annot.write_png(os.path.join(tmp, "masks", "inst.png"), inst)
inst_slide = os.path.join(tmp, "images", "inst.svs")
res = annot.run({"masks": pattern}, inst_slide, positions, (W, H), (SW, SH))
check_patches("instances as classes", res,
              lambda x, y: annot.crop((inst > 0).astype(np.uint8), x, y, W, H, 255), positions)
for conn, sk_conn in ((4, 1), (8, 2)):
    edge = find_boundaries(inst, connectivity=sk_conn, mode="inner")
    three = np.where(inst > 0, np.where(edge, 2, 1), 0).astype(np.uint8)
    res = annot.run({"masks": pattern, "instance-mode": "boundary",
                     "boundary-connectivity": conn, "num-classes": 3},
                    inst_slide, positions, (W, H), (SW, SH))
    check_patches(f"boundary, {conn}-connectivity (skimage find_boundaries inner)", res,
                  lambda x, y: annot.crop(three, x, y, W, H, 255), positions)
res = annot.run({"masks": pattern, "instance-mode": "instances"}, inst_slide, positions,
                (W, H), (SW, SH))
check_patches("instance ids (GRAY16_LE, ignore 65535)", res,
              lambda x, y: annot.crop(inst, x, y, W, H, 65535), positions, fmt="GRAY16_LE")

# augmentation replay: every flip/turn combination, square and non-square patches
for size in ((48, 48), (64, 40)):
    w, h = size
    for k in range(4):
        for fh in (False, True):
            for fv in (False, True):
                res = annot.run({"masks": pattern}, slide, [(-7, 21)], size, (SW, SH),
                                valid=(3, 0, w - 3, h), flip_h=fh, flip_v=fv, rot90=k)
                ref = annot.crop(classes, -7, 21, w, h, 255)
                ref[:, :3] = 255
                ref = annot.augment(ref, fh, fv, k)
                ok = res.returncode == 0 and len(res.labels) == 1 and \
                    np.array_equal(res.labels[0], ref)
                c.check(ok, f"augment {w}x{h} flip-h={fh} flip-v={fv} rot90={k}",
                        res.stderr[-300:] if res.returncode else
                        annot.diff_summary(res.labels[0], ref))
res = annot.run({"masks": pattern}, slide, [(5, 5)], (W, H), (SW, SH), extra=["--aug-meta"])
check_patches("augment meta without transform", res,
              lambda x, y: annot.crop(classes, x, y, W, H, 255), [(5, 5)])

# several images in one stream: the cache follows the slide of each patch
seq = [(10, 10, slide), (10, 10, half_slide), (20, 5, half_slide), (10, 10, slide)]
refs = {slide: classes, half_slide: up}
res = annot.run({"masks": pattern}, slide, seq, (W, H), (SW, SH))
c.check(res.returncode == 0 and len(res.labels) == len(seq), "switching images: runs",
        res.stderr[-300:])
for got, (x, y, s) in zip(res.labels, seq):
    ref = annot.crop(refs[s], x, y, W, H, 255)
    c.check(np.array_equal(got, ref), f"switching images: {os.path.basename(s)} at {(x, y)}",
            annot.diff_summary(got, ref))

# path placeholders: {dir} {stem} {ext}, {path}, {file} and literal braces
annot.write_png(os.path.join(tmp, "masks", "case.png"), classes)
annot.write_png(slide + ".mask.png", classes)
annot.write_png(os.path.join(tmp, "images", "{x}case.01.png"), classes)
for pat in ("{dir}/../masks/{stem}.{ext}", "{path}.mask.png", "{dir}/{{x}}{file}"):
    res = annot.run({"masks": pat}, slide, [(9, 9)], (W, H), (SW, SH))
    check_patches(f"pattern {pat}", res, lambda x, y: annot.crop(classes, x, y, W, H, 255), [(9, 9)])

# unknown slide size: the mask is taken as level-0 sized
res = annot.run({"masks": pattern}, slide, positions[:3], (W, H))
check_patches("no slide size in meta", res, lambda x, y: annot.crop(classes, x, y, W, H, 255),
              positions[:3])
c.finish()
