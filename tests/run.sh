#!/usr/bin/env bash
# Builds gst-wsiseg and runs the whole test suite: a normal build (all tests)
# and an AddressSanitizer build (the suites marked 'asan').
# Exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

pipelines/install-deps.sh --tests || exit 1

build() {  # dir, extra meson args...
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" || return 1
  fi
  meson compile -C "$dir" || return 1
}

status=0
build build || exit 1
meson test -C build --print-errorlogs --num-processes 2 --timeout-multiplier 2 || status=1

build build-asan -Db_sanitize=address -Db_lundef=false -Dbuildtype=debug || exit 1
meson test -C build-asan --suite asan --print-errorlogs --num-processes 2 --timeout-multiplier 4 || status=1

# One plain summary line over both runs.
/usr/bin/python3 - "$ROOT/build/meson-logs/testlog.json" "$ROOT/build-asan/meson-logs/testlog.json" <<'PY'
import json, sys
p = f = s = 0
for path in sys.argv[1:]:
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        r = json.loads(line).get("result")
        if r in ("OK", "EXPECTEDFAIL"): p += 1
        elif r == "SKIP": s += 1
        else: f += 1
print(f"{p} passed, {f} failed, {s} skipped")
PY
exit $status
