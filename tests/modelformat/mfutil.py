"""Helpers of the modelformat tests: paths, st_tool runner."""
import json
import os
import subprocess
import sys

import wsitest

REFERENCE = os.path.join(wsitest.SOURCE_ROOT, "models", "reference")
sys.path.insert(0, REFERENCE)

ST_TOOL = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    wsitest.BUILD_ROOT, "tests", "modelformat", "st_tool")


def st_tool(*args, timeout=60):
    """Runs st_tool; returns CompletedProcess (text)."""
    return subprocess.run([ST_TOOL, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def st_info(path):
    p = st_tool("info", path)
    if p.returncode != 0:
        raise RuntimeError(f"st_tool info {path}: {p.stdout}{p.stderr}")
    return json.loads(p.stdout)


def crashed(proc):
    """True when the process died of a signal or a sanitizer report."""
    return proc.returncode < 0 or proc.returncode > 2 or not wsitest.asan_clean(proc)
