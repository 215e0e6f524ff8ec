"""Bad input to slidesrc: every case ends gst-launch with a non-zero exit and
an error message naming the file (or setting) and the cause; no crash, no
sanitizer report (suite asan runs this under AddressSanitizer)."""
import os
import shutil

import numpy as np

import wsitest

c = wsitest.Checks()
tmp = wsitest.tmpdir()
sample = wsitest.SAMPLE_SLIDE
rng = np.random.default_rng(11)


def path(name):
    return os.path.join(tmp, name)


# inputs
os.makedirs(path("adir"))
open(path("empty.svs"), "wb").close()
with open(path("random.svs"), "wb") as f:
    f.write(rng.integers(0, 256, 200000, dtype=np.uint8).tobytes())
with open(path("random.png"), "wb") as f:  # PNG signature, garbage after
    f.write(b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
data = open(sample, "rb").read()
with open(path("truncated.svs"), "wb") as f:
    f.write(data[:len(data) // 3])
# directories intact (they sit at the end of this SVS), tile data garbage:
# opens, then fails in read_region
corrupt = bytearray(data)
corrupt[16:1000000] = rng.integers(0, 256, 1000000 - 16, dtype=np.uint8).tobytes()
with open(path("corrupt.svs"), "wb") as f:
    f.write(corrupt)
import skimage.io  # noqa: E402
skimage.io.imsave(path("good.png"), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8),
                  check_contrast=False)
pngdata = open(path("good.png"), "rb").read()
with open(path("truncated.png"), "wb") as f:
    f.write(pngdata[:len(pngdata) // 2])
with open(path("list.txt"), "w") as f:
    f.write(path("good.png") + "\nmissing-in-list.png\n")
# a NUL byte on line 2: the list used to end there silently
with open(path("nul.txt"), "wb") as f:
    f.write(path("good.png").encode() + b"\n" + b"x\0y.png\n" + path("good.png").encode() + b"\n")
os.mkfifo(path("fifo.svs"))


def png_1bit(fname, w, h):
    """A 1-bit gray PNG of w x h zeros: a few hundred KB that decode to
    w * h * 3 bytes of RGB (a decompression bomb)."""
    import struct
    import zlib

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    row = b"\0" * (1 + (w + 7) // 8)
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    with open(fname, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
                + chunk(b"IDAT", data) + chunk(b"IEND", b""))


png_1bit(path("bomb.png"), 30000, 30000)

# (name, location, extra properties, words that must appear in the error)
cases = [
    ("missing file", path("nope.svs"), "", ["nope.svs", "No such file"]),
    ("directory", path("adir"), "", ["adir", "directory"]),
    ("0-byte file", path("empty.svs"), "", ["empty.svs", "empty"]),
    ("random bytes", path("random.svs"), "", ["random.svs", "OpenSlide"]),
    ("random bytes with PNG signature", path("random.png"), "", ["random.png", "PNG"]),
    ("truncated slide", path("truncated.svs"), "", ["truncated.svs"]),
    ("corrupt tile data", path("corrupt.svs"), "", ["Could not read slide", "corrupt.svs", "JPEG"]),
    ("truncated PNG", path("truncated.png"), "", ["truncated.png", "PNG"]),
    ("region outside", sample, "region=2000,100,500,500", ["Region", "outside"]),
    ("region negative", sample, "region=-5,0,100,100", ["Region", "invalid"]),
    ("region malformed", sample, "region=1,2,3", ["Region", "x,y,width,height"]),
    ("level out of range", sample, "level=3", ["Level 3", "out of range"]),
    ("PNG level out of range", path("good.png"), "level=1", ["Level 1", "out of range"]),
    ("list with a NUL byte", "@" + path("nul.txt"), "", ["nul.txt", "NUL", "line 2"]),
    ("FIFO", path("fifo.svs"), "", ["fifo.svs", "not a regular file"]),
    ("1-bit PNG bomb", path("bomb.png"), "", ["bomb.png", "limit"]),
    ("glob without match", path("*.nothing"), "", ["No file matches"]),
    ("missing list file", "@" + path("nolist.txt"), "", ["nolist.txt"]),
    ("list naming a missing file", "@" + path("list.txt"), "", ["missing-in-list.png"]),
    ("no location", None, "", ["No file name"]),
]

for name, loc, extra, words in cases:
    locarg = f"location={loc}" if loc is not None else ""
    p = wsitest.gst_launch(f"slidesrc {locarg} {extra} ! fakesink", timeout=60)
    out = p.stdout + p.stderr
    c.check(p.returncode != 0, f"{name}: gst-launch fails", f"exit {p.returncode}")
    c.check(p.returncode > 0, f"{name}: no crash (killed by no signal)", f"exit {p.returncode}")
    missing = [w for w in words if w not in out]
    c.check(not missing, f"{name}: error names the cause", f"missing {missing}: {out[-400:]}")
    c.check(wsitest.asan_clean(p), f"{name}: no sanitizer report", out[-800:])

# out-of-range values are refused by the property's range (gst-inspect says
# 1 - 16384), GObject names the property; no crash
for prop in ("tile-width", "tile-height"):
    p = wsitest.gst_launch(f"slidesrc location={sample} {prop}=0 region=0,0,10,10 ! fakesink",
                           timeout=60)
    out = p.stdout + p.stderr
    c.check(f"out of range for property '{prop}'" in out, f"{prop}=0 refused by its range",
            out[-300:])
    c.check(p.returncode >= 0 and wsitest.asan_clean(p), f"{prop}=0: no crash", out[-300:])

# permission denied is reported as such, not as an unknown format; root
# reads anything, so the run drops to nobody when the test runs as root
os.chmod(tmp, 0o755)
shutil.copy(sample, path("locked.svs"))
os.chmod(path("locked.svs"), 0)
with open(path("locked-list.txt"), "w") as f:
    f.write(path("good.png") + "\n")
os.chmod(path("locked-list.txt"), 0)
for name, loc in (("unreadable slide", path("locked.svs")),
                  ("unreadable list", "@" + path("locked-list.txt"))):
    import shlex
    import subprocess
    cmd = ["gst-launch-1.0", "-q", "slidesrc", f"location={loc}", "!", "fakesink"]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + cmd
    env = wsitest.gst_env()
    env["GST_REGISTRY"] = path(f"registry-{name.split()[1]}.bin")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    out = p.stdout + p.stderr
    c.check(p.returncode > 0, f"{name}: gst-launch fails", f"exit {p.returncode}: {shlex.join(cmd)}")
    c.check("Permission denied" in out and "OpenSlide" not in out,
            f"{name}: error says permission denied", out[-400:])
    c.check(wsitest.asan_clean(p), f"{name}: no sanitizer report", out[-800:])

shutil.rmtree(tmp, ignore_errors=True)
c.finish()
