"""Audio features of a dataset: which model to train with, and its rows (one per frame)."""

from __future__ import annotations

import numpy as np

from ..errors import SyncTalkError
from ..layout import DatasetLayout


def load_features(layout: DatasetLayout, asr: str) -> np.ndarray:
    """The dataset's audio features for `asr`, float32 (N, *frame_shape), or a clear error."""
    from ..audio.registry import get_spec

    spec = get_spec(asr)
    path = layout.features(asr)
    if not path.exists():
        raise SyncTalkError(
            f"{layout.name} has no {asr!r} audio features ({path} not found): make them with "
            f"`synctalk preprocess --video_path {layout.video} --name {layout.name} --asr_model {asr}` "
            f"(or python scripts/preprocess_data.py with the same flags)"
        )
    feats = np.load(path).astype(np.float32, copy=False)
    spec.for_rows(tuple(feats.shape[1:]), str(path))  # whisper: any width; the others: exactly theirs
    return feats


def resolve_asr(layout: DatasetLayout, asr: str | None) -> str:
    """The audio model to train with: `asr` when given, else the one the dataset was preprocessed with."""
    from ..audio.registry import ASR_MODELS, get_spec
    from ..state import PREPROCESSING, TrainingState

    if asr:
        get_spec(asr)
        if not layout.features(asr).exists():
            load_features(layout, asr)  # raises, naming the command that makes them
        return asr
    data = TrainingState(layout.state_file).load() if layout.state_file.exists() else {}
    sec = data.get(PREPROCESSING) or {}
    candidates = [data.get("asr_model")] + list(sec.get("asr_models") or [])
    for name in candidates:
        if name in ASR_MODELS and layout.features(name).exists():
            return name
    present = [name for name in ASR_MODELS if layout.features(name).exists()]
    if len(present) == 1:
        return present[0]
    if not present:
        raise SyncTalkError(
            f"{layout.name} has no audio features: make them with "
            f"`synctalk preprocess --video_path {layout.video} --name {layout.name} --asr_model ave` (or mel, hubert, wenet)"
        )
    raise SyncTalkError(f"{layout.name} has features for {', '.join(present)}: choose one with --asr")


def feature_audio_dim(layout: DatasetLayout, asr: str) -> "int | None":
    """The `audio_dim` the networks take for the dataset's `asr` features (None: a fixed-width model)."""
    from ..audio.registry import get_spec, network_audio_dim

    if not get_spec(asr).free_dim:
        return None
    return network_audio_dim(asr, tuple(np.load(layout.features(asr), mmap_mode="r").shape[1:]))
