"""Voice activity: is someone speaking at video frame k? From the audio's energy alone.

Rendering rests the mouth in pauses (synctalk.render.silence), eval scores the silent stretches, the
lip check and the SyncNet look at speech only: all of them take the speech mask from here.
"""

from __future__ import annotations

import math

import numpy as np

from ..constants import FPS, SAMPLE_RATE

# leading/trailing silence: frame RMS below this many dB under the speech level (95th percentile)
SILENCE_REL_DB = 30.0
SILENCE_FLOOR = 10 ** (-55.0 / 20.0)  # and never louder than -55 dBFS counts as silence
VAD_NOISE_FRACTION = 0.3  # speech threshold: this far (in dB) from the noise floor up to the speech level
VAD_BRIDGE_FRAMES = 2  # quiet gaps this short inside a word (stop consonants) are still speech
VAD_BLIP_FRAMES = 1  # loud runs this short with quiet around them are not speech


def frame_rms(audio: np.ndarray, count: int, sample_rate: int = SAMPLE_RATE, fps: int = FPS) -> np.ndarray:
    """RMS level of each video frame's stretch of audio (count,) (zero past the end)."""
    hop = sample_rate // fps
    padded = np.zeros(count * hop, dtype=np.float32)
    n = min(audio.size, padded.size)
    padded[:n] = audio[:n]
    return np.sqrt(np.mean(padded.reshape(count, hop).astype(np.float64) ** 2, axis=1))


def centred_rms(audio: np.ndarray, count: int, sample_rate: int = SAMPLE_RATE, fps: int = FPS) -> np.ndarray:
    """RMS of the audio in a one-frame window centred on each frame's time k/fps (count,), zero past the end."""
    hop = sample_rate // fps
    padded = np.zeros((count + 1) * hop, dtype=np.float64)
    n = min(audio.size, padded.size - hop // 2)
    padded[hop // 2:hop // 2 + n] = np.asarray(audio[:n], dtype=np.float64)
    return np.sqrt(np.mean(padded[:count * hop].reshape(count, hop) ** 2, axis=1))


def true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
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
    for a, b in true_runs(~active):
        if a > 0 and b < count and b - a <= VAD_BRIDGE_FRAMES:
            active[a:b] = True
    for a, b in true_runs(active):  # a lone loud frame in a pause is a click or a breath, not speech
        if b - a <= VAD_BLIP_FRAMES:
            active[a:b] = False
    return active
