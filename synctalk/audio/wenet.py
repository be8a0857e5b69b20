"""`wenet`: a WeNet conformer encoder exported to ONNX (Ultralight-Digital-Human's encoder.onnx), run by
onnxruntime on 80-bin log filterbanks.

The graph takes `chunk` (1, 1, 67, 80) float fbank frames, `offset` (1,) int64, `att_cache`
(3, 8, 16, 128) and `cnn_cache` (3, 1, 512, 14) float; its first output is (1, 16, 512). Each video
frame gets its own chunk run with empty caches (as the reference does), so one row is (16, 512).

Framing: fbank frames every 10 ms with a 25 ms window, on int16-scaled samples, after 32 frames
(320 ms) of silence are put in front. Video frame i (25 fps) takes the 67 frames starting at padded
frame 4·i, i.e. the audio from 320 ms before to 350 ms after the frame's start. (The reference works at
20 fps with a step of 5 frames; the step here is 4 because rows follow 25 fps video.)

The filterbank is python_speech_features' (Povey window, 20 Hz–8 kHz, pre-emphasis 0.97), with the
power spectrum scaled and floored as Kaldi's fbank does, which is what the encoder was trained on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import SyncTalkError

SAMPLE_RATE = 16000
HOP = 160
WIN = 400
NFFT = 512
MEL_BINS = 80
LEAD_FRAMES = 32  # silent fbank frames put in front
CHUNK_FRAMES = 67  # fbank frames per encoder run
FRAME_STEP = 4  # fbank frames per video frame at 25 fps
OFFSET = 100  # the `offset` value the reference feeds
RIGHT_CONTEXT = 5600  # samples past the last video frame the last chunk reads
INPUT_NAMES = ("chunk", "offset", "att_cache", "cnn_cache")
_DEFAULT_SHAPES = {"chunk": (1, 1, CHUNK_FRAMES, MEL_BINS), "offset": (1,),
                   "att_cache": (3, 8, 16, 128), "cnn_cache": (3, 1, 512, 14)}
_FBANK_BLOCK = 6000  # fbank frames computed at once (60 s), to keep memory flat on long audio


def _povey(n: int) -> np.ndarray:
    """Kaldi's default analysis window: a Hann window raised to 0.85."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / (n - 1))) ** 0.85


def log_fbank(audio: np.ndarray) -> np.ndarray:
    """(frames, 80) log filterbank energies of 16 kHz float audio in [-1, 1]; frame j covers samples
    [160·j, 160·j + 400)."""
    from python_speech_features import fbank

    x = np.asarray(audio, dtype=np.float64) * 32768.0  # the encoder was trained on int16 sample values
    x[1:] = x[1:] - 0.97 * x[:-1]  # pre-emphasis once over the whole signal, so blocks join exactly
    total = 1 + (x.size - WIN) // HOP if x.size >= WIN else 0
    out = np.empty((total, MEL_BINS), dtype=np.float32)
    floor = np.finfo(np.float32).eps
    for f0 in range(0, total, _FBANK_BLOCK):
        f1 = min(f0 + _FBANK_BLOCK, total)
        seg = x[f0 * HOP:(f1 - 1) * HOP + WIN]
        feat, _ = fbank(seg, samplerate=SAMPLE_RATE, winlen=WIN / SAMPLE_RATE, winstep=HOP / SAMPLE_RATE,
                        nfilt=MEL_BINS, nfft=NFFT, lowfreq=20, highfreq=SAMPLE_RATE / 2, preemph=0.0,
                        winfunc=_povey)
        # python_speech_features divides the power spectrum by NFFT; Kaldi does not
        out[f0:f1] = np.log(np.maximum(feat[: f1 - f0] * NFFT, floor))
    return out


def _dims(shape, name: str) -> tuple[int, ...]:
    """Static dims of a graph input, with the reference's value where a dim is symbolic."""
    default = _DEFAULT_SHAPES[name]
    if len(shape) != len(default) and not (name == "chunk" and len(shape) == 3):
        return default
    if name == "chunk" and len(shape) == 3:
        default = default[1:]
    return tuple(d if isinstance(d, int) and d > 0 else default[i] for i, d in enumerate(shape))


class WenetEncoder:
    """An onnxruntime session over the encoder graph, checked against the expected interface."""

    def __init__(self, path: "str | os.PathLike", device: "str | object" = "cpu"):
        import onnxruntime as ort

        self.path = Path(path)
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise SyncTalkError(f"{self.path} is not a loadable ONNX graph: {exc}") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        if set(INPUT_NAMES) - set(inputs):
            raise SyncTalkError(
                f"{self.path} is not the WeNet encoder the wenet features need: expected inputs "
                f"{', '.join(INPUT_NAMES)} (Ultralight-Digital-Human encoder.onnx), found {', '.join(inputs) or 'none'}"
            )
        self.output = self.session.get_outputs()[0].name
        self.chunk_shape = _dims(inputs["chunk"].shape, "chunk")
        self.chunk_frames = self.chunk_shape[-2]
        if self.chunk_shape[-1] != MEL_BINS:
            raise SyncTalkError(f"{self.path}: chunk input has {self.chunk_shape[-1]} bins, expected {MEL_BINS}")
        offset_type = np.int32 if "int32" in inputs["offset"].type else np.int64
        offset_shape = _dims(inputs["offset"].shape, "offset") if inputs["offset"].shape else ()
        self.fixed = {
            "offset": np.full(offset_shape, OFFSET, dtype=offset_type),
            "att_cache": np.zeros(_dims(inputs["att_cache"].shape, "att_cache"), dtype=np.float32),
            "cnn_cache": np.zeros(_dims(inputs["cnn_cache"].shape, "cnn_cache"), dtype=np.float32),
        }

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        """(chunk_frames, 80) fbank → the encoder's first output for it, batch dim removed."""
        feed = dict(self.fixed, chunk=chunk.reshape(self.chunk_shape).astype(np.float32, copy=False))
        return self.session.run([self.output], feed)[0][0]


def extract(audio: np.ndarray, num_frames: int, model_path: "str | os.PathLike", device: "str | object" = "cpu",
            update: Callable[[int], None] | None = None, frame_shape: tuple[int, ...] = (16, 512)) -> np.ndarray:
    """(num_frames, 16, 512) wenet features of 16 kHz audio that reaches past the last frame."""
    enc = WenetEncoder(model_path, device)
    padded = np.concatenate([np.zeros(LEAD_FRAMES * HOP, dtype=np.float32), np.asarray(audio, np.float32)])
    feats = log_fbank(padded)
    need = FRAME_STEP * (num_frames - 1) + enc.chunk_frames
    if feats.shape[0] < need:
        # silence's log energy, not zeros: a zero would be a loud frame in the log domain
        pad = np.full((need - feats.shape[0], MEL_BINS), np.log(np.finfo(np.float32).eps), np.float32)
        feats = np.concatenate([feats, pad])
    out = np.empty((num_frames, *frame_shape), dtype=np.float32)
    step = 50
    for i in range(num_frames):
        y = enc(feats[FRAME_STEP * i: FRAME_STEP * i + enc.chunk_frames])
        if i == 0 and tuple(y.shape) != tuple(frame_shape):
            raise SyncTalkError(f"{model_path}: the encoder gives {tuple(y.shape)} per chunk, the wenet "
                                f"features need {tuple(frame_shape)}")
        out[i] = y
        if update and (i + 1) % step == 0:
            update(step)
    if update and num_frames % step:
        update(num_frames % step)
    return out
