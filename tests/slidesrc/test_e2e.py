"""slidesrc end to end: tiles put back together equal one openslide-python
read_region of the whole region (un-premultiplied, composited on the
background colour in numpy), pixel for pixel, edge tiles included; padding is
the background colour. Sample slide at level 0 (plus a region), generated
pyramidal TIFFs at level 0, 1 and the lowest level (non-integer downsamples,
one with a level wider than OpenSlide's 4096-pixel read chunks). PNG images
of several types read through a glob compare with scikit-image's decoder."""
import os
import subprocess

import numpy as np

import wsitest
from tilesio import assemble, reference, run_tiles

c = wsitest.Checks()
tmp = wsitest.tmpdir()


def compare(name, slide, level, tile, region=None, order="raster", band_limit=None):
    ref, bg, s = reference(slide, level, region)
    h, w = ref.shape[:2]
    extra = f"level={level} order={order}"
    if region:
        extra += " region=" + ",".join(map(str, region))
    if band_limit is not None:
        os.environ["WSISEG_SLIDESRC_BAND_LIMIT"] = str(band_limit)
    p, tiles = run_tiles(slide, tile, extra, tmp)
    os.environ.pop("WSISEG_SLIDESRC_BAND_LIMIT", None)
    if not c.check(p.returncode == 0, f"{name}: pipeline runs", p.stderr[-400:]):
        return
    cols, rows = -(-w // tile[0]), -(-h // tile[1])
    c.check(len(tiles) == cols * rows, f"{name}: {cols}x{rows} tiles", f"got {len(tiles)}")
    img, mosaic = assemble(tiles, cols, rows, w, h, order == "serpentine")
    diff = np.abs(img.astype(int) - ref.astype(int))
    c.check(diff.max() == 0, f"{name}: pixel-identical to openslide "
            f"(level {level}, downsample {s.level_downsamples[level]:.6f}, {w}x{h})",
            f"max diff {diff.max()}, {np.count_nonzero(diff.any(-1))} pixels differ")
    pad_ok = (mosaic[h:] == bg).all() and (mosaic[:, w:] == bg).all()
    c.check(pad_ok, f"{name}: edge padding is the background colour {bg.tolist()}")


def make_tiff(path, width, height, seed):
    """Pyramidal tiled TIFF (JPEG, 256x256 tiles) of RGB noise, via a PPM and
    vips. JPEG: OpenSlide 3.4.1 decodes it itself; other compressions go
    through libtiff's RGBA reader, which returns undefined pixels for levels
    narrower than a tile."""
    rng = np.random.default_rng(seed)
    ppm = path + ".ppm"
    with open(ppm, "wb") as f:
        f.write(f"P6\n{width} {height}\n255\n".encode())
        for y in range(0, height, 1024):
            rows = min(1024, height - y)
            f.write(rng.integers(0, 256, (rows, width, 3), dtype=np.uint8).tobytes())
    subprocess.run(["vips", "tiffsave", ppm, path, "--tile", "--pyramid",
                    "--compression", "jpeg", "--Q", "90",
                    "--tile-width", "256", "--tile-height", "256"], check=True)
    os.unlink(ppm)
    return path


sample = wsitest.SAMPLE_SLIDE
compare("sample-l0", sample, 0, (700, 500))
compare("sample-region", sample, 0, (256, 200), region=(333, 411, 1001, 777))
compare("sample-serpentine", sample, 0, (1024, 1024), order="serpentine")

import openslide  # noqa: E402

tif = make_tiff(os.path.join(tmp, "pyramid.tif"), 3001, 2203, seed=3)
osr = openslide.OpenSlide(tif)
lowest = osr.level_count - 1
c.check(lowest >= 3 and any(d != int(d) for d in osr.level_downsamples),
        "generated TIFF has non-integer downsamples", str(osr.level_downsamples))
compare("tiff-l0", tif, 0, (640, 480))
compare("tiff-l1", tif, 1, (300, 200))
compare("tiff-l1-region", tif, 1, (128, 96), region=(101, 57, 1333, 999))
compare("tiff-l2", tif, 2, (100, 100), order="serpentine")
compare("tiff-l2-chunk-reads", tif, 2, (100, 100), band_limit=0)
compare(f"tiff-l{lowest}", tif, lowest, (64, 64))

# level 1 is 4097 wide: OpenSlide reads it in 4096-pixel chunks
big = make_tiff(os.path.join(tmp, "big.tif"), 8195, 8195, seed=7)
compare("big-l1-chunks", big, 1, (1000, 1000))
# the path for regions too wide to hold a band: chunks re-read from their origin
compare("big-l1-chunk-reads", big, 1, (2100, 2100), band_limit=0)
os.unlink(big)

# PNG dataset through a glob, compared with scikit-image's decoder
import PIL.Image  # noqa: E402
import skimage.io  # noqa: E402

rng = np.random.default_rng(5)
pngdir = os.path.join(tmp, "png")
os.makedirs(pngdir)
imgs = {
    "a_rgb8.png": rng.integers(0, 256, (70, 90, 3), dtype=np.uint8),
    "b_gray16.png": rng.integers(0, 65536, (40, 33), dtype=np.uint16),
    "c_rgba8.png": rng.integers(0, 256, (64, 64, 4), dtype=np.uint8),
    "d_gray8.png": rng.integers(0, 256, (20, 100), dtype=np.uint8),
}
for name, a in imgs.items():
    skimage.io.imsave(os.path.join(pngdir, name), a, check_contrast=False)
pal = PIL.Image.fromarray(rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)).quantize(64)
pal.save(os.path.join(pngdir, "e_palette.png"))
imgs["e_palette.png"] = None


def expected_rgb(path):
    a = skimage.io.imread(path)
    if a.dtype == np.uint16:
        a = np.floor(a.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    if a.shape[-1] == 4:
        al = a[..., 3:4].astype(np.float64) / 255.0
        a = np.rint(a[..., :3] * al + 255.0 * (1 - al)).astype(np.uint8)
    return a


tile = (32, 32)
p, tiles = run_tiles(os.path.join(pngdir, "*.png"), tile, "", tmp)
if c.check(p.returncode == 0, "png glob: pipeline runs", p.stderr[-400:]):
    k = 0
    for name in sorted(imgs):
        ref = expected_rgb(os.path.join(pngdir, name))
        h, w = ref.shape[:2]
        cols, rows = -(-w // tile[0]), -(-h // tile[1])
        img, mosaic = assemble(tiles[k:k + cols * rows], cols, rows, w, h)
        k += cols * rows
        c.check(np.array_equal(img, ref), f"png {name} ({w}x{h}) matches skimage",
                f"{np.count_nonzero((img != ref).any(-1))} pixels differ")
        c.check((mosaic[h:] == 255).all() and (mosaic[:, w:] == 255).all(),
                f"png {name}: padding white")
    c.check(k == len(tiles), "png glob: tile count", f"{k} vs {len(tiles)}")
c.finish()
