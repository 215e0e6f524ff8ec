"""labelpatch on bad input: every case must end in an element error that
names the annotation file and the patch (slide path + level-0 x, y), never a
crash (also run under AddressSanitizer, suite 'asan')."""
import json
import os
import struct
import zlib

import numpy as np

import annot
import wsitest

c = wsitest.Checks()
tmp = wsitest.tmpdir()
SW, SH = 200, 150
slide = os.path.join(tmp, "slides", "bad-case.svs")
PATCH = (-12, 34)
where = f"level-0 ({PATCH[0]}, {PATCH[1]})"


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + \
        struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)


def png_header_only(w, h, depth=8, color=0):
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0)) + \
        png_chunk(b"IDAT", zlib.compress(b"\0" * 16)) + png_chunk(b"IEND", b"")


def expect_error(name, props, annotation, *want, slide_path=slide, patch=PATCH, extra=(),
                 names_patch=True):
    res = annot.run(props, slide_path, [patch], (32, 32), (SW, SH), extra=extra)
    err = res.error()
    ok = res.returncode == 2 and err != ""
    if annotation:
        ok = ok and annotation in err
    if names_patch:
        ok = ok and slide_path in err and where in err
    for w in want:
        ok = ok and w in err
    c.check(ok, name, f"rc={res.returncode} {err or res.stderr[-400:]}")
    c.check(wsitest.asan_clean(res.proc), f"{name}: no sanitizer report",
            res.stderr[-600:] if not wsitest.asan_clean(res.proc) else "")


# GStreamer error domains and codes as the driver prints them (docs/labelpatch.md)
NOT_FOUND = "[gst-resource-error-quark 3]"
OPEN_READ = "[gst-resource-error-quark 5]"
SETTINGS = "[gst-resource-error-quark 13]"
NO_SPACE = "[gst-resource-error-quark 14]"
DECODE = "[gst-stream-error-quark 7]"
FORMAT = "[gst-stream-error-quark 11]"


def write(name, data, mode="wb"):
    path = os.path.join(tmp, name)
    with open(path, mode) as f:
        f.write(data)
    return path


# ---- PNG masks ----
masks = os.path.join(tmp, "{name}.png")
expect_error("missing mask", {"masks": masks}, os.path.join(tmp, "bad-case.png"), "cannot open",
             NOT_FOUND)

good = np.arange(SW * SH, dtype=np.uint32).reshape(SH, SW) % 5
full = annot.write_png(os.path.join(tmp, "full.png"), good.astype(np.uint8))
data = open(full, "rb").read()
write("bad-case.png", data[:len(data) // 2])
expect_error("truncated PNG", {"masks": masks}, os.path.join(tmp, "bad-case.png"), "corrupt or truncated",
             DECODE)

corrupt = bytearray(data)
corrupt[len(data) // 2] ^= 0x55
write("bad-case.png", bytes(corrupt))
expect_error("corrupt PNG data (CRC)", {"masks": masks}, os.path.join(tmp, "bad-case.png"), "PNG")

write("bad-case.png", b"this is not an image\n")
expect_error("not a PNG", {"masks": masks}, os.path.join(tmp, "bad-case.png"), "not a PNG")
write("bad-case.png", b"")
expect_error("empty file", {"masks": masks}, os.path.join(tmp, "bad-case.png"), "not a PNG")

from PIL import Image  # noqa: E402
Image.fromarray(np.zeros((SH, SW, 3), np.uint8)).save(os.path.join(tmp, "bad-case.png"))
expect_error("RGB mask", {"masks": masks}, os.path.join(tmp, "bad-case.png"), "colour PNG")

write("bad-case.png", png_header_only(100000, 100000))
expect_error("huge declared size", {"masks": masks}, os.path.join(tmp, "bad-case.png"), "more than",
             "limit of 268435456 pixels", "100000x100000", NO_SPACE)


# issue #9 point 14: a decompression bomb within the old limit (2^31 pixels):
# a valid 1-bit PNG of 20000x20000 zeros, ~60 KB on disk, 400 MB decoded
def bomb_png(w, h):
    z = zlib.compressobj(9)
    row = b"\0" * (1 + (w + 7) // 8)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)) + \
        png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


bomb = bomb_png(20000, 20000)
c.check(len(bomb) < 200000, "bomb PNG is small on disk", str(len(bomb)))
write("bad-case.png", bomb)
expect_error("decompression bomb mask", {"masks": masks}, os.path.join(tmp, "bad-case.png"),
             "20000x20000", "limit", NO_SPACE)
write("bad-case.png", png_header_only((1 << 20) + 1, 10))
expect_error("side beyond libpng limit", {"masks": masks}, os.path.join(tmp, "bad-case.png"),
             "corrupt or truncated")
write("bad-case.png", png_header_only(0, 10))
expect_error("zero width", {"masks": masks}, os.path.join(tmp, "bad-case.png"), "PNG")

annot.write_png(os.path.join(tmp, "bad-case.png"), np.zeros((100, 100), np.uint8))
expect_error("mask aspect differs from slide", {"masks": masks}, os.path.join(tmp, "bad-case.png"),
             "not a scale", "100x100", "200x150", DECODE)

annot.write_png(os.path.join(tmp, "bad-case.png"), good.astype(np.uint8))
expect_error("class index beyond num-classes", {"masks": masks, "num-classes": 3},
             os.path.join(tmp, "bad-case.png"), "beyond num-classes=3", DECODE)

inst = (good + 1).astype(np.uint16)
annot.write_png(os.path.join(tmp, "bad-case.png"), inst)
expect_error("instance id equals ignore-index", {"masks": masks, "instance-mode": "instances",
                                                 "ignore-index": 3},
             os.path.join(tmp, "bad-case.png"), "ignore")

# ---- GeoJSON ----
gj = os.path.join(tmp, "{name}.geojson")
gpath = os.path.join(tmp, "bad-case.geojson")
square = [[0, 0], [50, 0], [50, 50], [0, 50], [0, 0]]


def fc(*geoms, name="Tumor"):
    return json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": g, "properties": {"classification": {"name": name}}}
        for g in geoms]})


gprops = {"geojson": gj, "class-map": "Tumor=1"}
expect_error("missing GeoJSON", gprops, gpath, "cannot open", NOT_FOUND)
cases = [
    ("not JSON", "{ nope", "bad GeoJSON"),
    ("wrong root", json.dumps({"type": "Topology"}), "expected a FeatureCollection"),
    ("features not an array", json.dumps({"type": "FeatureCollection", "features": 3}),
     "expected a FeatureCollection"),
    ("feature not an object", json.dumps([1, 2]), "feature 0: not an object"),
    ("geometry not an object", json.dumps([{"type": "Feature", "geometry": "x"}]),
     "geometry is not an object"),
    ("ring with 2 points", fc({"type": "Polygon", "coordinates": [[[0, 0], [5, 5], [0, 0]]]}),
     "fewer than 3 points"),
    ("ring not an array", fc({"type": "Polygon", "coordinates": [5]}), "ring is not an array"),
    ("coordinates not an array", fc({"type": "Polygon", "coordinates": {"a": 1}}),
     "not an array"),
    ("infinite coordinate", fc({"type": "Polygon", "coordinates": [[[0, 0], [7, 0], [5, 5]]]})
     .replace("7", "1e999"), "finite numbers"),
    ("huge coordinate", fc({"type": "Polygon", "coordinates": [[[0, 0], [1e300, 0], [5, 5]]]}),
     "finite numbers"),
    ("string coordinate", fc({"type": "Polygon", "coordinates": [[["0", 0], [9, 0], [5, 5]]]}),
     "finite numbers"),
    ("1-d position", fc({"type": "Polygon", "coordinates": [[[0], [9, 0], [5, 5]]]}),
     "finite numbers"),
    ("geometry without type", fc({"coordinates": [square]}), "without a type"),
    ("MultiPolygon of junk", fc({"type": "MultiPolygon", "coordinates": [[[1, 2]]]}),
     "position is not [x, y]"),
    ("unknown classification", fc({"type": "Polygon", "coordinates": [square]}, name="Necrosis"),
     "classification 'Necrosis' is not in class-map"),
    ("nested FeatureCollection without features",
     json.dumps({"type": "FeatureCollection", "features": [{"type": "FeatureCollection"}]}),
     "without a 'features' array"),
]
nested = json.loads(fc({"type": "Polygon", "coordinates": [square]}))
for _ in range(12):
    nested = {"type": "FeatureCollection", "features": [nested]}
cases.append(("FeatureCollections nested too deep", json.dumps(nested),
              "FeatureCollections nested too deep"))
deep = {"type": "Polygon", "coordinates": [square]}
for _ in range(12):
    deep = {"type": "GeometryCollection", "geometries": [deep]}
cases.append(("GeometryCollection nested too deep", fc(deep), "nested too deep"))
cases.append(("JSON nested a million deep", "[" * 1000000, "nested deeper than 64"))
cases.append(("empty file", "", "expected a FeatureCollection"))
for name, text, want in cases:
    write("bad-case.geojson", text, "w")
    expect_error(f"GeoJSON: {name}", gprops, gpath, want,
                 SETTINGS if "class-map" in want else DECODE)

# a feature index in the message points at the bad one
write("bad-case.geojson", json.dumps([
    {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square]},
     "properties": {"classification": {"name": "Tumor"}}},
    {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}}]), "w")
expect_error("GeoJSON: error names the feature", gprops, gpath, "feature 1")

# ---- settings (checked at start) and missing meta ----
expect_error("neither masks nor geojson", {}, None, "exactly one", SETTINGS, names_patch=False)
if os.geteuid() != 0:
    write("bad-case.png", data)
    os.chmod(os.path.join(tmp, "bad-case.png"), 0)
    expect_error("unreadable mask", {"masks": masks}, os.path.join(tmp, "bad-case.png"),
                 "Permission denied", OPEN_READ)
expect_error("both masks and geojson", {"masks": masks, "geojson": gj}, None, "exactly one",
             names_patch=False)
expect_error("unknown placeholder", {"masks": os.path.join(tmp, "{nmae}.png")}, "{nmae}",
             "unknown placeholder", names_patch=False)
expect_error("unterminated placeholder", {"masks": os.path.join(tmp, "{name.png")}, None,
             "unterminated", names_patch=False)
for bad in ("Tumor", "Tumor=300", "Tumor=1,Tumor=2", "=3", "Tumor=x"):
    expect_error(f"bad class-map '{bad}'", {"geojson": gj, "class-map": bad}, None, "class-map",
                 names_patch=False)
expect_error("ignore-index beyond GRAY8", {"masks": masks, "ignore-index": 300}, None,
             "GRAY8", names_patch=False)
expect_error("GeoJSON with instance-mode", {"geojson": gj, "instance-mode": "boundary"}, None,
             "instance-mode", names_patch=False)
expect_error("buffer without tile meta", {"masks": masks}, None, "GstWsiTileMeta", FORMAT,
             extra=["--no-meta"], names_patch=False)
c.finish()
