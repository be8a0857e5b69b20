"""Silence: voice activity of the speech, and what the mouth does where nobody speaks.

Speech rarely runs without a break: between phrases (and GRID's words) the speaker pauses, and a
mouth generated from those quiet windows keeps half-moving. Pauses of at least PAUSE_SECONDS
(voice activity from the audio alone) are rendered as the person's own resting mouth instead: the
UNet is conditioned on a window of the person's own recorded silence (rows of the dataset's
features around a frame where they were silent with a closed mouth) with that frame's crop as the
reference, while the masked input stays the current frame, so pose and background are its own. One
resting frame serves a whole pause (no jitter), and the mouth cross-fades between speech and rest
over CROSSFADE_FRAMES. Rendering with `--no_silence` keeps the older rule: only silence at the very
start and end shows the real frames (`generation_weights`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..audio.activity import SILENCE_FLOOR, SILENCE_REL_DB, frame_rms, true_runs, voice_activity
from ..constants import CROSSFADE_FRAMES, FPS, SAMPLE_RATE, SPEECH_LEAD_FRAMES

SILENCE_MIN_FRAMES = 3  # shorter pauses at the ends are left to the network
PAUSE_SECONDS = 0.3  # the shortest pause that gets a resting mouth


def pause_frames(seconds: float = PAUSE_SECONDS, fps: int = FPS) -> int:
    """The shortest pause, in whole frames (at least `seconds` long)."""
    return max(1, math.ceil(seconds * fps - 1e-9))


def silent_edges(audio: np.ndarray, count: int, sample_rate: int = SAMPLE_RATE) -> tuple[int, int]:
    """(leading, trailing) frames of silence, by energy relative to the speech level."""
    rms = frame_rms(audio, count, sample_rate)
    level = float(np.percentile(rms, 95)) if count else 0.0
    threshold = max(SILENCE_FLOOR, level * 10 ** (-SILENCE_REL_DB / 20.0))
    loud = np.nonzero(rms >= threshold)[0]
    if level <= SILENCE_FLOOR or len(loud) == 0:
        return count, 0
    return int(loud[0]), int(count - 1 - loud[-1])


def generation_weights(audio: np.ndarray, count: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Per output frame: 1 = generated mouth, 0 = the real frame (silent start/end), cross-faded between.

    The first and last frame of a silent start or end are always real, so a clip begins and ends on
    the person's own closed mouth.
    """
    lead, trail = silent_edges(audio, count, sample_rate)
    w = np.ones(count, dtype=np.float32)
    if lead >= count:
        return np.zeros(count, dtype=np.float32)
    if lead >= SILENCE_MIN_FRAMES:
        end = max(lead - SPEECH_LEAD_FRAMES, 1)  # generated from here on
        n = max(min(CROSSFADE_FRAMES, end - 1), 0)
        w[:end] = 0.0
        w[end - n:end] = np.arange(1, n + 1, dtype=np.float32) / (n + 1)
    if trail >= SILENCE_MIN_FRAMES:
        begin = min(count - trail + SPEECH_LEAD_FRAMES, count - 1)  # real from here on
        n = max(min(CROSSFADE_FRAMES, count - begin - 1), 0)
        fade = np.arange(n, 0, -1, dtype=np.float32) / (n + 1)
        w[begin:] = 0.0
        w[begin:begin + n] = fade
    return w


def pauses(active: np.ndarray, min_frames: int | None = None) -> list[tuple[int, int]]:
    """(start, end) of each silent stretch of at least `min_frames` (default: PAUSE_SECONDS), edges included."""
    min_frames = pause_frames() if min_frames is None else int(min_frames)
    return [(a, b) for a, b in true_runs(~np.asarray(active, bool)) if b - a >= min_frames]


def rest_weights(active: np.ndarray, min_frames: int | None = None, lead: int = SPEECH_LEAD_FRAMES,
                 fade: int = CROSSFADE_FRAMES) -> np.ndarray:
    """(count,) weight of the resting mouth: 1 inside pauses, 0 in speech, a ramp of `fade` frames between.

    The lips close a little after the sound ends and open a little before it starts, so a pause
    between words leaves `lead` frames of speech mouth at each side; at the clip's ends it does not.
    """
    count = len(active)
    w = np.zeros(count, np.float32)
    t = np.arange(count, dtype=np.float32)
    for a, b in pauses(active, min_frames):
        lo = a + lead if a > 0 else a
        hi = b - lead if b < count else b
        if hi <= lo:
            continue
        up = (t[lo:hi] - lo + 1) / (fade + 1) if a > 0 else np.ones(hi - lo, np.float32)
        down = (hi - t[lo:hi]) / (fade + 1) if b < count else np.ones(hi - lo, np.float32)
        w[lo:hi] = np.minimum(1.0, np.minimum(up, down))
    return w


def resting_candidates(active: np.ndarray, apertures: np.ndarray, left: int, right: int) -> np.ndarray:
    """Frames of the person's own video that show a resting mouth with silence all around (sorted indices).

    Best: frames whose whole audio window [i-left, i+right) is silent, with an opening in the lowest
    quarter of those. Failing that, silent frames with the most closed mouths; failing that (a video
    without a pause), the 5 % most closed mouths.
    """
    active = np.asarray(active, bool)
    apertures = np.asarray(apertures, np.float64)
    n = min(len(active), len(apertures))
    active, apertures = active[:n], apertures[:n]
    if n == 0:
        return np.zeros(0, np.int64)
    padded = np.concatenate([np.ones(left, bool), active, np.ones(right, bool)])  # unknown audio counts as speech
    loud = np.convolve(padded.astype(np.float64), np.ones(left + right), mode="valid")[:n]
    for pool in (np.nonzero(loud < 0.5)[0], np.nonzero(~active)[0], np.arange(n)):
        if len(pool):
            q = 25 if len(pool) < n else 5
            cut = np.percentile(apertures[pool], q)
            return np.sort(pool[apertures[pool] <= cut]).astype(np.int64)
    return np.zeros(0, np.int64)


def rest_sources(rest: np.ndarray, sources: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(count,) the resting frame each output frame borrows (-1 where rest is 0): one per pause, the
    candidate nearest in the video to the pause's middle source frame (a similar pose)."""
    out = np.full(len(rest), -1, np.int64)
    if len(candidates) == 0:
        return out
    for a, b in true_runs(np.asarray(rest) > 0):
        mid = int(sources[(a + b - 1) // 2])
        out[a:b] = int(candidates[np.argmin(np.abs(candidates - mid))])
    return out


def dataset_resting_frames(layout: Any, count: int, left: int, right: int) -> np.ndarray:
    """resting_candidates of a preprocessed person, from its landmarks and aud.wav."""
    from .. import media
    from ..faces.lms import load_all_landmarks
    from ..faces.topology import topology_for_points

    lms = load_all_landmarks(layout, count)
    apertures = topology_for_points(lms.shape[1]).mouth_aperture(lms)
    active = voice_activity(media.load_audio(Path(layout.audio_wav), SAMPLE_RATE), count)
    return resting_candidates(active, apertures, left, right)
