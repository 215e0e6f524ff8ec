#!/usr/bin/env bash
# Trains a shipped model with segment-fcn (or segment-maskrcnn) mode=train,
# resuming from its checkpoint across sessions, with a validation run over the
# held-back images after every epoch (segment-fcn-validation /
# segment-maskrcnn-validation messages in the log).
# Usage: pipelines/train/train.sh nuclei|nuclei30|glands|nuclei-maskrcnn [max-steps]
# (nuclei30: all 30 MoNuSeg instance maps, split by organ; prepare_data.py;
# nuclei-maskrcnn: Mask R-CNN on the same nuclei30 split, instance annotations)
# Needs ../shared/data (prepared into out/train-NAME by prepare_data.py).
# A model file at models/weights/training-runs/NAME/init-from.safetensors seeds a fresh
# run's weights (transfer learning: init-from). WSISEG_TRAIN_LR overrides the
# learning rate (e.g. a lower one for the last part of a resumed training).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
NAME=$1
MAX_STEPS=${2:-6000}
DATA_NAME=$NAME
[ "$NAME" = nuclei-maskrcnn ] && DATA_NAME=nuclei30
DATA=$ROOT/out/train-$DATA_NAME
WORK=${WSISEG_TRAIN_DIR:-$ROOT/models/weights/training-runs/$NAME}
PLUGIN=${WSISEG_PLUGIN_DIR:-$ROOT/build/gst}
export GST_PLUGIN_PATH=$PLUGIN OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$WORK"

[ -d "$DATA/train" ] || /usr/bin/python3 pipelines/train/prepare_data.py "$DATA_NAME" "$DATA"

ELEMENT=segment-fcn; BATCH=8; CKPT_EVERY=50

case $NAME in
  nuclei|nuclei30)  # 0.5 um/px, U-Net, background / nucleus / nucleus boundary
    ARCH=(--arch unet --depth 4 --base-width 16 --classes background,nucleus,boundary
          --colors 000000,00c800,ffd700 --mpp 0.5 --patch-size 128)
    PATCH=128; OVERLAP=48; MASKS="instance-mode=boundary"
    TRAIN="loss=ce+dice class-weights=1,1,3 optimizer=adam learning-rate=${WSISEG_TRAIN_LR:-0.001}" ;;
  glands)  # GlaS at 10x (1.24 um/px), U-Net, background / gland / gland boundary
    ARCH=(--arch unet --depth 4 --base-width 16 --classes background,gland,boundary
          --colors 000000,00a0ff,ff8000 --mpp 1.24 --patch-size 128)
    PATCH=128; OVERLAP=32; MASKS="instance-mode=boundary boundary-connectivity=8"
    TRAIN="loss=ce+dice class-weights=1,1,3 optimizer=adam learning-rate=${WSISEG_TRAIN_LR:-0.001}" ;;
  nuclei-maskrcnn)  # 0.5 um/px, Mask R-CNN (ResNet-18 FPN), background / nucleus instances;
    # nuclei are ~8-24 px across: anchors 8..128 on the FPN levels (stride 4..64);
    # up to 300 detections in a 256 x 256 patch of dense nuclei
    ARCH=(--arch maskrcnn --backbone resnet18 --classes background,nucleus --colors 000000,00c800
          --mpp 0.5 --patch-size 256 --anchor-sizes 8,16,32,64,128 --max-detections 300
          --score-threshold 0.5 --init calibrated
          --meta fpn_channels=128 --meta representation=256 --meta mask_width=64)
    # slim heads: with hundreds of nuclei per patch torchvision's 256-wide mask
    # head (~1 GFLOP per detection) would cost ~20x the backbone
    ELEMENT=segment-maskrcnn; BATCH=2; CKPT_EVERY=25
    PATCH=256; OVERLAP=64; MASKS="instance-mode=instances"
    TRAIN="max-instances=1000 optimizer=adam learning-rate=${WSISEG_TRAIN_LR:-0.0002} warmup-steps=200" ;;
  *) echo "usage: $0 nuclei|nuclei30|glands|nuclei-maskrcnn [max-steps]"; exit 2 ;;
esac

CKPT=$WORK/checkpoint.safetensors
if [ ! -f "$CKPT" ]; then
  /usr/bin/python3 models/reference/export_model.py "$WORK/init.safetensors" "${ARCH[@]}" \
    --seed 1 --preprocess rescale01 --description "gst-wsiseg $NAME model"
  MODEL="model=$WORK/init.safetensors"
  [ -f "$WORK/init-from.safetensors" ] && MODEL="$MODEL init-from=$WORK/init-from.safetensors"
else
  MODEL="model=$CKPT resume=true"
fi

step_of() {  # step recorded in a checkpoint's metadata
  /usr/bin/python3 -c "import sys,json,struct
f=open(sys.argv[1],'rb'); n=struct.unpack('<Q',f.read(8))[0]; h=json.loads(f.read(n))
print(h.get('__metadata__',{}).get('train_step','0'))" "$1" 2>/dev/null || echo 0
}

while :; do
  step=0; [ -f "$CKPT" ] && step=$(step_of "$CKPT")
  echo "$(date -u +%FT%TZ) $NAME: step $step of $MAX_STEPS" | tee -a "$WORK/train.log"
  [ "$step" -ge "$MAX_STEPS" ] && break
  gst-launch-1.0 -m slidesrc location="$DATA/train/images/*.png" shuffle=true loop=5 seed=$((step + 1)) \
      tile-width=512 tile-height=512 ! \
    patchify patch-size=$PATCH overlap=$OVERLAP augment-flip=true augment-rotate=true seed=$((step + 7)) ! \
    tee name=t \
    t. ! queue ! colornorm mode=rescale01 augment=true seed=$((step + 3)) ! seg.sink \
    t. ! queue ! labelpatch masks="$DATA/train/labels/{name}.png" $MASKS ! seg.annotation \
    $ELEMENT name=seg mode=train $MODEL checkpoint="$CKPT" checkpoint-interval=$CKPT_EVERY \
      batch-size=$BATCH $TRAIN ! fakesink \
    slidesrc location="$DATA/val/images/*.png" loop=0 tile-width=512 tile-height=512 ! \
    patchify patch-size=$PATCH overlap=$OVERLAP ! tee name=v \
    v. ! queue ! colornorm mode=rescale01 ! seg.validation \
    v. ! queue ! labelpatch masks="$DATA/val/labels/{name}.png" $MASKS ! seg.validation_annotation \
    | grep --line-buffered -E "$ELEMENT-(epoch|checkpoint|validation|init-from)|ERROR|WARNING|error" \
    | while IFS= read -r line; do echo "$(date -u +%T) $line"; done >> "$WORK/train.log"
  MODEL="model=$CKPT resume=true"
done
