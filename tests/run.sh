#!/usr/bin/env bash
# Builds gst-wsiseg and runs the whole test suite: a normal build (all tests)
# and an AddressSanitizer build (the suites marked 'asan').
# Exits non-zero on any failure, and when a test that meson lists did not
# run (e.g. a build configured without tests): no suite is dropped silently.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

pipelines/install-deps.sh --tests || exit 1

build() {  # dir, meson options...
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" || return 1
  else
    # a build dir made by the demo has tests=false: turn them on
    meson configure "$dir" "$@" || return 1
  fi
  meson compile -C "$dir" || return 1
}

status=0
build build -Dtests=true || exit 1
meson test -C build --list > build/meson-logs/expected-tests.txt 2>/dev/null || exit 1
meson test -C build --print-errorlogs --num-processes 2 --timeout-multiplier 2 || status=1

build build-asan -Dtests=true -Db_sanitize=address -Db_lundef=false -Dbuildtype=debug || exit 1
meson test -C build-asan --suite asan --list > build-asan/meson-logs/expected-tests.txt 2>/dev/null || exit 1
meson test -C build-asan --suite asan --print-errorlogs --num-processes 2 --timeout-multiplier 4 || status=1

# One plain summary line over both runs; every listed test must have run.
/usr/bin/python3 - "$ROOT/build" "$ROOT/build-asan" <<'PY' || status=1
import json, os, sys
p = f = s = 0
missing = []
for build in sys.argv[1:]:
    # test lines read "project:suites / name" (the build's own output is not a test)
    expected = [l.strip() for l in open(os.path.join(build, "meson-logs", "expected-tests.txt"))
                if " / " in l]
    ran = {}
    try:
        for line in open(os.path.join(build, "meson-logs", "testlog.json")):
            r = json.loads(line)
            ran[r["name"]] = r.get("result")
    except OSError:
        pass
    if not expected:
        missing.append(f"{build}: meson lists no tests at all")
    for name in expected:
        if name not in ran:  # both say "project:suites / name"
            missing.append(f"{os.path.basename(build)}: {name}")
    for r in ran.values():
        if r in ("OK", "EXPECTEDFAIL"): p += 1
        elif r == "SKIP": s += 1
        else: f += 1
for m in missing:
    print(f"NOT RUN: {m}")
f += len(missing)
print(f"{p} passed, {f} failed, {s} skipped")
sys.exit(1 if f else 0)
PY
exit $status
