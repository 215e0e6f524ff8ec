"""Streaming behaviour of patchify: memory follows the region width, not its
area (a tall open-ended mosaic), live frames give patches whose timestamps
come from the frame that completed them, in order, and Ctrl-C with
gst-launch -e ends a live slide scan at once, marking the region incomplete."""
import re
import resource
import shlex
import subprocess

import wsitest

c = wsitest.Checks()


def peak_rss_mb(pipeline):
    """Runs a pipeline and returns (process, peak RSS in MiB of the largest
    child so far)."""
    p = wsitest.gst_launch(pipeline, timeout=120, messages=True)
    return p, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


src = "videotestsrc pattern=smpte num-buffers={n} ! video/x-raw,format=RGB,width=512,height=512"
cut = "patchify grid-columns=4 grid-rows=0 patch-size=256 overlap=32 post-messages=true"
p, small = peak_rss_mb(f"{src.format(n=8)} ! {cut} ! fakesink")
c.check(p.returncode == 0, "small mosaic runs", p.stderr[-300:])
# 400 frames: a 2048 x 51200 mosaic, 300 MiB of pixels if it were kept whole
p, big = peak_rss_mb(f"{src.format(n=400)} ! {cut} ! fakesink")
c.check(p.returncode == 0, "tall mosaic runs", p.stderr[-300:])
n = p.stdout.count("patchify-patch,")
want = -(-2048 // 224) * -(-51200 // 224)
c.check(n == want, "tall mosaic: every patch emitted", f"{n} vs {want}")
c.check(big - small < 60, "memory bounded by a band of rows, not the mosaic",
        f"peak {big:.0f} MiB vs {small:.0f} MiB for 8 frames")

# live: 12 frames at 30 fps on a 4x3 grid
p = subprocess.run(
    ["gst-launch-1.0", "-v"] + shlex.split(
        "videotestsrc is-live=true num-buffers=12 ! video/x-raw,format=RGB,width=160,"
        "height=120,framerate=30/1 ! patchify grid-columns=4 grid-rows=3 patch-size=96 "
        "overlap=16 ! fakesink sync=true silent=false"),
    env=wsitest.gst_env(), capture_output=True, text=True, timeout=60)
ok = c.check(p.returncode == 0, "live pipeline runs", p.stderr[-300:])
pts = []
for m in re.finditer(r"chain\s+\*+ \(fakesink0:sink\).*?pts: (\d+):(\d+):(\d+)\.(\d+)",
                     p.stdout):
    h, mi, s, frac = m.groups()
    pts.append(((int(h) * 60 + int(mi)) * 60 + int(s)) * 10**9 + int(frac.ljust(9, "0")))
c.check(len(pts) == 8 * 5, "live: all patches arrive", f"{len(pts)} of 40")
c.check(len(pts) > 1 and all(a <= b for a, b in zip(pts, pts[1:])), "live: timestamps increase")
frame = 10**9 // 30
# frame k of the live source is stamped t0 + k/30 s (t0 >= 0). The first
# patch row needs the first frame row, so it carries frame 3's time; the
# last row is completed by frame 11 and spread within its duration.
c.check(bool(pts) and pts[0] >= 3 * frame - 1000, "live: first patches carry "
        "the timestamp of the frame that completed them", f"first pts {pts[0] if pts else None}")
span = pts[-1] - pts[0] if pts else -1
c.check(8 * frame - 1000 <= span < 9 * frame, "live: last patches from the last frame",
        f"span {span} ns")

# Ctrl-C with gst-launch -e while a live slide scan runs: EOS reaches
# patchify mid-region; only patches of the rows received come out (a
# segment-fcn would otherwise run the whole remaining grid), shutdown is
# immediate, and wsi-region-incomplete says what is missing (issue 9, pt 14)
import signal  # noqa: E402
import time  # noqa: E402

proc = subprocess.Popen(
    ["gst-launch-1.0", "-e", "-m"] + shlex.split(
        f"slidesrc location={wsitest.SAMPLE_SLIDE} tile-width=256 tile-height=256 is-live=true "
        "tiles-per-second=40 ! patchify patch-size=64 ! fakesink silent=false"),
    env=wsitest.gst_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
time.sleep(1.5)
t0 = time.monotonic()
proc.send_signal(signal.SIGINT)
out, err = proc.communicate(timeout=60)
took = time.monotonic() - t0
c.check(proc.returncode == 0, "SIGINT with -e: clean EOS", err[-300:])
c.check(took < 5, "SIGINT with -e: shutdown at once", f"{took:.1f} s")
m = re.search(r"wsi-region-incomplete.*?received-height=\(gint64\)(\d+).*?"
              r"patches-dropped=\(guint64\)(\d+)", out)
c.check(m is not None and 0 < int(m.group(1)) < 2967 and int(m.group(2)) > 0,
        "SIGINT with -e: wsi-region-incomplete message names the rows received",
        m.group(0)[:200] if m else out[-300:])
if m:
    rows = int(m.group(1))
    # patches of the rows received only: at most (rows + patch) / 64 patch rows
    grid = 35 * 47
    c.check(int(m.group(2)) >= grid - 35 * ((rows + 64) // 64 + 1),
            "SIGINT with -e: the unreceived rest of the grid is dropped",
            f"{m.group(2)} of {grid} dropped, {rows} rows received")
c.finish()
