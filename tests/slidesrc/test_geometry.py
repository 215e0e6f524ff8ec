"""slidesrc streams each pyramid level at the size OpenSlide's level_dimensions
gives, also where the downsample is not whole (a pyramid of odd size:
2.0008x), and the stitched level has that size (issue 9, point 9). A grid of
more than 2^31 tiles (1x1 tiles on a 65536 x 65536 slide) streams (tile
counts are 64-bit)."""
import os
import re
import struct
import sys

import numpy as np

import wsitest

sys.path.insert(0, os.path.join(wsitest.SOURCE_ROOT, "tests", "integration"))
from slides import make_pyramid_tiff  # noqa: E402

import openslide  # noqa: E402

c = wsitest.Checks()
tmp = wsitest.tmpdir()


def info(slide, extra=""):
    """(level-region-width, level-region-height) from slidesrc-info."""
    p = wsitest.gst_launch(f"slidesrc location={slide} {extra} ! fakesink", messages=True,
                           timeout=120)
    m = re.search(r"slidesrc-info.*level-region-width=\(gint64\)(\d+), "
                  r"level-region-height=\(gint64\)(\d+)", p.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else None


def stitched_shape(slide, level, extra=""):
    out = os.path.join(tmp, f"st-{level}.png")
    p = wsitest.gst_launch(f"slidesrc location={slide} level={level} tile-width=300 "
                           f"tile-height=200 {extra} ! patchify patch-size=128 overlap=16 "
                           f"! stitchsink location={out}", timeout=300)
    if p.returncode != 0:
        return p.stderr.strip()[-300:]
    return wsitest.read_png(out).shape[:2]


sample = wsitest.SAMPLE_SLIDE
s = openslide.OpenSlide(sample)
c.check(info(sample) == s.level_dimensions[0], "sample slide level 0 size",
        f"{info(sample)} vs {s.level_dimensions[0]}")

tif = make_pyramid_tiff(os.path.join(tmp, "odd.tif"), 3001, 2203, seed=5)
s = openslide.OpenSlide(tif)
for level in range(s.level_count):
    want = s.level_dimensions[level]
    got = info(tif, f"level={level}")
    c.check(got == want, f"odd pyramid level {level} (downsample "
            f"{s.level_downsamples[level]:.4f}) streams level_dimensions", f"{got} vs {want}")
for level in (1, s.level_count - 1):
    want = s.level_dimensions[level]
    got = stitched_shape(tif, level)
    c.check(got == (want[1], want[0]), f"odd pyramid level {level}: stitched size",
            f"{got} vs {want}")
# a region inside the slide keeps ceil(region / downsample)
got = info(tif, "level=1 region=100,100,1001,999")
ds = s.level_downsamples[1]
want = (int(np.ceil(1001 / ds - 1e-9)), int(np.ceil(999 / ds - 1e-9)))
c.check(got == want, "inner region at level 1", f"{got} vs {want}")
# a region reaching the bottom-right edge ends at the level's edge
got = info(tif, "level=1 region=1001,1203,2000,1000")
want = (s.level_dimensions[1][0] - int(1001 // ds), s.level_dimensions[1][1] - int(1203 // ds))
c.check(got == want, "region to the slide edge at level 1", f"{got} vs {want}")


def huge_tiff(path, side=65536, tile=256):
    """An uncompressed tiled TIFF of side x side pixels whose tiles all share
    one stored tile: a few hundred KB on disk."""
    n = (side // tile) ** 2
    data = bytes(np.full((tile, tile, 3), 200, np.uint8))
    entries = []
    off_data = 8
    off_offsets = off_data + len(data)
    off_counts = off_offsets + 4 * n
    off_bps = off_counts + 4 * n
    off_ifd = off_bps + 6

    def e(tag, typ, count, value):
        entries.append(struct.pack("<HHII", tag, typ, count, value))
    e(256, 4, 1, side)
    e(257, 4, 1, side)
    e(258, 3, 3, off_bps)
    e(259, 3, 1, 1)
    e(262, 3, 1, 2)
    e(277, 3, 1, 3)
    e(284, 3, 1, 1)
    e(322, 3, 1, tile)
    e(323, 3, 1, tile)
    e(324, 4, n, off_offsets)
    e(325, 4, n, off_counts)
    with open(path, "wb") as f:
        f.write(b"II*\0" + struct.pack("<I", off_ifd))
        f.write(data)
        f.write(struct.pack(f"<{n}I", *([off_data] * n)))
        f.write(struct.pack(f"<{n}I", *([len(data)] * n)))
        f.write(struct.pack("<HHH", 8, 8, 8))
        f.write(struct.pack("<H", len(entries)) + b"".join(entries) + b"\0\0\0\0")


big = os.path.join(tmp, "huge.tif")
huge_tiff(big)
if openslide.OpenSlide(big).dimensions == (65536, 65536):
    import subprocess
    p = subprocess.run(["gst-launch-1.0", "-v", "slidesrc", f"location={big}", "tile-width=1",
                        "tile-height=1", "num-buffers=5", "!", "fakesink", "silent=false"],
                       env=wsitest.gst_env(), capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    c.check(p.returncode == 0 and out.count("chain") >= 5,
            "65536^2 slide in 1x1 tiles (2^32 tiles) streams",
            f"rc {p.returncode}: {out[-300:]}")
else:
    c.check(False, "OpenSlide opens the shared-tile TIFF")
c.finish()
