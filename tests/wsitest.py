"""Shared helpers for the Python end-to-end tests (run by meson test)."""
import atexit
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

SKIP = 77  # meson's exit code for a skipped test

SOURCE_ROOT = os.environ.get("WSISEG_SOURCE_ROOT",
                             os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_ROOT = os.environ.get("WSISEG_BUILD_ROOT", os.path.join(SOURCE_ROOT, "build"))
SAMPLE_SLIDE = os.environ.get("WSISEG_SAMPLE_SLIDE",
                              os.path.join(SOURCE_ROOT, "data", "cmu-1-small-region.svs"))
SHARED_DATA = os.environ.get("WSISEG_SHARED_DATA",
                             os.path.join(SOURCE_ROOT, "..", "shared", "data"))


def skip(reason):
    print(f"SKIP: {reason}")
    sys.exit(SKIP)


def shared_path(*parts):
    """Path inside ../shared/data, or skip the test with a clear message."""
    p = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(p):
        skip(f"needs ../shared/data/{'/'.join(parts)} (real data folder absent)")
    return p


def gst_env():
    env = dict(os.environ)
    env.setdefault("GST_PLUGIN_PATH", os.path.join(BUILD_ROOT, "gst"))
    env.setdefault("GST_REGISTRY", os.path.join(BUILD_ROOT, "test-registry.bin"))
    pre = env.get("WSISEG_ASAN_PRELOAD")
    if pre:
        env["LD_PRELOAD"] = pre
    return env


def gst_launch(pipeline, timeout=600, messages=False):
    """Runs gst-launch-1.0 on a pipeline string; returns CompletedProcess."""
    args = ["gst-launch-1.0", "-q"]
    if messages:
        args = ["gst-launch-1.0", "-m"]
    args += shlex.split(pipeline)
    return subprocess.run(args, env=gst_env(), capture_output=True, text=True,
                          timeout=timeout)


def asan_clean(proc):
    """True when the process output shows no sanitizer report."""
    out = (proc.stdout or "") + (proc.stderr or "")
    return "ERROR: AddressSanitizer" not in out and "runtime error:" not in out


def tmpdir():
    """A temporary directory removed when the test exits (kept when
    WSISEG_KEEP_TMP is set, for debugging)."""
    d = tempfile.mkdtemp(prefix="wsiseg-test-")
    if not os.environ.get("WSISEG_KEEP_TMP"):
        atexit.register(shutil.rmtree, d, True)
    return d


def read_png(path):
    """Reads a PNG into a numpy array with scikit-image (an independent decoder)."""
    import skimage.io
    return skimage.io.imread(path)


class Checks:
    """Collects named checks; exits non-zero if any failed."""

    def __init__(self):
        self.failed = []
        self.count = 0

    def check(self, cond, name, detail=""):
        self.count += 1
        status = "ok" if cond else "FAIL"
        print(f"{status}: {name}" + (f" ({detail})" if detail else ""))
        if not cond:
            self.failed.append(name)
        return cond

    def finish(self):
        print(f"{self.count - len(self.failed)} of {self.count} checks passed")
        sys.exit(1 if self.failed else 0)
