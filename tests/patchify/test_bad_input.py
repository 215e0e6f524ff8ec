"""patchify and tissuemask refuse bad settings and input with a clear error
and a non-zero exit, never a crash (also run under AddressSanitizer)."""
import wsitest

c = wsitest.Checks()
src = "videotestsrc num-buffers=4 ! video/x-raw,format=RGB,width=100,height=80"


def expect_error(name, pipeline, words):
    p = wsitest.gst_launch(pipeline, timeout=60)
    out = p.stdout + p.stderr
    c.check(p.returncode != 0, f"{name}: non-zero exit", f"rc {p.returncode}")
    c.check(all(w in out for w in words), f"{name}: message names the problem",
            out.strip()[-300:])
    c.check(p.returncode > 0 and wsitest.asan_clean(p), f"{name}: no crash, no sanitizer report",
            out.strip()[-300:])




def expect_out_of_range(name, pipeline, prop):
    """A value outside the property's range is refused when it is set (GObject
    names the property) and the element keeps its valid value: no crash."""
    p = wsitest.gst_launch(pipeline, timeout=60)
    out = p.stdout + p.stderr
    c.check(f"out of range for property '{prop}'" in out,
            f"{name}: refused by the property's range", out.strip()[-300:])
    c.check(p.returncode >= 0 and wsitest.asan_clean(p), f"{name}: no crash, no sanitizer report",
            out.strip()[-300:])


def inspect_range(element, prop):
    import subprocess
    p = subprocess.run(["gst-inspect-1.0", element], env=wsitest.gst_env(),
                       capture_output=True, text=True, timeout=60)
    lines = p.stdout.splitlines()
    for i, ln in enumerate(lines):
        if ln.strip().startswith(prop + " "):
            for ln2 in lines[i + 1:i + 6]:
                if "Range:" in ln2:
                    return ln2.split("Range:")[1].split("Default")[0].strip()
    return None


# gst-inspect says what is accepted (issue 9, point 10)
c.check(inspect_range("patchify", "patch-size") == "1 - 8192", "patch-size range is 1 - 8192",
        str(inspect_range("patchify", "patch-size")))
c.check(inspect_range("patchify", "overlap") == "0 - 8191", "overlap range is 0 - 8191",
        str(inspect_range("patchify", "overlap")))
expect_out_of_range("patch-size 0", f"{src} ! patchify patch-size=0 ! fakesink", "patch-size")
expect_error("overlap = patch-size",
             f"{src} ! patchify patch-size=64 overlap=64 ! fakesink",
             ["overlap=64", "overlap smaller than patch-size"])
expect_error("overlap > patch-size",
             f"{src} ! patchify patch-size=32 overlap=200 ! fakesink",
             ["overlap=200"])
expect_error("non-RGB caps",
             "videotestsrc num-buffers=4 ! video/x-raw,format=I420,width=64,height=64 "
             "! patchify ! fakesink", ["patchify", "I420"])
expect_error("tissuemask non-RGB caps",
             "videotestsrc num-buffers=4 ! video/x-raw,format=GRAY8,width=64,height=64 "
             "! tissuemask ! fakesink", ["tissuemask"])
expect_out_of_range("patch size above the limit",
                    f"{src} ! patchify patch-size=100000 ! fakesink", "patch-size")

# odd but valid input still works: 1x1 frames, patch larger than the mosaic
p = wsitest.gst_launch("videotestsrc num-buffers=3 ! video/x-raw,format=RGB,width=1,height=1 "
                       "! patchify patch-size=8 overlap=7 pad-mode=reflect grid-columns=3 "
                       "! tissuemask ! fakesink", timeout=60)
c.check(p.returncode == 0 and wsitest.asan_clean(p), "1x1 frames, reflect padding",
        (p.stdout + p.stderr).strip()[-300:])
c.finish()
