"""Helpers for the slidesrc end-to-end tests: run slidesrc into a raw file
and put the tiles back together; the OpenSlide reference image."""
import os

import numpy as np

import wsitest


def stride(width):
    """GStreamer's default RGB row stride (rows padded to 4 bytes)."""
    return (width * 3 + 3) // 4 * 4


def run_tiles(location, tile, extra="", tmp=None):
    """Runs slidesrc ! filesink; returns (process, tiles array n x th x tw x 3)."""
    tmp = tmp or wsitest.tmpdir()
    raw = os.path.join(tmp, "tiles.raw")
    p = wsitest.gst_launch(
        f"slidesrc location={location} tile-width={tile[0]} tile-height={tile[1]} "
        f"{extra} ! filesink location={raw}")
    if p.returncode != 0:
        return p, None
    tw, th = tile
    data = np.fromfile(raw, np.uint8)
    per = stride(tw) * th
    n = data.size // per
    tiles = data[:n * per].reshape(n, th, stride(tw))[:, :, :tw * 3]
    os.unlink(raw)
    return p, tiles.reshape(n, th, tw, 3)


def assemble(tiles, cols, rows, width, height, serpentine=False):
    """Mosaic of tiles emitted row by row; returns (image cropped to
    width x height, full mosaic with padding)."""
    n, th, tw, _ = tiles.shape
    mosaic = np.zeros((rows * th, cols * tw, 3), np.uint8)
    for i in range(min(n, cols * rows)):
        r, c = divmod(i, cols)
        if serpentine and r % 2 == 1:
            c = cols - 1 - c
        mosaic[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = tiles[i]
    return mosaic[:height, :width], mosaic


def level_extent(r0, n, full, ds, level_size):
    """Level pixels of a region [r0, r0 + n) on an axis of `full` level-0
    pixels: ceil(n / ds), except that a region reaching the slide's edge
    ends at the level's edge (level_dimensions; a non-whole downsample makes
    ceil overshoot by one) and none reads past it."""
    m = int(np.ceil(n / ds - 1e-9))
    avail = level_size - int(np.floor(r0 / ds + 1e-9))
    return avail if avail >= 1 and (r0 + n >= full or m > avail) else m


def reference(slide_path, level, region=None):
    """One openslide-python read_region of the whole region at the level,
    un-premultiplied by openslide-python and composited on the slide's
    background colour in numpy."""
    import openslide
    s = openslide.OpenSlide(slide_path)
    p = s.properties
    if region is None:
        if "openslide.bounds-x" in p:
            region = tuple(int(p[f"openslide.bounds-{k}"])
                           for k in ("x", "y", "width", "height"))
        else:
            region = (0, 0) + s.dimensions
    ds = s.level_downsamples[level]
    w = level_extent(region[0], region[2], s.dimensions[0], ds, s.level_dimensions[level][0])
    h = level_extent(region[1], region[3], s.dimensions[1], ds, s.level_dimensions[level][1])
    rgba = np.asarray(s.read_region((region[0], region[1]), level, (w, h)))
    bgs = p.get("openslide.background-color", "FFFFFF")
    bg = np.array([int(bgs[i:i + 2], 16) for i in (0, 2, 4)], np.float64)
    a = rgba[..., 3:4].astype(np.float64) / 255.0
    rgb = rgba[..., :3].astype(np.float64) * a + bg * (1 - a)
    return np.rint(rgb).astype(np.uint8), bg.astype(np.uint8), s
