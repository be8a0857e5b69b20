"""What every benchmark stage shares: sizes, the prepared person, timing and memory helpers."""

from __future__ import annotations

import argparse
import math
import re
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synctalk.constants import SAMPLE_RATE

REPO = Path(__file__).resolve().parents[1]
STAGES = ("unet", "syncnet", "render", "landmarks", "forward", "gpus")
DEFAULT_STAGES = ("unet", "syncnet", "render", "landmarks", "forward")  # "gpus" runs when named
DEFAULT_VIDEO = REPO.parent / "shared" / "fixtures" / "video" / "sun.mp4"
DEFAULT_AUDIO = REPO.parent / "shared" / "fixtures" / "audio_talk_hb.wav"
DEFAULT_MODELS = REPO.parent / "shared" / "models"
# the main rate of each stage's variants: (metric key, unit)
PRIMARY = {"unet": ("samples_per_s", "samples/s"), "syncnet": ("samples_per_s", "samples/s"),
           "render": ("fps", "frames/s"), "landmarks": ("fps", "frames/s"), "forward": ("fps", "frames/s"),
           "gpus": ("samples_per_s", "samples/s")}


@dataclass(frozen=True)
class Preset:
    """Sizes of one benchmark size (small: a quick check that every path runs; full: real sizes)."""

    width: str
    unet_batch_plain: int
    unet_batch_fast: int
    syncnet_batch_plain: int
    syncnet_batch_fast: int
    steps: int  # timed steps per repeat
    repeats: int
    quality_samples: int  # training samples each variant sees before the held-out comparison
    render_seconds: float
    landmark_frames: int
    forward_batches: tuple[int, int]
    forward_iters: int
    video_seconds: float  # 0: the whole video


PRESETS = {
    "small": Preset(width="tiny", unet_batch_plain=2, unet_batch_fast=4, syncnet_batch_plain=4, syncnet_batch_fast=8,
                    steps=1, repeats=1, quality_samples=4, render_seconds=1.0, landmark_frames=4,
                    forward_batches=(1, 4), forward_iters=1, video_seconds=2.0),
    "full": Preset(width="full", unet_batch_plain=8, unet_batch_fast=64, syncnet_batch_plain=16,
                   syncnet_batch_fast=128, steps=30, repeats=3, quality_samples=8192, render_seconds=60.0,
                   landmark_frames=200, forward_batches=(1, 32), forward_iters=20, video_seconds=0.0),
}


class Skip(Exception):
    """A stage cannot run on this machine (a missing binary, package or file); the message says why."""


@dataclass
class Context:
    """What every stage needs: options, the device, the prepared person and its data."""

    args: argparse.Namespace
    preset: Preset
    device: Any
    layout: Any
    asr: str
    workdir: Path
    models_dir: Path | None
    crops: Any = None
    features: Any = None
    train_idx: Any = None
    val_idx: Any = None
    unet_state: dict | None = None  # short-trained UNet weights (fast variant), reused by the render stage
    unet_state_note: str = ""
    syncnet_state: dict | None = None  # SyncNet weights after the SyncNet stage, the UNet's frozen critic
    syncnet_state_note: str = ""


# ---------------------------------------------------------------- small helpers


def say(ctx_or_args: Any, msg: str) -> None:
    """print() unless --quiet."""
    args = getattr(ctx_or_args, "args", ctx_or_args)
    if not getattr(args, "quiet", False):
        print(msg, flush=True)


def sync(device: Any) -> None:
    """Wait for the GPU's queued work (timings)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: Any) -> None:
    """Start a new peak-memory reading."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: Any) -> float | None:
    """Peak GPU memory since reset_peak, MiB (None on the CPU)."""
    import torch

    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def free(device: Any) -> None:
    """Collect garbage and return cached GPU memory."""
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def set_backends(device: Any, fast: bool) -> None:
    """PyTorch's defaults for the plain variants; what training sets (TF32) for the fast ones."""
    import torch

    if device.type != "cuda":
        return
    if fast:
        from synctalk.training.runtime import configure_backends

        configure_backends(device)
        return
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default for convolutions


def median(values: Sequence[float]) -> float:
    """The median (nan for none)."""
    return float(statistics.median(values)) if values else float("nan")


def ffmpeg_path() -> str | None:
    """The ffmpeg binary synctalk.media uses, or None when it is not there."""
    try:
        from synctalk import media

        exe = media.ffmpeg_exe()
    except Exception:  # imageio-ffmpeg missing, or its binary not found: both mean "no ffmpeg"
        return None
    return exe if exe and Path(exe).exists() else None


def person_name(stem: str) -> str:
    """A valid person name from a file stem."""
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).strip("._-") or "person"
    return name if name[0].isalnum() else f"p{name}"


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """16-bit PCM mono WAV (standard library only), written atomically."""
    import wave

    from synctalk.fileio import atomic_path

    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".wav") as tmp:
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sample_rate)
            w.writeframes(pcm.tobytes())
    return path


def loop_to(audio: np.ndarray, seconds: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The audio repeated (or cut) to exactly `seconds`."""
    n = max(1, int(round(seconds * sample_rate)))
    reps = int(math.ceil(n / max(audio.size, 1)))
    return np.tile(audio, reps)[:n].astype(np.float32)


# ---------------------------------------------------------------- the person


def trim_video(src: Path, dst: Path, seconds: float) -> Path:
    """The first `seconds` of a video (re-encoded, so the cut is frame-exact), written atomically."""
    from synctalk.errors import SyncTalkError
    from synctalk.fileio import atomic_path

    exe = ffmpeg_path()
    if exe is None:
        raise SyncTalkError("ffmpeg (imageio-ffmpeg) is needed to cut the video: pip install imageio-ffmpeg, "
                            "or pass --dataset with an already preprocessed person")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst, suffix=".mp4") as tmp:
        proc = subprocess.run([exe, "-y", "-loglevel", "error", "-i", str(src), "-t", f"{seconds:.3f}",
                               "-c:v", "libx264", "-preset", "veryfast", "-crf", "16", "-pix_fmt", "yuv420p",
                               "-c:a", "aac", "-f", "mp4", str(tmp)], capture_output=True, text=True, errors="replace")
        if proc.returncode != 0:
            raise SyncTalkError(f"could not cut {src} to {seconds:g} s: {proc.stderr.strip()[-300:]}")
    return dst


def prepare_person(args: argparse.Namespace, preset: Preset, workdir: Path, models_dir: Path | None) -> tuple[Any, dict]:
    """The person to benchmark: --dataset as given, else the video preprocessed into workdir/dataset."""
    from synctalk.errors import SyncTalkError
    from synctalk.layout import dataset_layout

    if args.dataset:
        root = Path(args.dataset).expanduser()
        if not root.is_dir():
            raise SyncTalkError(f"--dataset {root} is not a folder (give the person's folder, dataset/<name>)")
        layout = dataset_layout(root.parent, root.name)
        if not layout.crop_boxes.exists() and not layout.crop_cache.exists():
            raise SyncTalkError(f"{root} has neither crop_boxes.npy nor a crop cache: preprocess it first")
        if not layout.features(args.asr).exists():
            if not layout.audio_wav.exists() or ffmpeg_path() is None:
                raise SyncTalkError(f"{root} has no {layout.features(args.asr).name}: preprocess it with --asr_model "
                                    f"{args.asr}")
            from synctalk import media
            from synctalk.audio.features import compute_features
            from synctalk.fileio import save_npy_atomic

            n = len(np.load(layout.crop_boxes, mmap_mode="r"))
            feats = compute_features(args.asr, media.load_audio(layout.audio_wav), n, models_dir=models_dir,
                                     progress=args.progress)
            save_npy_atomic(layout.features(args.asr), feats)
        return layout, {"source": str(root), "preprocessed_here": False}

    from synctalk.preprocess import PreprocessOptions, preprocess_video

    video = Path(args.video).expanduser()
    if not video.is_file():
        raise SyncTalkError(f"video not found: {video} (pass --video PATH, or --dataset DIR)")
    name = person_name(video.stem)
    seconds = preset.video_seconds if args.video_seconds is None else args.video_seconds
    src = video
    if seconds and seconds > 0:
        name = person_name(f"{name}_first{seconds:g}s")
        src = workdir / "input" / f"{name}.mp4"
        if not src.exists():
            trim_video(video, src, seconds)
    opts = PreprocessOptions(video_path=src, name=name, dataset_dir=workdir / "dataset", asr_model=args.asr,
                             landmarker=args.landmarker, models_dir=models_dir, device=args.device,
                             progress=args.progress)
    t0 = time.perf_counter()
    result = preprocess_video(opts)
    dt = time.perf_counter() - t0
    info = {"source": str(video), "cut_to_seconds": seconds or None, "preprocessed_here": True,
            "landmarker": args.landmarker, "preprocess_seconds": round(dt, 2),
            "preprocess_did": list(result.done_now), "preprocess_skipped": list(result.skipped)}
    return result.layout, info


def load_data(ctx: Context) -> None:
    """The crop cache (memmap), audio features and the held-out split of the person."""
    from synctalk.data import load_crop_cache, load_features, split_indices

    ctx.crops = load_crop_cache(ctx.layout, progress=ctx.args.progress)
    ctx.features = load_features(ctx.layout, ctx.asr)
    n = min(len(ctx.crops), len(ctx.features))
    ctx.train_idx, ctx.val_idx = split_indices(n, ctx.args.val_fraction)


