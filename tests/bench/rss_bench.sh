#!/usr/bin/env bash
# Peak RSS of slidesrc ! patchify ! stitchsink on generated pyramidal TIFFs of
# growing size (default 20k, 40k, 60k square). Memory must stay roughly flat:
# it grows with slide width x band height, never with slide area.
# Usage: tests/bench/rss_bench.sh [build-dir] [sizes...]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}; shift || true
SIZES=${*:-20000 40000 60000}
CACHE=${WSISEG_BENCH_DIR:-/tmp/wsiseg-bench}
mkdir -p "$CACHE"
meson compile -C "$BUILD" >/dev/null
export GST_PLUGIN_PATH=$PWD/$BUILD/gst

printf '%-8s %-12s %-10s %-12s %-10s\n' size megapixels wall_s peak_rss_MB MPix/s
for s in $SIZES; do
  tif=$CACHE/pyramid-$s.tif
  [ -f "$tif" ] || "$BUILD/tests/bench/mkpyramid" "$tif" "$s" "$s"
  out=$CACHE/stitched-$s.png
  log=$CACHE/time-$s.txt
  /usr/bin/time -f '%M %e' -o "$log" gst-launch-1.0 -q slidesrc location="$tif" level=0 \
    tile-width=2048 tile-height=256 ! patchify patch-size=256 overlap=32 ! \
    stitchsink location="$out" compression-level=1
  read -r rss_kb wall < "$log"
  mp=$(( s * s / 1000000 ))
  printf '%-8s %-12s %-10s %-12s %-10s\n' "$s" "$mp" "$wall" "$(( rss_kb / 1024 ))" \
    "$(awk -v m="$mp" -v t="$wall" 'BEGIN{printf "%.1f", m/t}')"
  rm -f "$out"
done
