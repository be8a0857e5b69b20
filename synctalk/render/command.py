"""`synctalk infer` (and scripts/inference_328.py): new speech → a lip-synced video of the person.

The avatar's own frames are walked forward and back (ping-pong) from --start_frame so long speech
never jumps; each frame's 328 crop is both the reference and, masked, the image the UNet redraws the
mouth into; the generated inner 320 goes back into the crop, which is pasted into its box with a
feathered border. Pauses in the speech show the person's resting mouth (--no_silence turns it off).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .pipeline import render


def add_amp_flags(p: argparse.ArgumentParser) -> None:
    """--amp (and its older spelling --bf16) for the commands that run the UNet for frames: infer, serve."""
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "none"),
                   help="precision of the UNet (auto: bf16 autocast on a CUDA GPU, fp32 on the CPU)")
    p.add_argument("--bf16", dest="amp", action="store_const", const="bf16", help="the same as --amp bf16")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `synctalk infer` / scripts/inference_328.py."""
    from ..audio.registry import ASR_MODELS

    p.add_argument("--name", required=True, help="person name: dataset/<name>/, checkpoint/<name>/")
    p.add_argument("--audio_path", required=True, help="the speech to render (any format ffmpeg reads)")
    p.add_argument("--checkpoint", default=None,
                   help="UNet checkpoint (default: checkpoint/<name>/checkpoint_best.pth, else the latest)")
    p.add_argument("--output", default=None, help="output MP4 (default result/<name>_<audio>_<checkpoint>.mp4)")
    p.add_argument("--start_frame", type=int, default=0, help="avatar frame the video starts from")
    p.add_argument("--loop_back", action="store_true", help="end on the frame the video started from")
    p.add_argument("--batch_size", type=int, default=16, help="frames per network batch")
    p.add_argument("--dataset_dir", default="dataset", type=Path)
    p.add_argument("--checkpoint_dir", default="checkpoint", type=Path)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 …")
    p.add_argument("--models_dir", default=None, type=Path, help="where audio model weights are looked for first")
    p.add_argument("--asr", default=None, choices=ASR_MODELS,
                   help="audio model (default: the checkpoint's; a different one is an error)")
    add_amp_flags(p)
    p.add_argument("--no_silence", action="store_true",
                   help="generate pauses like speech (default: pauses of 0.3 s or more show the resting mouth)")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Entry point of `synctalk infer`."""
    render(args.name, args.audio_path, args.output, dataset_dir=args.dataset_dir,
           checkpoint_dir=args.checkpoint_dir, checkpoint=args.checkpoint, start_frame=args.start_frame,
           loop_back=args.loop_back, batch_size=args.batch_size, device=args.device, models_dir=args.models_dir,
           asr=args.asr, amp=args.amp, silence=not args.no_silence, progress=not args.no_progress)
    return 0
