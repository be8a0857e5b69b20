"""`ave`: a Wav2Lip-style convolutional audio encoder, 16 mel frames (200 ms) → one 512-d vector.

Two checkpoint formats load (strictly):
  * SyncTalk's `audio_visual_encoder.pth`: a flat state dict of the encoder alone, keys
    `0.conv_block.0.weight` … `12.conv_block.1.running_var` (13 blocks, one residual block at 256 ch);
  * a Wav2Lip SyncNet checkpoint: `{"state_dict": {"audio_encoder.0.conv_block.0.weight", …,
    "face_encoder.…"}}` (14 blocks, two residual blocks at 256 ch); `module.` prefixes are removed.

Framing (as SyncTalk_2D): Wav2Lip mel at 80 Hz; row i encodes the 16 mel frames starting at mel
frame floor(3.2·(i-1)) — the window that starts one video frame before frame i; row 0 repeats row 1's
window start (frame 0).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import SyncTalkError
from .melspec import WAV2LIP_MEL, log_mel

MEL_WINDOW = 16  # mel frames per encoder input (200 ms)
MEL_PER_FRAME_NUM, MEL_PER_FRAME_DEN = 16, 5  # 80 mel frames/s ÷ 25 video frames/s = 16/5
RIGHT_CONTEXT = 3200  # samples past the last video frame the last window reads
BATCH = 256

# (cin, cout, kernel, stride, padding, residual) of the SyncTalk encoder; the Wav2Lip SyncNet one has a
# second residual block at 256 channels
_SYNCTALK_BLOCKS = [
    (1, 32, 3, 1, 1, False), (32, 32, 3, 1, 1, True), (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False), (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False),
]
_WAV2LIP_BLOCKS = _SYNCTALK_BLOCKS[:11] + [(256, 256, 3, 1, 1, True)] + _SYNCTALK_BLOCKS[11:]
VARIANTS = {"synctalk": _SYNCTALK_BLOCKS, "wav2lip": _WAV2LIP_BLOCKS}


def build_encoder(variant: str = "synctalk"):
    """The encoder network: input (B, 1, 80, 16) mel, output (B, 512)."""
    import torch.nn as nn

    class ConvBlock(nn.Module):
        def __init__(self, cin, cout, k, s, p, residual):
            super().__init__()
            self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, k, s, p), nn.BatchNorm2d(cout))
            self.act = nn.ReLU()
            self.residual = residual

        def forward(self, x):
            y = self.conv_block(x)
            return self.act(y + x if self.residual else y)

    class AudioEncoder(nn.Module):
        def __init__(self, blocks):
            super().__init__()
            self.audio_encoder = nn.Sequential(*[ConvBlock(*b) for b in blocks])

        def forward(self, mel):
            return self.audio_encoder(mel).flatten(1)

    if variant not in VARIANTS:
        raise ValueError(f"unknown encoder variant {variant!r}")
    return AudioEncoder(VARIANTS[variant])


def read_checkpoint(path: "str | os.PathLike") -> tuple[str, dict]:
    """(variant, state dict with `audio_encoder.` keys) from either original checkpoint format."""
    import torch

    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors all mean "not a checkpoint we read"
        raise SyncTalkError(f"{path} is not a readable torch checkpoint ({type(exc).__name__}: {exc}); the ave "
                            f"model needs SyncTalk's audio_visual_encoder.pth or a Wav2Lip SyncNet checkpoint") from None
    if not isinstance(obj, dict):
        raise SyncTalkError(f"{path} holds a {type(obj).__name__}, not a state dict: not an ave checkpoint")
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict):
        raise SyncTalkError(f"{path}: 'state_dict' is a {type(state).__name__}, not a state dict")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    if any(k.startswith("audio_encoder.") for k in state):
        enc = {k: v for k, v in state.items() if k.startswith("audio_encoder.")}
    elif state and all(k.split(".", 1)[0].isdigit() for k in state):
        enc = {f"audio_encoder.{k}": v for k, v in state.items()}
    else:
        sample = ", ".join(list(state)[:4]) or "no keys"
        raise SyncTalkError(
            f"{path} is not an ave checkpoint: expected SyncTalk's audio_visual_encoder.pth (keys like "
            f"'0.conv_block.0.weight') or a Wav2Lip SyncNet checkpoint (state_dict with 'audio_encoder.*' keys); "
            f"found {sample}"
        )
    blocks = {int(k.split(".")[1]) for k in enc if k.split(".")[1].isdigit()}
    count = max(blocks) + 1 if blocks else 0
    variant = {len(_SYNCTALK_BLOCKS): "synctalk", len(_WAV2LIP_BLOCKS): "wav2lip"}.get(count)
    if variant is None:
        raise SyncTalkError(f"{path}: the audio encoder has {count} blocks; SyncTalk's has "
                            f"{len(_SYNCTALK_BLOCKS)} and Wav2Lip SyncNet's {len(_WAV2LIP_BLOCKS)}")
    return variant, enc


def load_encoder(path: "str | os.PathLike", device: "str | object" = "cpu"):
    """The encoder with the checkpoint's weights (strict), in eval mode on `device`."""
    variant, state = read_checkpoint(path)
    model = build_encoder(variant)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SyncTalkError(f"{path} does not match the {variant} audio encoder: {str(exc)[:800]}") from None
    return model.eval().to(device)


def window_starts(num_frames: int, num_mel: int) -> np.ndarray:
    """First mel frame of each row's 16-frame window (see the module docstring), clamped to the end."""
    idx = np.maximum(np.arange(num_frames) - 1, 0)
    starts = (idx * MEL_PER_FRAME_NUM) // MEL_PER_FRAME_DEN
    return np.minimum(starts, max(num_mel - MEL_WINDOW, 0))


def extract(audio: np.ndarray, num_frames: int, weights: "str | os.PathLike", device: "str | object" = "cpu",
            update: Callable[[int], None] | None = None, batch_size: int = BATCH) -> np.ndarray:
    """(num_frames, 512) ave features of 16 kHz audio that already reaches past the last frame."""
    import torch

    model = load_encoder(weights, device)
    mel = log_mel(audio, WAV2LIP_MEL, device=device, as_tensor=True)  # (M, 80) on device
    if mel.shape[0] < MEL_WINDOW:
        mel = torch.nn.functional.pad(mel, (0, 0, 0, MEL_WINDOW - mel.shape[0]), value=-WAV2LIP_MEL.max_abs)
    starts = torch.from_numpy(window_starts(num_frames, mel.shape[0])).to(mel.device)
    offs = torch.arange(MEL_WINDOW, device=mel.device)
    out = np.empty((num_frames, 512), dtype=np.float32)
    with torch.inference_mode():
        for lo in range(0, num_frames, batch_size):
            hi = min(lo + batch_size, num_frames)
            win = mel[starts[lo:hi, None] + offs[None, :]]  # (B, 16, 80)
            x = win.transpose(1, 2).unsqueeze(1)  # (B, 1, 80, 16): mel bins tall, time wide
            out[lo:hi] = model(x).float().cpu().numpy()
            if update:
                update(hi - lo)
    return out
