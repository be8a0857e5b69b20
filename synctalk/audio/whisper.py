"""`whisper`: the last hidden state of a Whisper encoder at 50 Hz, two states per video frame.

Where the model comes from, first match wins:
* `--whisper_model ID_OR_DIR`: a Hugging Face id, a transformers `save_pretrained` folder, or a
  faster-whisper / CTranslate2 folder (`model.bin` + `config.json`, run by the `ctranslate2` package);
* `<models dir>/whisper/`, either kind of folder, in the app's models search order;
* the default id `openai/whisper-tiny` through transformers' own cache (fetched when online).

Input: Whisper's log-mel (n_fft 400, hop 160, Slaney filters of 80 bins, or 128 for large-v3, as the
folder's preprocessor_config.json says; log10, floor at max − 8, (x + 4) / 4), computed once over the
whole clip so that every window shares one normalisation. Mel frame j is centred on sample 160·j and
the encoder's stride-2 convolution maps frames 2t, 2t+1 to state t: state t covers samples
[320·t, 320·t + 320) and video frame i (640 samples) owns states 2i and 2i+1.

The encoder takes exactly 30 s (3000 mel frames → 1500 states). Longer audio runs in windows of 30 s
that overlap by 2·CONTEXT_ROWS states; each window contributes its middle (the first its start too),
and neighbouring windows hand over with a linear cross-fade of FADE_ROWS states centred on the join,
never nearer than CONTEXT_ROWS − FADE_ROWS/2 states to a window's edge. The last window is padded
with digital silence, as Whisper's own 30 s padding is.

Whisper's states carry their position in the window as much as the sound: on whisper-tiny.en over
real speech, the same audio encoded at another place in the window changes its states by about 0.8
of a state's norm, and a hard cut between windows jumps by three median row-to-row steps. So the
states of a window of silence (every bin at the clip's floor) are subtracted position by position:
the sound's part stays, the positional part (which says nothing about the mouth) mostly goes, and a
silent stretch gives rows near zero. Measured with benchmarks/whisper_features.py (see README).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import SyncTalkError
from ..weights import hf_cached, hub_offline

DEFAULT_ID = "openai/whisper-tiny"
FOLDER = "whisper"  # <models dir>/whisper/
HOP = 160  # samples per mel frame
N_FFT = 400
STRIDE = 2 * HOP  # samples per encoder state (50 Hz)
CONTEXT_ROWS = 250  # states (5 s) of context kept on each side of a window's middle
FADE_ROWS = 100  # states (2 s) over which one window's states hand over to the next's
RIGHT_CONTEXT = 16000  # samples past the last video frame used as right context
CT2_EXTRA = "whisper-ct2"  # the setup.py extra that brings ctranslate2


@dataclass(frozen=True)
class WhisperSource:
    """Where a whisper model is: a folder of either kind, or a Hugging Face id."""

    kind: str  # "transformers" or "ctranslate2"
    where: str  # folder path or hub id
    is_folder: bool


def folder_kind(path: "str | os.PathLike") -> str | None:
    """'ctranslate2' or 'transformers' for a whisper model folder, None for anything else."""
    path = Path(path)
    if not (path / "config.json").is_file():
        return None
    if (path / "model.bin").is_file():  # CTranslate2's one weights file (transformers never writes it)
        return "ctranslate2"
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return "transformers" if isinstance(config, dict) and config.get("model_type") == "whisper" else None


def _looks_like_path(text: str) -> bool:
    # a hub id is "name" or "owner/name"; anything with more parts, or rooted, is a folder
    return text.startswith((".", "~")) or os.path.isabs(text) or text.count("/") > 1 or "\\" in text


def _search_folders(models_dir) -> list[Path]:
    from ..weights import search_dirs

    return [d / FOLDER for d in search_dirs(models_dir)]


def locate(whisper_model: "str | os.PathLike | None" = None,
           models_dir: "str | os.PathLike | None" = None) -> WhisperSource:
    """The whisper model the app would use (nothing is loaded); a clear error for a bad explicit folder."""
    if whisper_model:
        text = str(whisper_model)
        path = Path(text).expanduser()
        if path.exists():
            kind = folder_kind(path)
            if kind is None:
                raise SyncTalkError(
                    f"--whisper_model {text}: {path} is not a whisper model folder (needs config.json with "
                    f"model.bin for CTranslate2/faster-whisper, or a transformers whisper config and weights)")
            return WhisperSource(kind, str(path.resolve()), True)
        if _looks_like_path(text) or isinstance(whisper_model, os.PathLike):
            raise SyncTalkError(f"--whisper_model {text}: no such folder ({path.absolute()})\n"
                                f"Offline alternative: --asr_model mel")
        return WhisperSource("transformers", text, False)
    for cand in _search_folders(models_dir):
        kind = folder_kind(cand)
        if kind is not None:
            return WhisperSource(kind, str(cand.resolve()), True)
        if cand.is_dir():  # a half-copied folder must not send the run to another model
            raise SyncTalkError(f"{cand} is not a whisper model folder (needs config.json with model.bin for "
                                f"CTranslate2/faster-whisper, or a transformers whisper config and weights): "
                                f"complete it or remove it")
    return WhisperSource("transformers", DEFAULT_ID, False)


def _not_found(model_id: str, models_dir, why: str) -> SyncTalkError:
    tried = "\n".join(f"  {d}" for d in _search_folders(models_dir))
    return SyncTalkError(
        f"Whisper model {model_id!r} is not available ({why}). Looked for a local copy in:\n{tried}\n"
        f"and in the Hugging Face cache. Give a folder with --whisper_model DIR (a transformers "
        f"save_pretrained folder or a faster-whisper/CTranslate2 folder), or put one into one of those "
        f"whisper/ folders.\nOffline alternative: --asr_model mel"
    )


def whisper_location(whisper_model=None, models_dir=None) -> tuple[str, bool]:
    """(where the model is or would be, present?) without loading it."""
    src = locate(whisper_model, models_dir)
    if src.is_folder:
        return src.where, True
    return f"{src.where} (Hugging Face cache)", hf_cached(src.where) is not None


def check_available(whisper_model=None, models_dir=None) -> None:
    """Raise the clear missing-model error now when the model certainly cannot be had."""
    src = locate(whisper_model, models_dir)
    if src.kind == "ctranslate2":
        _import_ct2(src.where)
    if not src.is_folder and hf_cached(src.where) is None and hub_offline():
        raise _not_found(src.where, models_dir, "not in the cache and the Hugging Face hub is set offline")


def download_whisper(models_dir: "str | os.PathLike | None" = None, model_id: str | None = None,
                     progress: bool = True) -> str:
    """Fetch a whisper model (default DEFAULT_ID): into `<models_dir>/whisper/` when a folder is given
    (portable to offline machines, found there without --whisper_model), else into transformers'
    cache. Returns where it is."""
    import transformers
    from transformers import WhisperFeatureExtractor, WhisperModel

    model_id = model_id or DEFAULT_ID
    if not progress:
        transformers.logging.disable_progress_bar()
    try:
        fe = WhisperFeatureExtractor.from_pretrained(model_id)
        model = WhisperModel.from_pretrained(model_id)
    except Exception as exc:  # noqa: BLE001 - network, auth and file errors alike
        raise _not_found(model_id, models_dir, f"download failed: {type(exc).__name__}: {exc}") from None
    if models_dir:
        import shutil

        # written beside under another name, then renamed: a killed download never looks like a model
        dest = Path(models_dir) / FOLDER
        tmp = dest.with_name(f".{FOLDER}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        fe.save_pretrained(tmp)
        model.save_pretrained(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        return str(dest)
    return whisper_location(model_id)[0]


# ------------------------------------------------------------------------------------------------
# loading


class WhisperEncoder:
    """A loaded encoder: its log-mel filters and `encode(mel (B, n_mels, 3000)) -> (B, 1500, D)` numpy."""

    def __init__(self, source: WhisperSource, mel_filters: np.ndarray, encode: Callable[[np.ndarray], np.ndarray],
                 window_frames: int = 3000, module=None):
        self.source = source
        self.mel_filters = np.asarray(mel_filters, dtype=np.float32)  # (n_fft // 2 + 1, n_mels)
        self.n_mels = int(self.mel_filters.shape[1])
        self.window_frames = int(window_frames)
        self.encode = encode
        self.module = module  # the torch encoder (transformers back end), else None

    @property
    def window_rows(self) -> int:
        """Encoder states per window (1500 = 30 s)."""
        return self.window_frames // 2


def _feature_extractor(where: str, n_mels: int, **kw):
    """The folder's WhisperFeatureExtractor, or the standard one for `n_mels` bins when it has none."""
    from transformers import WhisperFeatureExtractor

    try:
        fe = WhisperFeatureExtractor.from_pretrained(where, **kw)
    except (OSError, ValueError):
        fe = WhisperFeatureExtractor(feature_size=n_mels)
    if fe.feature_size != n_mels or fe.n_fft != N_FFT or fe.hop_length != HOP or fe.sampling_rate != 16000:
        raise SyncTalkError(f"{where}: preprocessor_config.json asks for {fe.feature_size} mel bins, n_fft {fe.n_fft}, "
                            f"hop {fe.hop_length} at {fe.sampling_rate} Hz; the model takes {n_mels} bins "
                            f"(n_fft {N_FFT}, hop {HOP}, 16000 Hz)")
    return fe


def _load_transformers(src: WhisperSource, models_dir, device) -> WhisperEncoder:
    import torch
    import transformers
    from transformers import WhisperModel

    verbosity = transformers.logging.get_verbosity()
    bars = transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # the unused decoder's notices are noise here
    transformers.logging.disable_progress_bar()
    try:
        if src.is_folder:
            try:
                model = WhisperModel.from_pretrained(src.where)
            except (OSError, ValueError) as exc:
                raise SyncTalkError(f"{src.where} is not a usable whisper folder (needs config.json and the "
                                    f"weights): {exc}") from None
            local_kw: dict = {}
        else:
            local_kw = {"local_files_only": True}
            try:
                model = WhisperModel.from_pretrained(src.where, local_files_only=True)
            except OSError:
                if hub_offline():
                    raise _not_found(src.where, models_dir,
                                     "not in the cache and the Hugging Face hub is set offline") from None
                try:
                    model = WhisperModel.from_pretrained(src.where)
                    local_kw = {}
                except Exception as exc:  # noqa: BLE001 - network, auth and file errors alike
                    raise _not_found(src.where, models_dir,
                                     f"not cached, and fetching it failed: {type(exc).__name__}") from None
        fe = _feature_extractor(src.where, int(model.config.num_mel_bins), **local_kw)
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()
    encoder = model.get_encoder().eval().to(device)
    del model  # the decoder is not needed
    frames = int(encoder.config.max_source_positions) * 2

    def encode(mel: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32)).to(device)
            return encoder(x).last_hidden_state.float().cpu().numpy()

    return WhisperEncoder(src, fe.mel_filters, encode, frames, module=encoder)


def _import_ct2(where: str):
    try:
        import ctranslate2
    except ImportError:
        raise SyncTalkError(f"{where} is a CTranslate2 (faster-whisper) model: it needs the ctranslate2 package "
                            f"(pip install ctranslate2, or the synctalk[{CT2_EXTRA}] extra)\n"
                            f"Offline alternative: --asr_model mel") from None
    return ctranslate2


def _load_ct2(src: WhisperSource, device) -> WhisperEncoder:
    import torch

    ctranslate2 = _import_ct2(src.where)
    dev = torch.device(device)
    on_gpu = dev.type == "cuda"
    try:
        model = ctranslate2.models.Whisper(
            src.where, device="cuda" if on_gpu else "cpu", device_index=dev.index or 0,
            # float32 on a CPU (a float16 file is converted either way; say so instead of warning)
            compute_type="default" if on_gpu else "float32",
            intra_threads=0 if on_gpu else max(1, torch.get_num_threads()))
    except (RuntimeError, ValueError, OSError) as exc:
        raise SyncTalkError(f"{src.where} is not a usable CTranslate2 whisper folder: {exc}") from None
    fe = _feature_extractor(src.where, int(model.n_mels))

    def encode(mel: np.ndarray) -> np.ndarray:
        view = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel, dtype=np.float32))
        return np.asarray(model.encode(view, to_cpu=True), dtype=np.float32)

    return WhisperEncoder(src, fe.mel_filters, encode, fe.nb_max_frames)


def load_whisper(whisper_model: "str | os.PathLike | None" = None, models_dir: "str | os.PathLike | None" = None,
                 device: "str | object" = "cpu") -> WhisperEncoder:
    """The whisper encoder `whisper_model` (or the models folder's, or the default id) on `device`."""
    src = locate(whisper_model, models_dir)
    if src.kind == "ctranslate2":
        return _load_ct2(src, device)
    return _load_transformers(src, models_dir, device)


# ------------------------------------------------------------------------------------------------
# features


def log_mel(audio: np.ndarray, mel_filters: np.ndarray, device: "str | object" = "cpu",
            chunk_frames: int = 6000) -> "np.ndarray":
    """Whisper's normalised log-mel of the whole clip: (n_mels, len(audio) // 160) float32.

    The STFT runs over `chunk_frames` frames (60 s) at a time, so memory stays flat however long
    the clip is; the max − 8 floor and the scaling apply once, over the whole clip."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(device)
    frames = x.numel() // HOP  # a centred STFT gives one frame more; Whisper drops the last
    # the centred STFT's reflect padding, once for the whole clip: the chunks then need none
    padded = F.pad(x[None, None], (N_FFT // 2, N_FFT // 2), mode="reflect")[0, 0]
    window = torch.hann_window(N_FFT, device=x.device)
    filters = torch.from_numpy(np.asarray(mel_filters, dtype=np.float32)).to(x.device).T
    log = torch.empty((filters.shape[0], frames), dtype=torch.float32, device=x.device)
    for a in range(0, frames, chunk_frames):
        b = min(a + chunk_frames, frames)
        spec = torch.stft(padded[a * HOP : (b - 1) * HOP + N_FFT], N_FFT, HOP, window=window, center=False,
                          return_complex=True)
        log[:, a:b] = torch.clamp(filters @ (spec.abs() ** 2), min=1e-10).log10()
    log = torch.maximum(log, log.max() - 8.0)
    return ((log + 4.0) / 4.0).cpu().numpy()


def window_plan(rows: int, window: int, context: int, phase: int = 0) -> list[tuple[int, int, int]]:
    """(window start, first kept, end kept) states covering [0, rows): windows of `window` states that
    keep `window - 2·context` states in their middle (the first keeps its start too, less `phase`
    states, which only moves the joins)."""
    keep = window - 2 * context
    if context < 0 or keep < 1 or not 0 <= phase < keep:
        raise ValueError(f"context {context} and phase {phase} do not fit a {window}-state window")
    plan, lo = [], 0
    while lo < rows:
        start = max(lo - context, 0)
        hi = min(start + window - context - (phase if lo == 0 else 0), rows)
        plan.append((start, lo, hi))
        lo = hi
    return plan


def _fade_weights(start: int, lo: int, hi: int, rows: int, window: int, fade: int) -> np.ndarray:
    """Weights of one window's states: 1 over [lo, hi), linear ramps of `fade` states centred on the
    joins (none at the clip's ends); the ramps of neighbouring windows add up to 1."""
    r = np.arange(start, start + window, dtype=np.float64) + 0.5
    w = np.ones(window)
    half = fade / 2
    if fade > 0 and lo > 0:
        w = np.minimum(w, np.clip((r - (lo - half)) / fade, 0.0, 1.0))
    elif lo > 0:
        w[r < lo] = 0.0
    if fade > 0 and hi < rows:
        w = np.minimum(w, np.clip(((hi + half) - r) / fade, 0.0, 1.0))
    elif hi < rows:
        w[r >= hi] = 0.0
    w[r >= rows] = 0.0
    return w.astype(np.float32)


def silence_baseline(encoder: WhisperEncoder, floor: float) -> np.ndarray:
    """(window_rows, D): the encoder's states for a window of silence (every mel bin at `floor`)."""
    return encoder.encode(np.full((1, encoder.n_mels, encoder.window_frames), floor, dtype=np.float32))[0]


def extract(audio: np.ndarray, num_frames: int, encoder: WhisperEncoder, device: "str | object" = "cpu",
            update: Callable[[int], None] | None = None, context_rows: int = CONTEXT_ROWS,
            fade_rows: int = FADE_ROWS, baseline: bool = True, phase: int = 0) -> np.ndarray:
    """(num_frames, 2, D) float32 from 16 kHz audio (rows past its end are features of silence).

    `baseline`: subtract the states of a silent window, position by position (see the module notes);
    `fade_rows`: the cross-fade at each join; `phase` moves the joins (for measurements)."""
    need = 2 * num_frames
    width = encoder.window_rows
    if not 0 <= fade_rows <= 2 * context_rows:
        raise ValueError(f"a cross-fade of {fade_rows} states needs at least {fade_rows // 2} states of context")
    plan = window_plan(need, width, context_rows, phase)
    # zeros up to the end of the last window; they add nothing to the clip's maximum
    total = max(audio.size, (plan[-1][0] + width) * STRIDE)
    padded = np.zeros(total, dtype=np.float32)
    padded[: audio.size] = audio
    mel = log_mel(padded, encoder.mel_filters, device)
    # the level digital silence reaches after the normalisation (max - 8 in log10, or the 1e-10 clamp)
    floor = max(float(mel.max()) - 2.0, -1.5)
    base = silence_baseline(encoder, floor) if baseline else 0.0
    out: np.ndarray | None = None
    done = 0
    for start, lo, hi in plan:
        piece = mel[:, 2 * start : 2 * start + encoder.window_frames]
        states = encoder.encode(piece[None])[0]
        if states.shape[0] != width:
            raise SyncTalkError(f"{encoder.source.where}: the encoder gave {states.shape[0]} states for a "
                                f"{encoder.window_frames}-frame window, expected {width}")
        if out is None:
            out = np.zeros((need, states.shape[1]), dtype=np.float32)
        w = _fade_weights(start, lo, hi, need, width, fade_rows)
        end = min(start + width, need)
        out[start:end] += w[: end - start, None] * (states - base)[: end - start]
        if update:
            update(hi // 2 - done)
            done = hi // 2
    assert out is not None
    return out.reshape(num_frames, 2, out.shape[1])
