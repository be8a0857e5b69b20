"""`hubert`: the last hidden state of a HuBERT model (transformers) at 50 Hz, two states per video frame.

The model comes from `<models dir>/hubert/` when such a folder exists (a `save_pretrained` folder with
config.json and preprocessor_config.json), else from the Hugging Face id through transformers' own
cache. HuBERT's convolutional front end maps samples [320·t, 320·t + 400) to state t, so a clip of L
samples gives (L - 80) // 320 states and video frame i (40 ms = 640 samples) owns states 2i and 2i+1.
Long audio runs in overlapping chunks: each chunk carries some seconds of context on both sides and
keeps only its middle, so memory stays flat however long the file is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import SyncTalkError
from ..weights import hf_cached, hub_offline, search_dirs

DEFAULT_ID = "facebook/hubert-large-ls960-ft"
HIDDEN = 1024
STRIDE = 320  # samples per state
RECEPTIVE = 400  # samples one state sees
CHUNK_STATES = 500  # states kept per chunk (10 s)
CONTEXT_STATES = 50  # states of context on each side of a chunk (1 s)
RIGHT_CONTEXT = 16000  # samples past the last video frame used as right context


def _local_dir(models_dir: "str | os.PathLike | None") -> Path | None:
    for d in search_dirs(models_dir):
        cand = d / "hubert"
        if (cand / "config.json").is_file():
            return cand
    return None


def hubert_location(models_dir: "str | os.PathLike | None" = None) -> tuple[str, bool]:
    """(where the model is or would be, present?) for `synctalk models list`."""
    local = _local_dir(models_dir)
    if local is not None:
        return str(local), True
    cached = hf_cached(DEFAULT_ID)
    if cached is not None:
        return str(cached), True
    return f"{DEFAULT_ID} (Hugging Face cache)", False


def _not_found(models_dir, why: str) -> SyncTalkError:
    tried = "\n".join(f"  {d / 'hubert'}" for d in search_dirs(models_dir))
    return SyncTalkError(
        f"HuBERT model {DEFAULT_ID!r} is not available ({why}). Looked for a local copy in:\n{tried}\n"
        f"and in the Hugging Face cache. Download it with: synctalk models download hubert "
        f"(or save_pretrained it into one of those hubert/ folders)\n"
        f"Offline alternative: --asr_model mel"
    )


def load_hubert(models_dir: "str | os.PathLike | None" = None, device: "str | object" = "cpu"):
    """(feature_extractor, model) in eval mode on `device`."""
    import transformers
    from transformers import HubertModel, Wav2Vec2FeatureExtractor

    local = _local_dir(models_dir)
    verbosity = transformers.logging.get_verbosity()
    bars = transformers.logging.is_progress_bar_enabled()
    # the CTC head of the -ft checkpoint is unused here; its "weights not used" notice is noise, and
    # loading takes seconds: the features' own progress bar is the one that matters
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        if local is not None:
            try:
                fe = Wav2Vec2FeatureExtractor.from_pretrained(local)
                model = HubertModel.from_pretrained(local)
            except (OSError, ValueError) as exc:
                raise SyncTalkError(f"{local} is not a usable HuBERT folder (needs config.json, "
                                    f"preprocessor_config.json and the weights): {exc}") from None
        else:
            try:
                fe = Wav2Vec2FeatureExtractor.from_pretrained(DEFAULT_ID, local_files_only=True)
                model = HubertModel.from_pretrained(DEFAULT_ID, local_files_only=True)
            except OSError:
                if hub_offline():
                    raise _not_found(models_dir, "not in the cache and the Hugging Face hub is set offline") from None
                try:
                    fe = Wav2Vec2FeatureExtractor.from_pretrained(DEFAULT_ID)
                    model = HubertModel.from_pretrained(DEFAULT_ID)
                except Exception as exc:  # noqa: BLE001 - network, auth and file errors alike
                    raise _not_found(models_dir, f"not cached, and fetching it failed: {type(exc).__name__}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()
    if model.config.hidden_size != HIDDEN:
        raise SyncTalkError(f"the HuBERT model has hidden size {model.config.hidden_size}; the hubert features "
                            f"need {HIDDEN} (facebook/hubert-large-ls960-ft or a model of the same width)")
    return fe, model.eval().to(device)


def download_hubert(models_dir: "str | os.PathLike | None" = None, progress: bool = True) -> str:
    """Fetch the HuBERT model: into `<models_dir>/hubert/` when a folder is given (portable to offline
    machines), else into transformers' cache. Returns where it is."""
    import transformers
    from transformers import HubertModel, Wav2Vec2FeatureExtractor

    if not progress:
        transformers.logging.disable_progress_bar()
    try:
        fe = Wav2Vec2FeatureExtractor.from_pretrained(DEFAULT_ID)
        model = HubertModel.from_pretrained(DEFAULT_ID)
    except Exception as exc:  # noqa: BLE001
        raise _not_found(models_dir, f"download failed: {type(exc).__name__}: {exc}") from None
    if models_dir:
        dest = Path(models_dir) / "hubert"
        fe.save_pretrained(dest)
        model.save_pretrained(dest)
        return str(dest)
    return hubert_location(None)[0]


def num_states(num_samples: int) -> int:
    """HuBERT states for a clip of `num_samples` samples."""
    return max(0, (num_samples - (RECEPTIVE - STRIDE)) // STRIDE)


def extract(audio: np.ndarray, num_frames: int, fe, model, device: "str | object" = "cpu",
            update: Callable[[int], None] | None = None, chunk_states: int = CHUNK_STATES,
            context_states: int = CONTEXT_STATES) -> np.ndarray:
    """(num_frames, 2, 1024) from 16 kHz audio long enough for 2·num_frames states."""
    import torch

    need = 2 * num_frames
    if num_states(audio.size) < need:
        raise ValueError(f"audio of {audio.size} samples is too short for {num_frames} frames")
    if getattr(fe, "sampling_rate", 16000) != 16000:
        raise SyncTalkError(f"the HuBERT feature extractor expects {fe.sampling_rate} Hz audio, not 16000 Hz")
    # the extractor's zero-mean/unit-variance step over the whole clip, applied chunk by chunk (calling
    # the extractor on a long clip would hold several full-length copies)
    mean, scale = 0.0, 1.0
    if getattr(fe, "do_normalize", False):
        mean = float(np.mean(audio, dtype=np.float64))
        scale = 1.0 / float(np.sqrt(np.var(audio, dtype=np.float64) + 1e-7))
    out = np.empty((need, HIDDEN), dtype=np.float32)
    with torch.inference_mode():
        for lo in range(0, need, chunk_states):
            hi = min(lo + chunk_states, need)
            a0 = max(lo - context_states, 0)
            s0, s1 = a0 * STRIDE, min((hi + context_states) * STRIDE + RECEPTIVE - STRIDE, audio.size)
            piece = ((audio[s0:s1] - mean) * scale).astype(np.float32)
            x = torch.from_numpy(piece).to(device)[None]
            hidden = model(x).last_hidden_state[0]
            out[lo:hi] = hidden[lo - a0:hi - a0].float().cpu().numpy()
            if update:
                update(hi // 2 - lo // 2)
    return out.reshape(num_frames, 2, HIDDEN)
