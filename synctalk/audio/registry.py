"""One entry per audio model: file name, per-frame shape, and how a window becomes a tensor.

Row i of a feature file belongs to video frame i (25 fps). A network's audio input for frame i is
the window of rows [i - left, i - left + window), zero-padded past either end, rearranged into
`tensor_shape`. Everything else (datasets, SyncNet, UNet audio heads, rendering) asks this module.

An entry with `free_dim` (whisper) has a feature width that depends on the model that made the
features (384 for whisper-tiny … 1280 for large); `get_spec(name, feature_dim=D)` gives the entry at
width D, and the networks record D in their config.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..constants import FPS, SAMPLE_RATE  # noqa: F401  (re-exported)
from ..errors import SyncTalkError


@dataclass(frozen=True)
class AudioModelSpec:
    """Everything other code needs to know about one audio model's features."""

    name: str
    feature_file: str
    frame_shape: tuple[int, ...]  # shape of one row (one video frame)
    window: int  # rows per network input
    left: int  # rows taken before frame i
    tensor_shape: tuple[int, ...]  # the network's audio tensor for one frame
    layout: str  # "reshape": plain reshape of the window; "mel": time-major mel → (1, bins, time)
    needs_weights: bool
    description: str
    free_dim: bool = False  # the last axis of frame_shape and tensor_shape is the model's width

    @property
    def feature_dim(self) -> int:
        """Width of one feature row (the last axis of frame_shape)."""
        return int(self.frame_shape[-1])

    def with_feature_dim(self, dim: "int | None") -> "AudioModelSpec":
        """This entry for features `dim` wide (None: as registered); only `free_dim` entries change."""
        if dim is None or int(dim) == self.feature_dim:
            return self
        if not self.free_dim or int(dim) < 1:
            raise SyncTalkError(f"{self.name} features are {self.feature_dim} wide, not {dim}")
        d = int(dim)
        return replace(self, frame_shape=(*self.frame_shape[:-1], d), tensor_shape=(*self.tensor_shape[:-1], d))

    def for_rows(self, row_shape: "tuple[int, ...]", source: str = "the features") -> "AudioModelSpec":
        """The entry that fits feature rows of `row_shape` (a free width adapts), or a clear error."""
        row_shape = tuple(int(s) for s in row_shape)
        if len(row_shape) == len(self.frame_shape) and row_shape[:-1] == tuple(self.frame_shape[:-1]):
            if self.free_dim or row_shape == tuple(self.frame_shape):
                return self.with_feature_dim(row_shape[-1])
        want = f"({self.frame_shape[0]}, D)" if self.free_dim else str(tuple(self.frame_shape))
        raise SyncTalkError(f"{source} has rows of shape {row_shape}, expected {want} for {self.name!r}")

    def window_rows(self, features: np.ndarray, index: int) -> np.ndarray:
        """Rows [index-left, index-left+window) of `features`, zero-padded at the ends."""
        n = features.shape[0]
        lo, hi = index - self.left, index - self.left + self.window
        out = np.zeros((self.window, *features.shape[1:]), dtype=np.float32)
        src_lo, src_hi = max(lo, 0), min(hi, n)
        if src_hi > src_lo:
            out[src_lo - lo : src_hi - lo] = features[src_lo:src_hi]
        return out

    def arrange(self, rows: np.ndarray) -> np.ndarray:
        """(window, *frame_shape) → tensor_shape (numpy)."""
        if self.layout == "mel":
            bins = self.frame_shape[-1]
            return np.ascontiguousarray(rows.reshape(-1, bins).T)[None]
        return rows.reshape(self.tensor_shape)

    def window_tensor(self, features: np.ndarray, index: int) -> np.ndarray:
        """The network's audio input for frame `index`, float32 of `tensor_shape`."""
        return self.arrange(self.window_rows(features, index)).astype(np.float32, copy=False)

    def batch_windows(self, features, indices):
        """Torch version for a batch: features (N, *frame_shape) tensor on any device, indices (B,)
        long tensor on the same device → (B, *tensor_shape). Used by the GPU-resident loops."""
        import torch

        n = features.shape[0]
        flat = features.reshape(n, -1)
        # rows [i - left, i - left + window) of each index, zero outside the features (gathered
        # directly: padding the whole array for every batch copied all of it each time)
        at = indices[:, None] + torch.arange(-self.left, self.window - self.left, device=indices.device)[None, :]
        inside = (at >= 0) & (at < n)
        rows = torch.where(inside[..., None], flat[at.clamp(0, max(n - 1, 0))], flat.new_zeros(()))  # (B, window, D)
        b = rows.shape[0]
        if self.layout == "mel":
            bins = self.frame_shape[-1]
            return rows.reshape(b, -1, bins).transpose(1, 2).unsqueeze(1).contiguous()
        return rows.reshape(b, *self.tensor_shape)


_SPECS = {
    "ave": AudioModelSpec(
        name="ave",
        feature_file="aud_ave.npy",
        frame_shape=(512,),
        window=16,
        left=8,
        tensor_shape=(32, 16, 16),
        layout="reshape",
        needs_weights=True,
        description="Wav2Lip-style audio encoder on 80-bin mel (audio_visual_encoder.pth)",
    ),
    "hubert": AudioModelSpec(
        name="hubert",
        feature_file="aud_hubert.npy",
        frame_shape=(2, 1024),
        window=16,
        left=8,
        tensor_shape=(32, 32, 32),
        layout="reshape",
        needs_weights=True,
        description="HuBERT last hidden state at 50 Hz (transformers; facebook/hubert-large-ls960-ft)",
    ),
    "wenet": AudioModelSpec(
        name="wenet",
        feature_file="aud_wenet.npy",
        frame_shape=(16, 512),
        window=16,
        left=8,
        tensor_shape=(256, 16, 32),
        layout="reshape",
        needs_weights=True,
        description="WeNet conformer encoder (ONNX) on 80-bin fbank; one (16, 512) encoder output per frame",
    ),
    # whisper encoder states at 50 Hz, two per frame; a window of 5 frames (±2, as MuseTalk and
    # LatentSync take): the encoder has already seen the whole 30 s around each state
    "whisper": AudioModelSpec(
        name="whisper",
        feature_file="aud_whisper.npy",
        frame_shape=(2, 384),
        window=5,
        left=2,
        tensor_shape=(10, 384),
        layout="reshape",
        needs_weights=True,
        description="Whisper encoder last hidden state at 50 Hz (transformers or CTranslate2; openai/whisper-tiny)",
        free_dim=True,
    ),
    "mel": AudioModelSpec(
        name="mel",
        feature_file="aud_mel.npy",
        frame_shape=(4, 80),
        window=16,
        left=8,
        tensor_shape=(1, 80, 64),
        layout="mel",
        needs_weights=False,
        description="80-bin log-mel at 100 Hz; no pretrained weights, the networks learn from it",
    ),
}

ASR_MODELS: tuple[str, ...] = tuple(_SPECS)


def get_spec(name: str, feature_dim: "int | None" = None) -> AudioModelSpec:
    """The registry entry of an audio model (at `feature_dim` for a free-width one), or a clear error."""
    try:
        spec = _SPECS[name]
    except KeyError:
        raise SyncTalkError(f"unknown audio model {name!r}: choose one of {', '.join(ASR_MODELS)}") from None
    return spec.with_feature_dim(feature_dim)


def network_audio_dim(asr: str, row_shape: "tuple[int, ...]") -> "int | None":
    """The `audio_dim` that build_unet / SyncNet take for `asr` features with rows of `row_shape`
    (their width for a free-width model such as whisper; None for the fixed-width ones)."""
    spec = get_spec(asr).for_rows(row_shape)
    return spec.feature_dim if spec.free_dim else None
