"""SyncNet training-pair jitter, batched on the device (never in validation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class SyncNetAugment:
    """Per-sample jitter of SyncNet training pairs, drawn on the host and applied batched on the device.

    Faces: a random zoom (1 ± scale), translation (± shift of the side) and horizontal flip — a
    mouth is near-symmetric, its sync is not — plus brightness, contrast and per-channel gain.
    Audio (log-mel windows only): one band of up to `freq_mask` mel bins replaced by the window's
    mean, and optionally a level offset. The offset is off by default: a person's recording has one
    level, and loudness is one of the cues that go with how wide the mouth opens. Other audio
    features are left alone: their channels have no such meaning.
    Evaluation never augments: only the training loop calls this.
    """

    shift: float = 0.03
    scale: float = 0.06
    flip: bool = True
    brightness: float = 0.1
    contrast: float = 0.15
    channel_gain: float = 0.05
    audio_gain: float = 0.0  # ± level offset in log-mel units
    freq_mask: int = 8  # widest band of mel bins replaced by the window mean

    # columns of `sample`'s table
    _COLS = ("zoom", "tx", "ty", "flip", "bright", "contrast", "gain_b", "gain_g", "gain_r", "a_gain", "f0", "fw")

    def sample(self, n: int, generator: "torch.Generator") -> "torch.Tensor":
        """(n, 12) float32 jitter parameters (host, from `generator`): shard and move them like the indices."""
        import torch

        u = torch.rand(n, len(self._COLS), generator=generator) * 2 - 1  # uniform in [-1, 1)
        p = torch.empty_like(u)
        p[:, 0] = 1 + self.scale * u[:, 0]
        p[:, 1] = 2 * self.shift * u[:, 1]  # affine_grid coordinates span 2 per side
        p[:, 2] = 2 * self.shift * u[:, 2]
        p[:, 3] = torch.where(u[:, 3] < 0, -1.0, 1.0) if self.flip else 1.0
        p[:, 4] = self.brightness * u[:, 4]
        p[:, 5] = 1 + self.contrast * u[:, 5]
        p[:, 6:9] = 1 + self.channel_gain * u[:, 6:9]
        p[:, 9] = self.audio_gain * u[:, 9]
        p[:, 10] = (u[:, 10] + 1) / 2  # where the masked band starts, as a fraction of the free range
        p[:, 11] = torch.floor((u[:, 11] + 1) / 2 * (self.freq_mask + 1)).clamp(max=self.freq_mask)
        return p

    def faces(self, x: "torch.Tensor", params: "torch.Tensor") -> "torch.Tensor":
        """Jittered copies of float faces (B, 3·k, H, W) in [0, 1] (k stacked frames jittered alike)."""
        import torch
        import torch.nn.functional as F

        p = params.to(device=x.device, dtype=torch.float32)
        b = x.shape[0]
        theta = torch.zeros(b, 2, 3, device=x.device, dtype=torch.float32)
        theta[:, 0, 0] = p[:, 3] / p[:, 0]
        theta[:, 1, 1] = 1 / p[:, 0]
        theta[:, 0, 2] = p[:, 1]
        theta[:, 1, 2] = p[:, 2]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        y = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        mean = y.mean(dim=(1, 2, 3), keepdim=True)
        y = (y - mean) * p[:, 5, None, None, None] + mean + p[:, 4, None, None, None]
        shape = y.shape
        y = y.reshape(b, -1, 3, *shape[2:]) * p[:, None, 6:9, None, None]  # per-colour gain, every stacked frame
        y = y.reshape(shape).clamp_(0.0, 1.0).to(x.dtype)
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            y = y.contiguous(memory_format=torch.channels_last)
        return y

    def audio(self, a: "torch.Tensor", params: "torch.Tensor", layout: str) -> "torch.Tensor":
        """Jittered copies of audio windows; only log-mel windows (B, 1, bins, T) are changed."""
        import torch

        if layout != "mel":
            return a
        p = params.to(device=a.device, dtype=torch.float32)
        bins = a.shape[2]
        width = p[:, 11].clamp(max=bins - 1)
        start = torch.floor(p[:, 10] * (bins - width + 1)).clamp(max=bins - 1)
        k = torch.arange(bins, device=a.device, dtype=torch.float32)
        masked = (k[None] >= start[:, None]) & (k[None] < (start + width)[:, None])  # (B, bins)
        y = a.float() + p[:, 9, None, None, None]
        y = torch.where(masked[:, None, :, None], y.mean(dim=(2, 3), keepdim=True), y)
        return y.to(a.dtype)
