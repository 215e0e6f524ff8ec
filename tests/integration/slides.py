"""Test slides made on the fly: a generated pyramidal tiled TIFF (vips)."""
import os
import subprocess

import numpy as np


def synthetic_rgb(width, height, seed=0):
    """Smooth tissue-like structure plus noise: every pixel differs, so a
    one-pixel shift in stitching shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 180 + 60 * np.sin(x / 37.0) * np.cos(y / 53.0)
    g = 120 + 80 * np.sin((x + y) / 71.0)
    b = 200 + 40 * np.cos(x / 19.0 - y / 23.0)
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 12, (height, width, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_pyramid_tiff(path, width, height, seed=0, tile=256):
    """Writes a pyramidal tiled TIFF (JPEG) that OpenSlide reads as a
    generic TIFF with several levels."""
    import skimage.io
    png = path + ".src.png"
    skimage.io.imsave(png, synthetic_rgb(width, height, seed), check_contrast=False)
    subprocess.run(["vips", "tiffsave", png, path, "--tile", "--pyramid",
                    "--compression", "jpeg", "--tile-width", str(tile),
                    "--tile-height", str(tile)], check=True)
    os.unlink(png)
    return path


def openslide_region(slide_path, level, region=None):
    """The reference: one openslide read_region of the whole region at the
    level, composited on the slide's background colour."""
    import openslide
    s = openslide.OpenSlide(slide_path)
    if region is None:
        p = s.properties
        if "openslide.bounds-x" in p:
            region = (int(p["openslide.bounds-x"]), int(p["openslide.bounds-y"]),
                      int(p["openslide.bounds-width"]), int(p["openslide.bounds-height"]))
        else:
            region = (0, 0) + s.dimensions
    ds = s.level_downsamples[level]

    def extent(r0, n, full, size):
        # at a non-whole downsample a region reaching the slide's edge ends
        # at the level's edge (level_dimensions), never past it
        m = int(np.ceil(n / ds - 1e-9))
        avail = size - int(np.floor(r0 / ds + 1e-9))
        return avail if avail >= 1 and (r0 + n >= full or m > avail) else m
    w = extent(region[0], region[2], s.dimensions[0], s.level_dimensions[level][0])
    h = extent(region[1], region[3], s.dimensions[1], s.level_dimensions[level][1])
    rgba = np.asarray(s.read_region((region[0], region[1]), level, (w, h)))
    bg = s.properties.get("openslide.background-color", "FFFFFF")
    bg = np.array([int(bg[i:i + 2], 16) for i in (0, 2, 4)], dtype=np.float64)
    a = rgba[..., 3:4].astype(np.float64) / 255.0
    rgb = rgba[..., :3].astype(np.float64) * a + bg * (1 - a)
    return np.rint(rgb).astype(np.uint8), s
