"""slidesrc ! patchify ! stitchsink reproduces openslide_read_region pixel for
pixel: on the sample slide and on a generated pyramidal TIFF, at level 0 and
the lowest level, with overlap and tiles that do not divide the region."""
import os
import sys

import numpy as np

import wsitest
from slides import make_pyramid_tiff, openslide_region

c = wsitest.Checks()
tmp = wsitest.tmpdir()


def roundtrip(name, slide, level, tile, patch, overlap, extra=""):
    out = os.path.join(tmp, f"{name}.png")
    p = wsitest.gst_launch(
        f"slidesrc location={slide} level={level} tile-width={tile[0]} "
        f"tile-height={tile[1]} ! patchify patch-size={patch} overlap={overlap} {extra} "
        f"! stitchsink location={out}")
    if not c.check(p.returncode == 0, f"{name}: pipeline runs", p.stderr.strip()[-500:]):
        return
    got = wsitest.read_png(out)
    ref, _ = openslide_region(slide, level)
    if not c.check(got.shape == ref.shape, f"{name}: size", f"{got.shape} vs {ref.shape}"):
        return
    diff = np.abs(got.astype(int) - ref.astype(int))
    c.check(diff.max() == 0, f"{name}: pixel-identical to openslide",
            f"max diff {diff.max()}, {np.count_nonzero(diff.any(-1))} pixels differ")


sample = wsitest.SAMPLE_SLIDE
roundtrip("sample-l0", sample, 0, (700, 500), 256, 32)
roundtrip("sample-l0-reflect", sample, 0, (1024, 1024), 200, 50, "pad-mode=reflect")
roundtrip("sample-l0-nooverlap", sample, 0, (512, 512), 512, 0)

tif = make_pyramid_tiff(os.path.join(tmp, "pyramid.tif"), 3001, 2203, seed=3)
import openslide
lowest = openslide.OpenSlide(tif).level_count - 1
c.check(lowest >= 2, "generated TIFF has a pyramid", f"{lowest + 1} levels")
roundtrip("tiff-l0", tif, 0, (640, 480), 256, 64)
roundtrip("tiff-l1", tif, 1, (300, 200), 128, 16)
roundtrip(f"tiff-l{lowest}", tif, lowest, (100, 100), 64, 8)
c.finish()
