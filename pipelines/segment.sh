#!/usr/bin/env bash
# Segments a slide with a model file at the model's own resolution:
# mask PNG, overlay picture and QuPath GeoJSON (one polygon per object when the
# model has a "boundary" class). Needs a build (pipelines/demo.sh makes one).
# Usage: pipelines/segment.sh SLIDE MODEL [OUTPUT-DIR]
#   e.g. pipelines/segment.sh data/cmu-1-small-region.svs models/weights/glands.safetensors out/glands
# RGB patches go straight to segment-fcn (or segment-maskrcnn for an
# arch=maskrcnn file: instance label PNG, one GeoJSON detection per object),
# which applies the preprocessing the model file declares.
# Env: MIN_AREA (smallest exported object, model pixels; default 8), BATCH (8),
# WSISEG_BUILD_ROOT (build tree; default build/).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,12p' "$0"; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SLIDE=$1 MODEL=$2 OUT=${3:-out/$(basename "${MODEL%.safetensors}")}
BUILD=${WSISEG_BUILD_ROOT:-$ROOT/build}
INFO=$BUILD/models/wsimodel-info
export GST_PLUGIN_PATH=$BUILD/gst
[ -x "$INFO" ] || { echo "build first: meson setup build && meson compile -C build"; exit 1; }

MPP=$($INFO "$MODEL" --get mpp)
PATCH=$($INFO "$MODEL" --get patch_size)
NAMES=$($INFO "$MODEL" --get class_names)
COLORS=$($INFO "$MODEL" --get class_colors)
[ "$PATCH" -gt 0 ] || PATCH=256
BOUNDARY=$(tr ',' '\n' <<< "$NAMES" | grep -nx boundary | cut -d: -f1 || true)
GEO=()
[ -n "$BOUNDARY" ] && GEO=(geojson-boundary-class=$((BOUNDARY - 1)))
READ=(target-mpp="$MPP")
[ "$MPP" = 0 ] && READ=()   # a model without a declared resolution: native pixels

mkdir -p "$OUT"
NAME=$(basename "${MODEL%.safetensors}")
if [ "$($INFO "$MODEL" --get arch)" = maskrcnn ]; then
  # instances: patches overlap so that objects cut by a seam are merged whole
  gst-launch-1.0 -q slidesrc location="$SLIDE" "${READ[@]}" tile-width=1024 tile-height=1024 ! \
    patchify patch-size="$PATCH" overlap=64 min-tissue=0.02 ! \
    segment-maskrcnn model="$MODEL" batch-size="${BATCH:-8}" ! \
    stitchsink location="$OUT/$NAME-instances.png" overlay-location="$OUT/$NAME-overlay.png" \
      geojson-location="$OUT/$NAME.geojson" geojson-object-type=detection geojson-min-area="${MIN_AREA:-8}"
else
  gst-launch-1.0 -q slidesrc location="$SLIDE" "${READ[@]}" tile-width=1024 tile-height=1024 ! \
    patchify patch-size="$PATCH" overlap=32 min-tissue=0.02 ! \
    segment-fcn model="$MODEL" output=probabilities batch-size="${BATCH:-8}" ! \
    stitchsink blend=gaussian location="$OUT/$NAME-mask.png" overlay-location="$OUT/$NAME-overlay.png" \
      class-names="$NAMES" class-colors="$COLORS" geojson-location="$OUT/$NAME.geojson" \
      geojson-object-type=detection geojson-min-area="${MIN_AREA:-8}" "${GEO[@]}"
fi
echo "$(grep -o '"objectType"' "$OUT/$NAME.geojson" | wc -l) objects; outputs in $OUT"
