#!/usr/bin/env bash
# Main job on the bundled sample slide: installs what is missing, builds, runs.
# Usage: pipelines/demo.sh [slide] [output-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SLIDE=${1:-$ROOT/data/cmu-1-small-region.svs}
OUT=${2:-$ROOT/out/demo}

pipelines/install-deps.sh
[ -f build/build.ninja ] || meson setup build -Dtests=false >/dev/null
meson compile -C build >/dev/null
export GST_PLUGIN_PATH=$ROOT/build/gst
mkdir -p "$OUT"

gst-launch-1.0 -q slidesrc location="$SLIDE" level=0 tile-width=1024 tile-height=1024 ! \
  patchify patch-size=256 overlap=0 ! tee name=t \
  t. ! queue ! stitchsink location="$OUT/reconstruction.png" \
  t. ! queue ! tissuemask ! stitchsink location="$OUT/tissue-mask.png" \
      overlay-location="$OUT/tissue-overlay.png"

echo "Outputs in $OUT:"
ls -l "$OUT"
