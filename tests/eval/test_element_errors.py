"""segeval: bad input and settings give an error a user can act on, no crash
(also run under AddressSanitizer)."""
import os

import numpy as np

import segref
import wsitest

checks = wsitest.Checks()
tmp = wsitest.tmpdir()

img = np.zeros((40, 48), np.uint8)
img[10:30, 10:30] = 1
d = os.path.join(tmp, "d")
os.makedirs(d)
segref.write_png(os.path.join(d, "a.png"), img)
glob = os.path.join(d, "*.png")


def labels(pad, tile="tile-width=48 tile-height=40"):
    return f"slidesrc location={glob} {tile} ! labelpatch masks={{path}} ! queue ! e.{pad} "


def expect_error(name, pipeline, phrase):
    proc = wsitest.gst_launch(pipeline, timeout=60)
    out = proc.stdout + proc.stderr
    checks.check(proc.returncode != 0 and phrase in out and wsitest.asan_clean(proc),
                 name, out.strip().splitlines()[-1][:160] if out.strip() else "no output")


raw = "videotestsrc num-buffers=3 ! video/x-raw,format=GRAY8,width=32,height=32 ! queue ! e."
expect_error("buffers without tile meta",
             f"segeval name=e ! fakesink {raw}prediction {raw}annotation",
             "no tile metadata")
expect_error("prediction and annotation patch sizes differ",
             "segeval name=e ! fakesink " + labels("prediction")
             + labels("annotation", "tile-width=32 tile-height=32"), "differ in size")
expect_error("image larger than max-image-pixels with instances=true",
             "segeval name=e instances=true max-image-pixels=100 ! fakesink "
             + labels("prediction") + labels("annotation"), "max-image-pixels")
expect_error("report in a missing folder",
             f"segeval name=e location={tmp}/missing/r.json ! fakesink "
             + labels("prediction") + labels("annotation"), "Could not write the report")
# connectivity is an enum (issue #9 point 10): 5 does not parse
expect_error("connectivity 5",
             "segeval name=e connectivity=5 ! fakesink "
             + labels("prediction") + labels("annotation"), "connectivity")
expect_error("annotation pad not linked",
             "segeval name=e ! fakesink " + labels("prediction"), "pad of segeval is not linked")

# the same pipeline with good settings works
proc = wsitest.gst_launch(f"segeval name=e location={tmp}/r.json ! fakesink "
                          + labels("prediction") + labels("annotation"), timeout=60)
checks.check(proc.returncode == 0 and os.path.exists(f"{tmp}/r.json"),
             "control: valid pipeline succeeds", proc.stderr[-300:])
checks.finish()
