#!/usr/bin/env bash
# One person, start to finish: preprocess dataset/NAME/NAME.mp4 → train the SyncNet → train the UNet-328.
# Every step records what it finished in dataset/NAME/.training_state.json and skips finished work,
# so after any interruption the same command picks up where it stopped.
#
#   bash training_328.sh NAME GPU_ID        (GPU_ID: a CUDA device number, a comma list such as 0,1, or "cpu")
#
# With a list, both training steps run data-parallel on those GPUs (torchrun, one process per GPU);
# SYNCTALK_BATCHSIZE / SYNCTALK_SYNCNET_BATCHSIZE are then per GPU.
set -euo pipefail

usage() {
    cat >&2 <<'EOF'
usage: bash training_328.sh NAME GPU_ID
  NAME     person name; the video must be dataset/NAME/NAME.mp4
  GPU_ID   CUDA device number (0, 1, ...), a comma list of them (0,1: train on both), or "cpu"
environment (defaults in brackets):
  SYNCTALK_ASR [ave]                audio features: ave, hubert, wenet, mel
  SYNCTALK_LANDMARKER [pfld]        pfld or dlib
  SYNCTALK_EPOCHS [100]             UNet epochs
  SYNCTALK_SYNCNET_EPOCHS [100]     SyncNet epochs
  SYNCTALK_BATCHSIZE [8]            UNet batch size (per GPU)
  SYNCTALK_SYNCNET_BATCHSIZE [16]   SyncNet batch size (per GPU)
  SYNCTALK_SYNCNET_CHECKPOINT       reuse this SyncNet checkpoint instead of training one
  SYNCTALK_PERCEPTUAL [vgg19]       vgg19 or none
  SYNCTALK_WIDTH [full]             full, mobile or tiny
  SYNCTALK_EXTRA_TRAIN_ARGS         more flags for scripts/train_328.py (both steps)
  SYNCTALK_DATASET_DIR [dataset]    SYNCTALK_CHECKPOINT_DIR [checkpoint]    SYNCTALK_MODELS_DIR
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
ASR="${SYNCTALK_ASR:-ave}"
LANDMARKER="${SYNCTALK_LANDMARKER:-pfld}"
EPOCHS="${SYNCTALK_EPOCHS:-100}"
SYNCNET_EPOCHS="${SYNCTALK_SYNCNET_EPOCHS:-100}"
BATCHSIZE="${SYNCTALK_BATCHSIZE:-8}"
SYNCNET_BATCHSIZE="${SYNCTALK_SYNCNET_BATCHSIZE:-16}"
PERCEPTUAL="${SYNCTALK_PERCEPTUAL:-vgg19}"
WIDTH="${SYNCTALK_WIDTH:-full}"
read -r -a EXTRA <<< "${SYNCTALK_EXTRA_TRAIN_ARGS:-}"
MODELS=()
if [ -n "${SYNCTALK_MODELS_DIR:-}" ]; then
    MODELS=(--models_dir "$SYNCTALK_MODELS_DIR")
fi

VIDEO="$DATASET_DIR/$NAME/$NAME.mp4"
if [ ! -f "$VIDEO" ]; then
    echo "error: video not found: $VIDEO (put the person's video there)" >&2
    usage
    exit 2
fi

COMMON=(--name "$NAME" --dataset_dir "$DATASET_DIR" --checkpoint_dir "$CHECKPOINT_DIR" --asr "$ASR"
        --width "$WIDTH" --device "$DEVICE")

echo "== [1/3] preprocess $VIDEO (asr $ASR, landmarker $LANDMARKER, device $DEVICE)"
"$PY" "$ROOT/scripts/preprocess_data.py" --video_path "$VIDEO" --name "$NAME" --dataset_dir "$DATASET_DIR" \
    --asr_model "$ASR" --landmarker "$LANDMARKER" --device "$DEVICE" ${MODELS[@]+"${MODELS[@]}"}

echo "== [2/3] SyncNet of $NAME${GPUS[@]+ on $NGPUS GPUs}"
if [ -n "${SYNCTALK_SYNCNET_CHECKPOINT:-}" ]; then
    "$PY" "$ROOT/scripts/train_328.py" "${COMMON[@]}" --train_syncnet \
        --syncnet_checkpoint_path "$SYNCTALK_SYNCNET_CHECKPOINT" ${EXTRA[@]+"${EXTRA[@]}"}
else
    "$PY" "$ROOT/scripts/train_328.py" "${COMMON[@]}" --train_syncnet --epochs "$SYNCNET_EPOCHS" \
        --batchsize "$SYNCNET_BATCHSIZE" ${GPUS[@]+"${GPUS[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
fi

echo "== [3/3] UNet-328 of $NAME${GPUS[@]+ on $NGPUS GPUs}"
"$PY" "$ROOT/scripts/train_328.py" "${COMMON[@]}" --epochs "$EPOCHS" \
    --batchsize "$BATCHSIZE" --perceptual "$PERCEPTUAL" ${GPUS[@]+"${GPUS[@]}"} ${MODELS[@]+"${MODELS[@]}"} \
    ${EXTRA[@]+"${EXTRA[@]}"}

echo "== done: $NAME → $CHECKPOINT_DIR/$NAME (render with: python scripts/inference_328.py --name $NAME --audio_path SPEECH.wav)"
