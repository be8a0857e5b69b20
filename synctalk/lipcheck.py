"""Does a person's video hold lip sync to learn? Lip motion against the loudness of the speech.

A SyncNet (and the UNet's sync loss through it) can only learn what the video shows: lips that
open and close with the sound. Some talking-head videos do not: a presenter who speaks with an
unchanging smile, a dubbed or voiced-over clip, a still image with audio. On such a video every
critic stays at chance, however long it trains, and the app should say so before the user spends
GPU time on it.

Two numbers from the preprocessed dataset (landmarks and aud.wav, nothing else):

* `aperture_cv` — the inner-lip opening (topology.mouth_aperture) over the video: its standard
  deviation divided by its mean. Speech moves it a lot (0.51-0.83 on the fixture clips); 0.06 on
  sun.mp4, whose lips stay still.
* `audio_corr` — the best Pearson correlation of that opening with the per-frame loudness (log RMS
  of the speech) over lags of up to ±`MAX_LAG` frames (the mouth may lead or trail the sound a
  little). 0.14-0.58 on the fixture clips; -0.03 on sun.mp4.

Clips shorter than MIN_FRAMES get the numbers but no verdict: a few syllables decide them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .layout import DatasetLayout

MAX_LAG = 3  # frames either way
MIN_FRAMES = 100  # 4 s at 25 fps: on shorter clips a few syllables decide both numbers, so no verdict
MIN_APERTURE_CV = 0.2
MIN_AUDIO_CORR = 0.1
SAMPLE_RATE = 16000


def frame_loudness(audio: np.ndarray, frames: int, fps: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(frames,) log RMS of the audio in each video frame's span (silence floored at 1e-4)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    per = sample_rate / float(fps)
    out = np.full(frames, np.log(1e-4), np.float32)
    for i in range(frames):
        seg = audio[int(round(i * per)):int(round((i + 1) * per))]
        if seg.size:
            out[i] = np.log(max(float(np.sqrt(np.mean(seg.astype(np.float64) ** 2))), 1e-4))
    return out


def lagged_corr(x: np.ndarray, y: np.ndarray, max_lag: int = MAX_LAG) -> tuple[float, int]:
    """The highest Pearson correlation of x[t] with y[t - lag] over |lag| <= max_lag, and that lag."""
    from .evaluate import pearson

    best, best_lag = float("nan"), 0
    n = min(len(x), len(y))
    for lag in range(-max_lag, max_lag + 1):
        c = pearson(x[max(0, lag):n + min(0, lag)], y[max(0, -lag):n - max(0, lag)])
        if c is not None and (not np.isfinite(best) or c > best):
            best, best_lag = c, lag
    return best, best_lag


def lip_activity(apertures: np.ndarray, loudness: np.ndarray) -> dict[str, Any]:
    """The two numbers and a verdict: ok (True), why a SyncNet cannot learn sync from this video
    (False, with `problems`), or None for a clip shorter than MIN_FRAMES."""
    apertures = np.asarray(apertures, np.float64)
    mean = float(apertures.mean()) if apertures.size else 0.0
    cv = float(apertures.std() / mean) if mean > 0 else 0.0
    corr, lag = lagged_corr(apertures, np.asarray(loudness, np.float64))
    numbers = {"aperture_cv": round(cv, 4), "audio_corr": round(corr, 4) if np.isfinite(corr) else None,
               "audio_lag_frames": lag}
    if len(apertures) < MIN_FRAMES:
        return {**numbers, "ok": None, "problems": [],
                "note": f"{len(apertures)} frames are too few to judge (at least {MIN_FRAMES})"}
    problems = []
    if cv < MIN_APERTURE_CV:
        problems.append(f"the lips hardly move (opening varies by {cv:.0%} of its mean; speech typically moves it by "
                        f"50% or more)")
    if not np.isfinite(corr) or corr < MIN_AUDIO_CORR:
        problems.append(f"the lip opening does not follow the loudness of the speech (best correlation "
                        f"{corr:.2f} within ±{MAX_LAG} frames; lips that follow speech typically give 0.15 or more)")
    return {**numbers, "ok": not problems, "problems": problems}


def check_dataset(layout: DatasetLayout, frames: int, fps: float) -> dict[str, Any]:
    """lip_activity of a preprocessed person (landmarks and aud.wav must exist)."""
    from . import media
    from .faces.topology import topology_for_points
    from .preprocess import load_all_landmarks

    lms = load_all_landmarks(layout, frames)
    apertures = topology_for_points(lms.shape[1]).mouth_aperture(lms)
    loudness = frame_loudness(media.load_audio(layout.audio_wav, SAMPLE_RATE), len(apertures), fps)
    return lip_activity(apertures, loudness)


def warning_text(name: str, result: dict[str, Any], video: Path | str | None = None) -> str:
    """The user-facing warning for a failed check ('' when it passed)."""
    if result.get("ok") is not False:
        return ""
    what = video if video else name
    return (f"warning: {what}: " + "; ".join(result["problems"]) + ". A SyncNet trained on it stays at chance and the "
            "UNet will not learn lip sync from it; record a clip where the speaker's mouth visibly articulates.")
