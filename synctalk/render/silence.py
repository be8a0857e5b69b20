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

from ..constants import FPS, SAMPLE_RATE

# leading/trailing silence: frame RMS below this many dB under the speech level (95th percentile)
SILENCE_REL_DB = 30.0
SILENCE_FLOOR = 10 ** (-55.0 / 20.0)  # and never louder than -55 dBFS counts as silence
SILENCE_MIN_FRAMES = 3  # shorter pauses at the ends are left to the network
SPEECH_LEAD_FRAMES = 2  # lips move a little before the sound starts (and close a little after)
CROSSFADE_FRAMES = 4  # real → generated over this many frames
PAUSE_SECONDS = 0.3  # the shortest pause that gets a resting mouth
VAD_NOISE_FRACTION = 0.3  # speech threshold: this far (in dB) from the noise floor up to the speech level
VAD_BRIDGE_FRAMES = 2  # quiet gaps this short inside a word (stop consonants) are still speech
VAD_BLIP_FRAMES = 1  # loud runs this short with quiet around them are not speech


def pause_frames(seconds: float = PAUSE_SECONDS, fps: int = FPS) -> int:
    """The shortest pause, in whole frames (at least `seconds` long)."""
    return max(1, math.ceil(seconds * fps - 1e-9))


def frame_rms(audio: np.ndarray, count: int, sample_rate: int = SAMPLE_RATE, fps: int = FPS) -> np.ndarray:
    """RMS level of each video frame's stretch of audio (count,) (zero past the end)."""
    hop = sample_rate // fps
    padded = np.zeros(count * hop, dtype=np.float32)
    n = min(audio.size, padded.size)
    padded[:n] = audio[:n]
    return np.sqrt(np.mean(padded.reshape(count, hop).astype(np.float64) ** 2, axis=1))


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


def centred_rms(audio: np.ndarray, count: int, sample_rate: int = SAMPLE_RATE, fps: int = FPS) -> np.ndarray:
    """RMS of the audio in a one-frame window centred on each frame's time k/fps (count,), zero past the end."""
    hop = sample_rate // fps
    padded = np.zeros((count + 1) * hop, dtype=np.float64)
    n = min(audio.size, padded.size - hop // 2)
    padded[hop // 2:hop // 2 + n] = np.asarray(audio[:n], dtype=np.float64)
    return np.sqrt(np.mean(padded[:count * hop].reshape(count, hop) ** 2, axis=1))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of True in a boolean array, end exclusive."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.diff(m.astype(np.int8))
    return list(zip(np.nonzero(d == 1)[0].tolist(), np.nonzero(d == -1)[0].tolist()))


def voice_activity(audio: np.ndarray, count: int, sample_rate: int = SAMPLE_RATE, fps: int = FPS) -> np.ndarray:
    """(count,) bool: is someone speaking at frame k? By energy against the clip's own noise floor and speech level.

    The threshold sits VAD_NOISE_FRACTION of the way (in dB) from the noise floor (10th percentile of
    the frame levels) up to the speech level (95th percentile), never under -55 dBFS nor more than
    SILENCE_REL_DB under the speech level; gaps of up to VAD_BRIDGE_FRAMES inside speech are bridged,
    loud blips of VAD_BLIP_FRAMES dropped.
    """
    rms = centred_rms(np.asarray(audio, np.float32).reshape(-1), count, sample_rate, fps)
    if count == 0:
        return np.zeros(0, bool)
    db = 20.0 * np.log10(np.maximum(rms, 1e-8))
    level, noise = float(np.percentile(db, 95)), float(np.percentile(db, 10))
    floor = 20.0 * math.log10(SILENCE_FLOOR)
    if level <= floor:
        return np.zeros(count, bool)
    threshold = max(floor, level - SILENCE_REL_DB, noise + VAD_NOISE_FRACTION * (level - noise))
    active = db > threshold
    for a, b in _runs(~active):
        if a > 0 and b < count and b - a <= VAD_BRIDGE_FRAMES:
            active[a:b] = True
    for a, b in _runs(active):  # a lone loud frame in a pause is a click or a breath, not speech
        if b - a <= VAD_BLIP_FRAMES:
            active[a:b] = False
    return active


def pauses(active: np.ndarray, min_frames: int | None = None) -> list[tuple[int, int]]:
    """(start, end) of each silent stretch of at least `min_frames` (default: PAUSE_SECONDS), edges included."""
    min_frames = pause_frames() if min_frames is None else int(min_frames)
    return [(a, b) for a, b in _runs(~np.asarray(active, bool)) if b - a >= min_frames]


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
    for a, b in _runs(np.asarray(rest) > 0):
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
