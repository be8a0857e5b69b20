"""Audio features computed as the audio arrives: each new sample is processed once, the past never again.

Frame k of a stream is tied to audio sample k·640 (25 fps at 16 kHz). The network's input for frame k
is the window of feature rows [k - left, k - left + window) (the audio registry's numbers), so frame k
can be made only once row k + window - left - 1 exists: that row's audio, plus the extractor's own right
context, is the least delay a stream can have (`min_delay_ms`).

The `mel` features are computed exactly incrementally (the same STFT frames, filterbank and
normalisation as the file path, frame by frame). Features of pretrained encoders (`ave`, `wenet`,
`hubert`) are computed on a bounded slice of recent audio around the new rows (a fixed left context,
never the whole past), each encoder loaded once per process.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..audio.registry import get_spec
from ..constants import FPS, SAMPLE_RATE

HOP = SAMPLE_RATE // FPS  # 640 samples per video frame
# left context (frames) of the slice the pretrained encoders are run on: ave's window starts one frame
# before its row, wenet's chunk 8 frames (320 ms) before; HuBERT attends to everything, a second will do
_SLICE_LEFT = {"ave": 4, "wenet": 8, "hubert": 25}
# rows per encoder run: HuBERT's slice is long, so it runs every 5 frames (adds up to 160 ms)
_SLICE_STEP = {"ave": 1, "wenet": 1, "hubert": 5}
# a slice starts on a multiple of this many frames, so its STFT frames fall where the whole file's do
# (ave's mel hop is 200 samples: 5 video frames = 16 mel frames; fbank and HuBERT hops divide 640)
_SLICE_ALIGN = {"ave": 5, "wenet": 1, "hubert": 1}


def right_context_samples(asr: str) -> int:
    """Samples past the end of a row's own audio that the extractor reads to make that row."""
    if asr == "mel":
        from ..audio.melspec import MEL_100HZ

        # row i = mel frames 4i..4i+3; mel frame j is centred on 160·j and reads n_fft/2 samples past it
        last_centre = (HOP // MEL_100HZ.hop - 1) * MEL_100HZ.hop  # from the row's first sample
        return max(0, last_centre + MEL_100HZ.n_fft // 2 - HOP)
    from ..audio import ave, hubert, wenet

    return {"ave": ave.RIGHT_CONTEXT, "hubert": hubert.RIGHT_CONTEXT, "wenet": wenet.RIGHT_CONTEXT}[asr]


def lookahead_frames(asr: str) -> int:
    """Rows after frame k's own row that frame k's audio window reads (window - left - 1), plus its own."""
    spec = get_spec(asr)
    return spec.window - spec.left


def min_delay_ms(asr: str) -> float:
    """Least delay from a frame's timestamp (its first audio sample) to the moment its window is complete
    (for encoders run every few frames, the worst case)."""
    samples = (lookahead_frames(asr) + _SLICE_STEP.get(asr, 1) - 1) * HOP + right_context_samples(asr)
    return 1000.0 * samples / SAMPLE_RATE


# the audio models a stream can be fed with: their features can be made from the audio heard so far
# (whisper's encoder takes whole 30 s windows and is not made incrementally here yet)
STREAMED_MODELS = ("mel", "ave", "wenet", "hubert")


def latency_table() -> dict[str, dict[str, float]]:
    """Per streamable audio model: look-ahead frames, the extractor's right context and the least delay (ms)."""
    return {a: {"lookahead_frames": lookahead_frames(a), "right_context_ms": 1000.0 * right_context_samples(a) / SAMPLE_RATE,
                "min_delay_ms": min_delay_ms(a)} for a in STREAMED_MODELS}


class _MelRows:
    """The `mel` rows of a growing stream, exactly as the file path computes them (STFT frame by frame)."""

    def __init__(self) -> None:
        from ..audio.melspec import MEL_100HZ, mel_filterbank

        c = MEL_100HZ
        self.cfg = c
        self.fb = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax).astype(np.float64)
        win = np.hanning(c.win + 1)[:-1]  # periodic Hann, as torch.hann_window(periodic=True)
        pad = (c.n_fft - c.win) // 2
        self.window = np.zeros(c.n_fft)
        self.window[pad:pad + c.win] = win
        self.per_row = HOP // c.hop  # 4 mel frames per video frame
        # the padded stream: n_fft/2 zeros, then the pre-emphasised audio (torch.stft center=True)
        self.buf = np.zeros(c.n_fft // 2, dtype=np.float64)
        self.buf_start = 0  # index (in padded coordinates) of buf[0]
        self.last = None  # last raw sample, for the pre-emphasis across chunks
        self.next_mel = 0  # next mel frame to compute
        self.pending: list[np.ndarray] = []  # mel frames of the row being filled

    def push(self, audio: np.ndarray, final: bool = False) -> list[np.ndarray]:
        """Add samples; return the rows (4, 80) completed by them (`final`: nothing more will come)."""
        c = self.cfg
        x = np.asarray(audio, dtype=np.float64)
        if x.size == 0:
            return []
        y = x.copy()
        y[1:] -= c.preemphasis * x[:-1]
        if self.last is not None:
            y[0] -= c.preemphasis * self.last
        self.last = float(x[-1])
        self.buf = np.concatenate([self.buf, y])
        end = self.buf_start + self.buf.size  # padded samples available
        n_new = (end - c.n_fft) // c.hop + 1 - self.next_mel if end >= c.n_fft else 0
        rows: list[np.ndarray] = []
        if n_new <= 0:
            return rows
        starts = (self.next_mel + np.arange(n_new)) * c.hop - self.buf_start
        frames = self.buf[starts[:, None] + np.arange(c.n_fft)[None, :]] * self.window
        mag = np.abs(np.fft.rfft(frames, axis=1))  # (n, bins)
        mel = mag @ self.fb.T
        min_level = 10.0 ** (c.min_level_db / 20.0)
        db = 20.0 * np.log10(np.maximum(mel, min_level)) - c.ref_level_db
        m = c.max_abs
        norm = np.clip((2 * m) * (db - c.min_level_db) / (-c.min_level_db) - m, -m, m).astype(np.float32)
        self.next_mel += n_new
        self.pending.extend(norm)
        while len(self.pending) >= self.per_row:
            rows.append(np.stack(self.pending[:self.per_row]))
            del self.pending[:self.per_row]
        keep_from = self.next_mel * c.hop - self.buf_start  # the next frame's first sample
        if keep_from > 0:
            self.buf = self.buf[keep_from:]
            self.buf_start += keep_from
        return rows


_ENCODERS: dict[tuple[str, str, str], Any] = {}
_ENCODERS_LOCK = threading.Lock()


def loaded_encoder(asr: str, models_dir: Any, device: Any) -> Any:
    """The pretrained audio encoder of `asr`, loaded once per process and device (streams share it)."""
    key = (asr, str(models_dir), str(device))
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            from ..weights import resolve_model_file

            if asr == "ave":
                from ..audio import ave

                _ENCODERS[key] = ave.load_encoder(resolve_model_file("ave", models_dir), device)
            elif asr == "hubert":
                from ..audio import hubert

                _ENCODERS[key] = hubert.load_hubert(models_dir, device)
            elif asr == "wenet":
                from ..audio import wenet

                _ENCODERS[key] = wenet.WenetEncoder(resolve_model_file("wenet", models_dir), device)
            else:
                raise NotImplementedError(asr)
        return _ENCODERS[key]


def encoder_rows(asr: str, audio: np.ndarray, num_frames: int, encoder: Any, device: Any) -> np.ndarray:
    """Rows of a pretrained encoder for `audio` fitted as the file path fits it, with a loaded encoder.

    The file path's extractors load their model on every call, which a stream (a call every frame)
    cannot afford; ave and wenet are run here on the same pieces of their modules (mel/fbank, window
    starts, the encoder), hubert through its own extract.
    """
    import torch

    from ..audio.features import fit_audio

    audio = fit_audio(audio, num_frames, right_context_samples(asr))
    if asr == "hubert":
        from ..audio import hubert

        fe, model = encoder
        return hubert.extract(audio, num_frames, fe, model, str(device)).astype(np.float32)
    if asr == "ave":
        from ..audio import ave
        from ..audio.melspec import WAV2LIP_MEL, log_mel

        mel = log_mel(audio, WAV2LIP_MEL, device=device, as_tensor=True)
        if mel.shape[0] < ave.MEL_WINDOW:
            mel = torch.nn.functional.pad(mel, (0, 0, 0, ave.MEL_WINDOW - mel.shape[0]), value=-WAV2LIP_MEL.max_abs)
        starts = torch.from_numpy(ave.window_starts(num_frames, mel.shape[0])).to(mel.device)
        win = mel[starts[:, None] + torch.arange(ave.MEL_WINDOW, device=mel.device)[None, :]]
        with torch.inference_mode():
            return encoder(win.transpose(1, 2).unsqueeze(1)).float().cpu().numpy()
    if asr == "wenet":
        from ..audio import wenet

        padded = np.concatenate([np.zeros(wenet.LEAD_FRAMES * wenet.HOP, dtype=np.float32), audio])
        feats = wenet.log_fbank(padded)
        need = wenet.FRAME_STEP * (num_frames - 1) + encoder.chunk_frames
        if feats.shape[0] < need:
            pad = np.full((need - feats.shape[0], wenet.MEL_BINS), np.log(np.finfo(np.float32).eps), np.float32)
            feats = np.concatenate([feats, pad])
        step = wenet.FRAME_STEP
        return np.stack([encoder(feats[step * i:step * i + encoder.chunk_frames]) for i in range(num_frames)])
    raise NotImplementedError(asr)


class _SliceRows:
    """Rows of a pretrained encoder, each computed once from a bounded slice of recent audio."""

    def __init__(self, asr: str, models_dir: Any, device: Any) -> None:
        self.asr = asr
        self.device = device
        self.encoder = loaded_encoder(asr, models_dir, device)
        self.left = _SLICE_LEFT[asr]
        self.step = _SLICE_STEP[asr]
        self.align = _SLICE_ALIGN[asr]
        self.right = right_context_samples(asr)
        self.audio = np.zeros(0, dtype=np.float32)
        self.audio_start = 0  # sample index of audio[0]
        self.next_row = 0

    def push(self, audio: np.ndarray, final: bool = False) -> list[np.ndarray]:
        """Add samples; return the rows completed by them (at least `step` at a time until the end)."""
        self.audio = np.concatenate([self.audio, np.asarray(audio, dtype=np.float32)])
        end = self.audio_start + self.audio.size
        last = (end - self.right) // HOP  # rows [next_row, last) have all their audio
        if last <= self.next_row or (last - self.next_row < self.step and not final):
            return []
        first = max(0, self.next_row - self.left)
        first -= first % self.align
        piece = self.audio[first * HOP - self.audio_start:]
        rows = list(encoder_rows(self.asr, piece, last - first, self.encoder, self.device)[self.next_row - first:])
        self.next_row = last
        keep = max(0, self.next_row - self.left)
        drop = max(0, (keep - keep % self.align) * HOP - self.audio_start)
        self.audio = self.audio[drop:]
        self.audio_start += drop
        return rows


class StreamFeatures:
    """Feature rows of one audio stream, with the zero padding past its end that the file path uses.

    `push` adds 16 kHz mono float samples; `ready_frames()` says up to which frame every window is
    complete; `window(k)` is frame k's (window, *frame_shape) rows. Rows no window needs any more are
    dropped, so memory stays flat however long the stream runs.
    """

    def __init__(self, asr: str, *, models_dir: Any = None, device: Any = "cpu") -> None:
        if asr not in STREAMED_MODELS:
            from ..errors import SyncTalkError

            raise SyncTalkError(f"live streaming takes avatars trained on {', '.join(STREAMED_MODELS)} features; "
                                f"this one uses {asr!r} (render files with synctalk infer instead)")
        self.spec = get_spec(asr)
        self.asr = asr
        self._rows = _MelRows() if asr == "mel" else _SliceRows(asr, models_dir, device)
        self.samples = 0  # samples received
        self.ended_at: int | None = None  # frame count once the stream has ended
        self._store = np.zeros((0, *self.spec.frame_shape), dtype=np.float32)
        self._store_start = 0  # row index of _store[0]
        self.rows_made = 0

    def push(self, audio: np.ndarray) -> None:
        """Add samples (after `end` this is an error of the caller)."""
        if self.ended_at is not None:
            raise RuntimeError("stream already ended")
        audio = np.asarray(audio, dtype=np.float32)
        self.samples += audio.size
        self._append(self._rows.push(audio))

    def end(self) -> int:
        """The stream is over: pad with silence so its last frame's rows exist; return its frame count."""
        if self.ended_at is None:
            count = -(-self.samples // HOP)
            # the file path fits the audio to count·640 + right context, so the last rows see silence
            need = count * HOP + right_context_samples(self.asr) - self.samples
            self._append(self._rows.push(np.zeros(max(need, 0), dtype=np.float32), final=True))
            self.ended_at = count
        return self.ended_at

    def _append(self, rows: list[np.ndarray]) -> None:
        if rows:
            self._store = np.concatenate([self._store, np.stack(rows).astype(np.float32)])
            self.rows_made += len(rows)

    def ready_frames(self) -> int:
        """Frames 0..n-1 have complete windows (all of them, once the stream has ended)."""
        if self.ended_at is not None:
            return self.ended_at
        return max(0, self.rows_made - (self.spec.window - self.spec.left) + 1)

    def window(self, k: int) -> np.ndarray:
        """Rows [k - left, k - left + window) of frame k, zero past either end (as the file path)."""
        s = self.spec
        lo, hi = k - s.left, k - s.left + s.window
        out = np.zeros((s.window, *s.frame_shape), dtype=np.float32)
        limit = self.ended_at if self.ended_at is not None else self.rows_made
        a, b = max(lo, self._store_start), min(hi, limit, self._store_start + len(self._store))
        if b > a:
            out[a - lo:b - lo] = self._store[a - self._store_start:b - self._store_start]
        return out

    def forget_before(self, k: int) -> None:
        """Frame k is the oldest still to be made: drop rows no later window reads."""
        drop = k - self.spec.left - self._store_start
        if drop > 0:
            self._store = self._store[drop:]
            self._store_start += drop
