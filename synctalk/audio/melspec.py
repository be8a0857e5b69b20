"""Log-mel spectrograms in numpy/torch: a Slaney-style filterbank and a fixed [-4, 4] normalisation.

Two settings are used: the Wav2Lip one (80 bins at 80 Hz, the input of the `ave` encoder) and a
100 Hz one (the `mel` features). Both map decibels to [-max_abs, max_abs] with fixed limits, so a
value means the same loudness in every file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class MelConfig:
    """STFT, filterbank and normalisation settings of one log-mel flavour."""

    sample_rate: int = 16000
    n_fft: int = 800
    hop: int = 200
    win: int = 800
    n_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    min_level_db: float = -100.0
    ref_level_db: float = 20.0
    max_abs: float = 4.0

    def num_frames(self, num_samples: int) -> int:
        """Frames of a centred STFT over `num_samples` samples."""
        return 1 + num_samples // self.hop


# Wav2Lip's audio.py / hparams.py: the `ave` encoder was trained on exactly this
WAV2LIP_MEL = MelConfig()
# the `mel` features: 10 ms hop, 25 ms window
MEL_100HZ = MelConfig(n_fft=512, hop=160, win=400)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log_start = 1000.0 / (200.0 / 3)
    step = np.log(6.4) / 27.0
    return np.where(f >= 1000.0, log_start + np.log(np.maximum(f, 1e-10) / 1000.0) / step, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    log_start = 1000.0 / (200.0 / 3)
    step = np.log(6.4) / 27.0
    return np.where(m >= log_start, 1000.0 * np.exp(step * (m - log_start)), m * (200.0 / 3))


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, n_fft//2+1) triangular filters on the Slaney mel scale, area-normalised (each
    filter's weights scaled by 2 / its width in Hz), the same filters librosa builds by default."""
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= {sample_rate / 2}, got {fmin}, {fmax}")
    fft_hz = np.linspace(0.0, sample_rate / 2, 1 + n_fft // 2)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.astype(np.float32)


def preemphasize(audio: np.ndarray, k: float) -> np.ndarray:
    """y[n] = x[n] - k·x[n-1] (y[0] = x[0]); lifts the high frequencies speech is quiet in."""
    out = np.asarray(audio, dtype=np.float32).copy()
    if k and out.size > 1:
        out[1:] -= k * np.asarray(audio[:-1], dtype=np.float32)
    return out


def log_mel(audio: np.ndarray, config: MelConfig = WAV2LIP_MEL, device: "str | object" = "cpu",
            as_tensor: bool = False):
    """(frames, n_mels) normalised log-mel of mono float audio; frame j is centred on sample j·hop.

    Returns float32 numpy, or a torch tensor on `device` when `as_tensor` (for batched encoders).
    """
    import torch

    x = preemphasize(audio, config.preemphasis)
    if x.size == 0:
        x = np.zeros(1, dtype=np.float32)
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    t = torch.from_numpy(x).to(dev)
    window = torch.hann_window(config.win, periodic=True, device=dev)
    spec = torch.stft(t, n_fft=config.n_fft, hop_length=config.hop, win_length=config.win, window=window,
                      center=True, pad_mode="constant", return_complex=True).abs()  # (bins, frames)
    fb = torch.from_numpy(mel_filterbank(config.sample_rate, config.n_fft, config.n_mels,
                                         config.fmin, config.fmax)).to(dev)
    mel = fb @ spec  # (n_mels, frames)
    min_level = 10.0 ** (config.min_level_db / 20.0)
    db = 20.0 * torch.log10(torch.clamp(mel, min=min_level)) - config.ref_level_db
    m = config.max_abs
    norm = torch.clamp((2 * m) * (db - config.min_level_db) / (-config.min_level_db) - m, -m, m)
    out = norm.T.contiguous().float()
    return out if as_tensor else out.cpu().numpy()
