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
  of the speech in a one-frame window centred on the frame's time) over lags of up to ±`MAX_LAG`
  frames. 0.14-0.58 on the fixture clips; -0.03 on sun.mp4.

Clips shorter than MIN_FRAMES get the numbers but no verdict: a few syllables decide them.

The same correlation, taken on the speech (voice activity, widened a little so onsets and closures
count) after both series lose their slow drift (head pose, level changes), gives the video's own
A/V offset: `estimate_av_offset` searches ±`MAX_OFFSET` frames and refines the peak to a fraction
of a frame. Its sign: a positive offset N means the lips move N frames AFTER the sound (the video
lags its audio; the opening at frame t follows the loudness at t - N). Preprocessing stores it as
`state["preprocessing"]["av_offset"] = {"frames": N, "source": "lips", "corr": r, "subframe": x,
"segments": [...], "spread": s}`: the same per 30 s (`offset_segments`), and how far those differ —
a recording whose clocks drift has no single offset.

The offset of a long recording need not be one number: a video joined from clips whose audio and
video tracks differ by a few milliseconds each drifts, unless its audio is read on its timestamps
(`media.ON_TIMESTAMPS`: grid_s1_5min.mp4 decoded sample after sample seemed to drift from 1 frame to
5; on its timestamps it is in sync throughout). `estimate_av_drift` measures the offset in overlapping
20 s windows and fits a line through them; when the line moves by at least a frame over the clip,
the stored offset also holds `start_frames` (the fitted offset at frame 0) and `drift_per_minute`, and
`per_frame_offsets` turns it into one whole offset per frame for training. A constant offset is
the same with a drift of 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .constants import SAMPLE_RATE
from .layout import DatasetLayout

MAX_LAG = 8  # frames either way: real recordings can carry offsets of a few frames
MAX_OFFSET = 8  # the A/V offset search, frames either way
DETREND_FRAMES = 25  # drift slower than a second is not lip motion
SPEECH_MARGIN_FRAMES = 4  # frames around the speech that still count (the lips open before the sound)
MIN_OFFSET_FRAMES = 50  # fewer speech frames than this give no offset
SEGMENT_FRAMES = 750  # the offset is also measured per 30 s: a recording whose clocks differ drifts
MIN_SEGMENT_CORR = 0.1  # segments whose peak is weaker say nothing about the drift
MISREAD_FRAMES = 1.5  # an offset reading this far from its neighbours, or from the fitted drift line, is a misreading
MIN_FRAMES = 100  # 4 s at 25 fps: on shorter clips a few syllables decide both numbers, so no verdict
DRIFT_WINDOW_FRAMES = 500  # 20 s: long enough for a stable peak, short enough to follow a drift
DRIFT_STEP_FRAMES = 125
MIN_DRIFT_FRAMES = 1.0  # a fitted line that moves less than this over the clip is a constant offset
MIN_APERTURE_CV = 0.2
MIN_AUDIO_CORR = 0.1


def frame_loudness(audio: np.ndarray, frames: int, fps: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(frames,) log RMS of the audio in a one-frame window centred on each frame's time i/fps (floored at 1e-4).

    Centred, because frame i shows the face at time i/fps: a window starting there would read the
    sound half a frame late and bias every lag by +0.5.
    """
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    per = sample_rate / float(fps)
    out = np.full(frames, np.log(1e-4), np.float32)
    for i in range(frames):
        seg = audio[max(int(round((i - 0.5) * per)), 0):max(int(round((i + 0.5) * per)), 0)]
        if seg.size:
            out[i] = np.log(max(float(np.sqrt(np.mean(seg.astype(np.float64) ** 2))), 1e-4))
    return out


def lagged_corr(x: np.ndarray, y: np.ndarray, max_lag: int = MAX_LAG) -> tuple[float, int]:
    """The highest Pearson correlation of x[t] with y[t - lag] over |lag| <= max_lag, and that lag."""
    from .evaluate.metrics import lag_profile

    profile = lag_profile(x, y, max_lag)
    finite = {k: v for k, v in profile.items() if v is not None}
    if not finite:
        return float("nan"), 0
    lag = max(finite, key=lambda k: (finite[k], -abs(k)))
    return finite[lag], lag


def detrend(x: np.ndarray, frames: int = DETREND_FRAMES) -> np.ndarray:
    """x minus its moving average over `frames` (edges averaged over what exists)."""
    x = np.asarray(x, np.float64)
    if len(x) == 0:
        return x
    k = np.ones(min(frames, len(x)))
    mean = np.convolve(x, k, mode="same") / np.convolve(np.ones(len(x)), k, mode="same")
    return x - mean


def estimate_av_offset(apertures: np.ndarray, loudness: np.ndarray, speech: np.ndarray | None = None,
                       max_lag: int = MAX_OFFSET) -> dict[str, Any] | None:
    """The video's own A/V offset from lips and loudness: {"frames", "subframe", "corr"}, or None.

    Positive = the lips move that many frames after the sound. Pairs (opening[t], loudness[t-lag])
    count where frame t-lag is speech (±SPEECH_MARGIN_FRAMES); the peak of the correlation over lags
    is refined by a parabola through it and its neighbours.
    """
    from .evaluate.metrics import lag_profile, peak_lag

    x = detrend(apertures)
    y = detrend(loudness)
    n = min(len(x), len(y))
    x, y = x[:n], y[:n]
    mask = np.ones(n, bool)
    if speech is not None:
        s = np.asarray(speech, bool)[:n]
        mask = np.convolve(s.astype(np.float64), np.ones(2 * SPEECH_MARGIN_FRAMES + 1), mode="same") > 0.5
    if mask.sum() < MIN_OFFSET_FRAMES:
        return None
    profile = lag_profile(x, y, max_lag, mask_y=mask)
    peak = peak_lag(profile)
    if peak is None:
        return None
    return {"frames": int(round(peak["subframe"])), "subframe": round(float(peak["subframe"]), 3),
            "corr": round(float(peak["corr"]), 4)}


def estimate_av_drift(apertures: np.ndarray, loudness: np.ndarray, speech: np.ndarray | None = None,
                      fps: float = 25.0, window: int = DRIFT_WINDOW_FRAMES,
                      step: int = DRIFT_STEP_FRAMES) -> dict[str, Any] | None:
    """A line through the A/V offsets of overlapping windows: {"start_frames", "drift_per_minute",
    "windows"}, or None when the clip is shorter than two windows or the line moves by less than
    MIN_DRIFT_FRAMES over the clip. Each window's offset is weighted by its peak correlation."""
    n = min(len(apertures), len(loudness))
    if n < window + step:
        return None
    centres, lags, weights = [], [], []
    for s in range(0, n - window + 1, step):
        sl = slice(s, s + window)
        found = estimate_av_offset(apertures[sl], loudness[sl], None if speech is None else speech[sl])
        # a peak at the end of the search range is a window the search could not place
        if found is not None and found["corr"] > 0 and abs(found["subframe"]) < MAX_OFFSET - 0.5:
            centres.append(s + window / 2)
            lags.append(found["subframe"])
            weights.append(found["corr"])
    if len(lags) < 3:
        return None
    t, y, w = np.asarray(centres), np.asarray(lags), np.asarray(weights)
    slope, start = np.polyfit(t, y, 1, w=w)
    # one refit without the windows more than MISREAD_FRAMES off the first line (a sentence whose
    # rhythm fooled the correlation), when enough remain
    keep = np.abs(y - (start + slope * t)) <= MISREAD_FRAMES
    if keep.sum() >= 3 and not keep.all():
        slope, start = np.polyfit(t[keep], y[keep], 1, w=w[keep])
    if abs(slope) * n < MIN_DRIFT_FRAMES:
        return None
    return {"start_frames": round(float(start), 3), "drift_per_minute": round(float(slope) * fps * 60, 4),
            "windows": len(lags)}


def per_frame_offsets(stored: dict[str, Any] | None, count: int, fps: float = 25.0) -> np.ndarray:
    """(count,) whole A/V offsets, one per frame, from a stored `av_offset` (zeros when None)."""
    if not stored:
        return np.zeros(count, np.int64)
    if stored.get("drift_per_minute") is not None and stored.get("start_frames") is not None:
        t = np.arange(count, dtype=np.float64)
        return np.rint(float(stored["start_frames"]) + float(stored["drift_per_minute"]) / (fps * 60) * t).astype(np.int64)
    return np.full(count, int(stored.get("frames") or 0), np.int64)


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
    """lip_activity of a preprocessed person (landmarks and aud.wav must exist), with its `av_offset`."""
    from . import media
    from .faces.lms import load_all_landmarks
    from .faces.topology import topology_for_points

    lms = load_all_landmarks(layout, frames)
    apertures = topology_for_points(lms.shape[1]).mouth_aperture(lms)
    return check_signals(apertures, media.load_audio(layout.audio_wav, SAMPLE_RATE), fps)


def offset_segments(apertures: np.ndarray, loudness: np.ndarray, speech: np.ndarray | None = None,
                    frames: int = SEGMENT_FRAMES) -> list[dict[str, Any]]:
    """estimate_av_offset per stretch of about `frames` ({"start", "end", "subframe", "corr"}; none under 2 stretches).

    A recording whose sound and picture clocks differ drifts: its offset grows along the video, and
    one number cannot describe it.
    """
    n = min(len(apertures), len(loudness))
    if n < 2 * frames:
        return []
    out = []
    bounds = np.linspace(0, n, int(round(n / frames)) + 1).astype(int)  # equal stretches of about `frames`
    for start, end in zip(bounds[:-1], bounds[1:]):
        r = estimate_av_offset(apertures[start:end], loudness[start:end],
                               None if speech is None else np.asarray(speech)[start:end])
        if r is not None:
            out.append({"start": int(start), "end": int(end), "subframe": r["subframe"], "corr": r["corr"]})
    return out


def offset_spread(segments: list[dict[str, Any]]) -> float | None:
    """Largest minus smallest segment offset among the segments with a clear peak (None with fewer than 2).

    A segment more than MISREAD_FRAMES from each of its neighbours is left out: a drift moves
    the offset a little from one 30 s stretch to the next, a stretch whose sentences fooled the
    correlation jumps alone (grid_s1_5min's first 30 s read +6.8 between neighbours at 0 and +0.1).
    """
    clear = [s["subframe"] for s in segments if s["corr"] >= MIN_SEGMENT_CORR]
    if len(clear) < 2:
        return None
    kept = [x for i, x in enumerate(clear)
            if any(abs(x - clear[j]) <= MISREAD_FRAMES for j in (i - 1, i + 1) if 0 <= j < len(clear))]
    if len(kept) < 2:
        kept = clear
    return round(max(kept) - min(kept), 3)


def check_signals(apertures: np.ndarray, audio: np.ndarray, fps: float,
                  sample_rate: int = SAMPLE_RATE) -> dict[str, Any]:
    """lip_activity of mouth openings and their 16 kHz audio, plus `av_offset` (None when unmeasurable)."""
    from .audio.activity import voice_activity

    loudness = frame_loudness(audio, len(apertures), fps, sample_rate)
    result = lip_activity(apertures, loudness)
    speech = voice_activity(audio, len(apertures), sample_rate, int(round(fps)))
    offset = estimate_av_offset(apertures, loudness, speech)
    if offset is not None:
        segments = offset_segments(apertures, loudness, speech)
        offset = {"source": "lips", **offset, "segments": segments, "spread": offset_spread(segments)}
        drift = estimate_av_drift(apertures, loudness, speech, fps)
        if drift is not None:
            # the summary number is the fitted offset at the middle of the clip
            offset["frames"] = int(round(drift["start_frames"] + drift["drift_per_minute"] / (fps * 60) * len(apertures) / 2))
            offset.update(drift)
    result["av_offset"] = offset
    return result


def warning_text(name: str, result: dict[str, Any], video: Path | str | None = None) -> str:
    """The user-facing warning for a failed check ('' when it passed)."""
    if result.get("ok") is not False:
        return ""
    what = video if video else name
    return (f"warning: {what}: " + "; ".join(result["problems"]) + ". A SyncNet trained on it stays at chance and the "
            "UNet will not learn lip sync from it; record a clip where the speaker's mouth visibly articulates.")
