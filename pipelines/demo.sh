#!/usr/bin/env bash
# Main job on the bundled sample slide: installs what is missing, builds, runs.
# With a shipped nuclei model (models/weights/nuclei.safetensors): nuclei segmentation,
# written as a mask, an overlay picture and QuPath GeoJSON. Always: tissue
# detection and the slide reconstructed from its patches.
# Usage: pipelines/demo.sh [slide] [output-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SLIDE=${1:-$ROOT/data/cmu-1-small-region.svs}
OUT=${2:-$ROOT/out/demo}
MODEL=${WSISEG_DEMO_MODEL:-$ROOT/models/weights/nuclei.safetensors}

pipelines/install-deps.sh
[ -f build/build.ninja ] || meson setup build -Dtests=false >/dev/null
meson compile -C build >/dev/null
export GST_PLUGIN_PATH=$ROOT/build/gst
mkdir -p "$OUT"

echo "Tissue detection and reconstruction of $SLIDE ..."
gst-launch-1.0 -q slidesrc location="$SLIDE" tile-width=1024 tile-height=1024 ! \
  patchify patch-size=256 overlap=0 ! tee name=t \
  t. ! queue ! stitchsink location="$OUT/reconstruction.png" \
  t. ! queue ! tissuemask ! stitchsink location="$OUT/tissue-mask.png" \
      overlay-location="$OUT/tissue-overlay.png" class-names=background,tissue

if [ -f "$MODEL" ]; then
  echo "Nuclei segmentation with $MODEL (at $(build/models/wsimodel-info "$MODEL" --get mpp) um/px) ..."
  # read at the model's pixel size, glass patches dropped, one GeoJSON
  # detection per nucleus (interior + boundary ring)
  pipelines/segment.sh "$SLIDE" "$MODEL" "$OUT"
else
  echo "No shipped nuclei model yet ($MODEL): segmentation skipped."
fi

echo "Outputs in $OUT:"
ls -l "$OUT"
