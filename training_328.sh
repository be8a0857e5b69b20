#!/usr/bin/env bash
# One person, start to finish: preprocess dataset/NAME/NAME.mp4 → train the SyncNet → train the UNet-328.
# Every step records what it finished in dataset/NAME/.training_state.json and skips finished work,
# so after any interruption the same command picks up where it stopped.
#
#   bash training_328.sh NAME GPU_ID        (GPU_ID: a CUDA device number, a comma list such as 0,1, or "cpu")
#
# With a list, both training steps run data-parallel on those GPUs (torchrun, one process per GPU);
# SYNCTALK_BATCHSIZE / SYNCTALK_SYNCNET_BATCHSIZE are then per GPU.
# The defaults need no download (mel audio features, dlib landmarks, dlib's face detector when SCRFD
# is not in the models folder). Epochs, batch sizes and the perceptual loss are passed only when set,
# so the training commands' own device-dependent defaults apply otherwise.
set -euo pipefail

usage() {
    cat >&2 <<'EOF'
usage: bash training_328.sh NAME GPU_ID
  NAME     person name; the video must be dataset/NAME/NAME.mp4
  GPU_ID   CUDA device number (0, 1, ...), a comma list of them (0,1: train on both), or "cpu"
environment (defaults in brackets):
  SYNCTALK_ASR [mel]                audio features: mel (no download), ave, hubert, wenet
  SYNCTALK_LANDMARKER [dlib]        dlib (no download) or pfld
  SYNCTALK_DETECTOR [auto]          face detector: auto (scrfd when its file is found, else dlib), scrfd, dlib
  SYNCTALK_QUICK                    1: the training commands' --quick preset (a short first try)
  SYNCTALK_EPOCHS                   UNet epochs (default: the training command's)
  SYNCTALK_SYNCNET_EPOCHS           SyncNet epochs (default: the training command's)
  SYNCTALK_BATCHSIZE                UNet batch size per GPU (default: chosen for the device)
  SYNCTALK_SYNCNET_BATCHSIZE        SyncNet batch size per GPU (default: chosen for the device)
  SYNCTALK_SYNCNET_CHECKPOINT       reuse this SyncNet checkpoint instead of training one
  SYNCTALK_PERCEPTUAL               vgg19 or none (default: the training command's)
  SYNCTALK_WIDTH                    full, mobile or tiny (default: the training command's, full; --quick: tiny)
  SYNCTALK_EXTRA_TRAIN_ARGS         more flags for scripts/train_328.py (both steps)
  SYNCTALK_DATASET_DIR [dataset]    SYNCTALK_CHECKPOINT_DIR [checkpoint]
  SYNCTALK_MODELS                   models folder searched first (default ~/.cache/synctalk/models)
  PYTHON [python]
EOF
}

if [ "$#" -ne 2 ]; then
    echo "error: expected NAME and GPU_ID" >&2
    usage
    exit 2
fi
NAME=$1
GPU_ID=$2
if ! [[ "$NAME" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || [[ "$NAME" == *..* ]]; then
    echo "error: invalid name '$NAME': use letters, digits, '_', '-' or '.', with no '/' or '..'" >&2
    usage
    exit 2
fi
NGPUS=1
if [ "$GPU_ID" = "cpu" ]; then
    export CUDA_VISIBLE_DEVICES=""
    DEVICE=cpu
elif [[ "$GPU_ID" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
    export CUDA_VISIBLE_DEVICES="$GPU_ID"
    DEVICE=cuda
    IFS=, read -r -a GPU_LIST <<< "$GPU_ID"
    NGPUS=${#GPU_LIST[@]}
else
    echo "error: GPU_ID must be a device number, a comma list of them (0,1) or 'cpu', got '$GPU_ID'" >&2
    usage
    exit 2
fi
# several GPUs: the training steps start one process per GPU through torchrun (never NVLink multicast)
GPUS=()
if [ "$NGPUS" -gt 1 ]; then
    GPUS=(--gpus "$NGPUS")
    export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}"
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python}"
DATASET_DIR="${SYNCTALK_DATASET_DIR:-dataset}"
CHECKPOINT_DIR="${SYNCTALK_CHECKPOINT_DIR:-checkpoint}"
ASR="${SYNCTALK_ASR:-mel}"
LANDMARKER="${SYNCTALK_LANDMARKER:-dlib}"
DETECTOR="${SYNCTALK_DETECTOR:-auto}"
read -r -a EXTRA <<< "${SYNCTALK_EXTRA_TRAIN_ARGS:-}"
if [ -n "${SYNCTALK_MODELS_DIR:-}" ]; then
    echo "error: SYNCTALK_MODELS_DIR is no longer read; set SYNCTALK_MODELS=$SYNCTALK_MODELS_DIR instead" >&2
    exit 2
fi
# the Python side reads $SYNCTALK_MODELS itself; nothing to pass
# options passed only when set: unset, the training commands choose for the device
SYNCNET_OPTS=()
UNET_OPTS=()
if [ "${SYNCTALK_QUICK:-}" = "1" ]; then
    SYNCNET_OPTS+=(--quick)
    UNET_OPTS+=(--quick)
fi
if [ -n "${SYNCTALK_SYNCNET_EPOCHS:-}" ]; then SYNCNET_OPTS+=(--epochs "$SYNCTALK_SYNCNET_EPOCHS"); fi
if [ -n "${SYNCTALK_SYNCNET_BATCHSIZE:-}" ]; then SYNCNET_OPTS+=(--batchsize "$SYNCTALK_SYNCNET_BATCHSIZE"); fi
if [ -n "${SYNCTALK_EPOCHS:-}" ]; then UNET_OPTS+=(--epochs "$SYNCTALK_EPOCHS"); fi
if [ -n "${SYNCTALK_BATCHSIZE:-}" ]; then UNET_OPTS+=(--batchsize "$SYNCTALK_BATCHSIZE"); fi
if [ -n "${SYNCTALK_PERCEPTUAL:-}" ]; then UNET_OPTS+=(--perceptual "$SYNCTALK_PERCEPTUAL"); fi
# the width too: a typed --width would override the --quick preset's tiny networks
WIDTH_OPTS=()
if [ -n "${SYNCTALK_WIDTH:-}" ]; then WIDTH_OPTS+=(--width "$SYNCTALK_WIDTH"); fi

VIDEO="$DATASET_DIR/$NAME/$NAME.mp4"
if [ ! -f "$VIDEO" ]; then
    echo "error: video not found: $VIDEO (put the person's video there)" >&2
    usage
    exit 2
fi

COMMON=(--name "$NAME" --dataset_dir "$DATASET_DIR" --checkpoint_dir "$CHECKPOINT_DIR" --asr "$ASR"
        ${WIDTH_OPTS[@]+"${WIDTH_OPTS[@]}"} --device "$DEVICE")

echo "== [1/3] preprocess $VIDEO (asr $ASR, landmarker $LANDMARKER, detector $DETECTOR, device $DEVICE)"
"$PY" "$ROOT/scripts/preprocess_data.py" --video_path "$VIDEO" --name "$NAME" --dataset_dir "$DATASET_DIR" \
    --asr_model "$ASR" --landmarker "$LANDMARKER" --detector "$DETECTOR" --device "$DEVICE"

echo "== [2/3] SyncNet of $NAME${GPUS[@]+ on $NGPUS GPUs}"
if [ -n "${SYNCTALK_SYNCNET_CHECKPOINT:-}" ]; then
    "$PY" "$ROOT/scripts/train_328.py" "${COMMON[@]}" --train_syncnet \
        --syncnet_checkpoint_path "$SYNCTALK_SYNCNET_CHECKPOINT" ${EXTRA[@]+"${EXTRA[@]}"}
else
    "$PY" "$ROOT/scripts/train_328.py" "${COMMON[@]}" --train_syncnet ${SYNCNET_OPTS[@]+"${SYNCNET_OPTS[@]}"} \
        ${GPUS[@]+"${GPUS[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
fi

echo "== [3/3] UNet-328 of $NAME${GPUS[@]+ on $NGPUS GPUs}"
"$PY" "$ROOT/scripts/train_328.py" "${COMMON[@]}" ${UNET_OPTS[@]+"${UNET_OPTS[@]}"} ${GPUS[@]+"${GPUS[@]}"} \
    ${EXTRA[@]+"${EXTRA[@]}"}

echo "== done: $NAME → $CHECKPOINT_DIR/$NAME (render with: python scripts/inference_328.py --name $NAME --audio_path SPEECH.wav)"
