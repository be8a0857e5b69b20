"""A small real dataset for the data and training tests, built without the face stage.

Frames are decoded from a fixture clip with OpenCV, every frame gets the same hand-picked face box,
and the features are real log-mel rows of the clip's audio: the folder looks exactly like what
preprocessing writes (full_body_img/, crop_boxes.npy, aud.wav, aud_mel.npy, the state section).
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import numpy as np

from conftest import VIDEOS

CLIP = VIDEOS / "clip2.mp4"
FACE_BOX = (250, 290, 570, 610)  # x1 y1 x2 y2 around the face in clip2's 844x844 frames


def write_dataset(root: Path, name: str, n_frames: int = 48, asr: str = "mel", clip: Path = CLIP) -> Path:
    """Write dataset root/name from the first n_frames of `clip`; returns the person's folder."""
    import cv2

    from synctalk import media
    from synctalk.audio.features import compute_features
    from synctalk.fileio import save_npy_atomic
    from synctalk.layout import dataset_layout
    from synctalk.state import TrainingState

    layout = dataset_layout(root, name)
    layout.frames_dir.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(clip))
    count = 0
    while count < n_frames:
        ok, frame = cap.read()
        if not ok:
            break
        cv2.imwrite(str(layout.frame_path(count)), frame)
        count += 1
    cap.release()
    assert count == n_frames, f"{clip} has only {count} frames"
    save_npy_atomic(layout.crop_boxes, np.tile(np.array(FACE_BOX, np.int32), (n_frames, 1)))
    media.extract_audio_wav(clip, layout.audio_wav)
    audio = media.load_audio(layout.audio_wav)
    feats = compute_features(asr, audio, n_frames, progress=False)
    save_npy_atomic(layout.features(asr), feats)
    TrainingState(layout.state_file).update(
        "preprocessing", completed=True, frame_count=n_frames, asr_models=[asr], landmarker="dlib", fps=25,
        feature_files={asr: layout.features(asr).name},
    )
    return layout.root


def copy_dataset(src: Path, root: Path, name: str) -> Path:
    """Copy a person's folder under another name (features, boxes, frames, state; no crop cache)."""
    from synctalk.layout import dataset_layout

    layout = dataset_layout(root, name)
    shutil.copytree(src, layout.root, ignore=shutil.ignore_patterns("crops_*.npy", "*.tmp"))
    return layout.root



# the training tests' common flags: tiny networks, a 16-frame person, the CPU
N_FRAMES = 16
FAST = ["--width", "tiny", "--batchsize", "4", "--val_fraction", "0.125", "--no_progress", "--device", "cpu",
        "--syncnet_pairs_per_epoch", "0"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a gloo rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cpu_rank(rank: int, world: int, port: int):
    """Join a world of `world` gloo processes on 127.0.0.1:`port` as `rank`, one thread each; (dist, device)."""
    import torch

    from synctalk.training import Distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist = Distributed.from_env()
    return dist, dist.start("cpu")
