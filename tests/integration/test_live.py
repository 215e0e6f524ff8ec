"""Live scanner emulation: a videotestsrc is-live=true stream of frames laid
on a grid (patchify grid-columns) is stitched back into the expected mosaic."""
import os

import numpy as np

import wsitest

c = wsitest.Checks()
tmp = wsitest.tmpdir()
cols, rows, fw, fh = 4, 3, 160, 120
n = cols * rows
caps = f"video/x-raw,format=RGB,width={fw},height={fh},framerate=30/1"
src = f"videotestsrc pattern=ball animation-mode=frames num-buffers={n}"

raw = os.path.join(tmp, "frames.raw")
p = wsitest.gst_launch(f"{src} ! {caps} ! filesink location={raw}")
c.check(p.returncode == 0, "reference frames captured", p.stderr[-300:])
frames = np.fromfile(raw, np.uint8).reshape(n, fh, fw, 3)
mosaic = np.zeros((rows * fh, cols * fw, 3), np.uint8)
for i in range(n):
    r, q = divmod(i, cols)
    mosaic[r * fh:(r + 1) * fh, q * fw:(q + 1) * fw] = frames[i]

for grid_rows in (rows, 0):  # known height, and unknown (live, open-ended)
    out = os.path.join(tmp, f"mosaic-{grid_rows}.png")
    p = wsitest.gst_launch(
        f"{src} is-live=true ! {caps} ! patchify grid-columns={cols} grid-rows={grid_rows} "
        f"patch-size=96 overlap=16 ! stitchsink location={out}")
    if c.check(p.returncode == 0, f"live pipeline (grid-rows={grid_rows})", p.stderr[-500:]):
        got = wsitest.read_png(out)
        same = got.shape == mosaic.shape and np.array_equal(got, mosaic)
        c.check(same, f"mosaic matches frames (grid-rows={grid_rows})",
                f"shape {got.shape} vs {mosaic.shape}")
c.finish()
