"""One extraction path for every audio model: 16 kHz mono audio → one feature row per 25 fps video frame.

Row count always equals the frame count. The audio is first fitted to the frames: cut a little past the
last frame (each model keeps the right context its last rows read) or padded with silence to reach it,
so rows past the end of the speech are features of silence, never made-up values, and a longer audio
track changes no row.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..errors import SyncTalkError
from .registry import FPS, SAMPLE_RATE, get_spec

SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640


def _right_context(asr: str) -> int:
    from . import ave, hubert, wenet, whisper

    return {"mel": 512, "ave": ave.RIGHT_CONTEXT, "hubert": hubert.RIGHT_CONTEXT,
            "wenet": wenet.RIGHT_CONTEXT, "whisper": whisper.RIGHT_CONTEXT}[asr]


def fit_audio(audio: np.ndarray, num_frames: int, right_context: int = 0) -> np.ndarray:
    """Exactly num_frames·640 + right_context samples: the audio cut there or padded with silence."""
    target = num_frames * SAMPLES_PER_FRAME + right_context
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size >= target:
        return audio[:target]
    return np.concatenate([audio, np.zeros(target - audio.size, dtype=np.float32)])


def _mel_rows(audio: np.ndarray, num_frames: int, device) -> np.ndarray:
    from .melspec import MEL_100HZ, log_mel

    mel = log_mel(audio, MEL_100HZ, device=device)  # (4·N + k, 80), frame j centred on sample 160·j
    return mel[: 4 * num_frames].reshape(num_frames, 4, mel.shape[1])


def check_weights(asr: str, models_dir: "str | os.PathLike | None" = None, *,
                  whisper_model: "str | os.PathLike | None" = None) -> None:
    """Raise the clear missing-weights error now, before long work, if `asr` cannot run."""
    spec = get_spec(asr)
    if not spec.needs_weights:
        return
    if asr == "whisper":
        from .whisper import check_available

        check_available(whisper_model, models_dir)
        return
    if asr == "hubert":
        from ..weights import hub_offline
        from .hubert import _not_found, hubert_location

        if not hubert_location(models_dir)[1]:
            if hub_offline():
                raise _not_found(models_dir, "not in the cache and the Hugging Face hub is set offline")
        return
    from ..weights import resolve_model_file

    resolve_model_file(asr, models_dir)


def compute_features(asr: str, audio: np.ndarray, num_frames: int, *, models_dir: "str | os.PathLike | None" = None,
                     device: "str | object" = "cpu", progress: bool = True,
                     whisper_model: "str | os.PathLike | None" = None) -> np.ndarray:
    """(num_frames, *frame_shape) float32 features of `asr` for 16 kHz mono float32 `audio`;
    row i belongs to video frame i at 25 fps. `whisper_model` (an id or folder) picks the whisper
    model; the width of whisper rows is that model's."""
    from tqdm import tqdm

    spec = get_spec(asr)
    try:
        whole = not isinstance(num_frames, bool) and int(num_frames) == num_frames and num_frames >= 1
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole:
        raise SyncTalkError(f"num_frames must be a positive whole number, got {num_frames!r}")
    num_frames = int(num_frames)
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise SyncTalkError(f"audio must be mono (one dimension), got shape {audio.shape}")
    audio = audio.astype(np.float32, copy=False)
    if not np.isfinite(audio).all():
        raise SyncTalkError("audio holds NaN or infinite samples")
    device = _device(device)
    fitted = fit_audio(audio, num_frames, _right_context(asr))

    with tqdm(total=num_frames, desc=f"{asr} features", unit="frame", disable=not progress,
              mininterval=0.5) as bar:
        if asr == "mel":
            rows = _mel_rows(fitted, num_frames, device)
            bar.update(num_frames)
        elif asr == "ave":
            from ..weights import resolve_model_file
            from . import ave

            rows = ave.extract(fitted, num_frames, resolve_model_file("ave", models_dir), device, bar.update)
        elif asr == "hubert":
            from . import hubert

            fe, model = hubert.load_hubert(models_dir, device)
            rows = hubert.extract(fitted, num_frames, fe, model, device, bar.update)
        elif asr == "wenet":
            from ..weights import resolve_model_file
            from . import wenet

            rows = wenet.extract(fitted, num_frames, resolve_model_file("wenet", models_dir), device, bar.update,
                                 frame_shape=spec.frame_shape)
        elif asr == "whisper":
            from . import whisper

            encoder = whisper.load_whisper(whisper_model, models_dir, device)
            rows = whisper.extract(fitted, num_frames, encoder, device, bar.update)
            spec = spec.for_rows(rows.shape[1:], f"whisper model {encoder.source.where}")
        else:  # a registry entry without an extractor is a programming error, not a user one
            raise NotImplementedError(asr)

    rows = np.ascontiguousarray(rows[:num_frames], dtype=np.float32)
    if rows.shape != (num_frames, *spec.frame_shape):
        raise SyncTalkError(f"{asr} features came out {rows.shape}, expected {(num_frames, *spec.frame_shape)}")
    return rows


def frames_for_duration(seconds: float, fps: int = FPS) -> int:
    """Video frames a clip of `seconds` covers at `fps` (rounded up, at least one)."""
    return max(1, math.ceil(round(seconds * fps, 6)))


def features_for_file(asr: str, path: "str | os.PathLike", num_frames: int | None = None, *,
                      models_dir: "str | os.PathLike | None" = None, device: "str | object" = "cpu",
                      progress: bool = True, whisper_model: "str | os.PathLike | None" = None) -> np.ndarray:
    """Features of any audio (or video) file ffmpeg reads; num_frames defaults to ceil(duration·25)."""
    from .. import media

    audio = media.load_audio(Path(path), SAMPLE_RATE)
    if num_frames is None:
        num_frames = frames_for_duration(audio.size / SAMPLE_RATE)
    return compute_features(asr, audio, num_frames, models_dir=models_dir, device=device, progress=progress,
                            whisper_model=whisper_model)


def _device(device):
    """A torch.device from 'cpu' / 'cuda' / 'auto' / a torch.device (errors for a missing GPU)."""
    from ..device import resolve_device

    return resolve_device(device if isinstance(device, str) or device is None else str(device))
