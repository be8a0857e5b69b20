"""Audio heads of the UNet: one audio window (registry `tensor_shape`) → (B, C4, 10, 10) for the bottleneck.

Pretrained-feature models (ave, hubert, wenet) arrive as a window of feature rows reshaped into a
channels × height × width block; a short inverted-residual stack brings that block to 10x10 and to
the bottleneck width. Raw mel windows (`mel`) carry no learned representation, so their head is a
deeper 2-D convolution stack over (frequency, time) with batch norm, a per-bin input normalisation
and a global context path, so that it can learn phonetic content on its own. Features of a free width
(whisper: a window of rows × D) first map each row to a 16x16 plane (`FeatureRowProjection`), and
then take the reshaped-feature head with the rows as channels, so the head adapts to D.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from synctalk.errors import SyncTalkError

from .blocks import FeatureRowProjection, InvertedResidual

# per reshaped-feature model: (first two widths as level indices, stride of conv3)
#   ave    (32,16,16):  32 → c1 → c2,  16x16 stays, then 16 → 10
#   hubert (32,32,32):  32 → c1 → c2,  32x32 → 16x16, then → 10
#   wenet  (256,16,32): 256 → c3 → c3, 16x32 → 16x16, then → 10  (many input channels: start wide)
_RESHAPED_PLANS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "ave": ((1, 2), (1, 1)),
    "hubert": ((1, 2), (2, 2)),
    "wenet": ((3, 3), (1, 2)),
}


class ReshapedFeatureHead(nn.Module):
    """Head for a (C, H, W) block of pretrained audio features whose H, W reach 16x16 after `conv3`."""

    def __init__(self, in_channels: int, widths: Sequence[int], first: tuple[int, int], stride3: tuple[int, int]):
        super().__init__()
        c3, c4 = widths[3], widths[4]
        a, b = widths[first[0]], widths[first[1]]
        self.conv1 = InvertedResidual(in_channels, a)
        self.conv2 = InvertedResidual(a, b)
        self.conv3 = nn.Conv2d(b, c3, kernel_size=3, stride=stride3, padding=1)
        self.bn3 = nn.BatchNorm2d(c3)
        self.conv4 = InvertedResidual(c3, c3, residual=True)
        # 16 → 10: a padded stride-2 conv ((16 + 2*3 - 3) // 2 + 1 = 10)
        self.conv5 = nn.Conv2d(c3, c4, kernel_size=3, stride=2, padding=3)
        self.bn5 = nn.BatchNorm2d(c4)
        self.relu = nn.ReLU(inplace=True)
        self.conv6 = InvertedResidual(c4, c4, residual=True)
        self.conv7 = InvertedResidual(c4, c4, residual=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        x = self.relu(self.bn3(self.conv3(x)))
        x = self.conv4(x)
        x = self.relu(self.bn5(self.conv5(x)))
        return self.conv7(self.conv6(x))


class ProjectedFeatureHead(nn.Module):
    """Head for a (rows, D) window of feature rows of any width D: rows → 16x16 planes → reshaped head."""

    def __init__(self, rows: int, dim: int, widths: Sequence[int]):
        super().__init__()
        self.project = FeatureRowProjection(dim, 16)
        self.head = ReshapedFeatureHead(rows, widths, (1, 2), (1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.project(x))


class ConvBNReLU(nn.Sequential):
    """Conv → BatchNorm → ReLU (bias-free conv: the norm carries the shift)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: "int | tuple[int, int]" = 1,
                 padding: "int | tuple[int, int]" = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, padding, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity shortcut (full convolutions: cheap at low width)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class MelHead(nn.Module):
    """Learned head over a raw (1, 80 bins, 64 steps) log-mel window → (B, c4, 10, 10).

    Frequency 80 → 40 → 20 → 10 and time 64 → 32 → 16 → 16 → 10; the receptive field of each output
    position spans the whole 0.64 s window in time, and a pooled context vector is added everywhere
    so each bottleneck position also sees the window as a whole.
    """

    def __init__(self, bins: int, steps: int, widths: Sequence[int]):
        super().__init__()
        c0, c1, c2, c3, c4 = widths
        if (bins, steps) != (80, 64):
            raise SyncTalkError(f"the mel head is laid out for (1, 80, 64) windows, got (1, {bins}, {steps})")
        # per-bin normalisation: log-mel levels differ by tens of dB across bins and across recordings
        self.input_norm = nn.BatchNorm1d(bins)
        self.stem = ConvBNReLU(1, c0)  # 80 x 64
        self.stage1 = nn.Sequential(ConvBNReLU(c0, c1, stride=2), ResidualBlock(c1))  # 40 x 32
        self.stage2 = nn.Sequential(ConvBNReLU(c1, c2, stride=2), ResidualBlock(c2), ResidualBlock(c2))  # 20 x 16
        self.stage3 = nn.Sequential(  # 10 x 16: halve frequency only, time detail is still needed
            ConvBNReLU(c2, c3, stride=(2, 1)),
            InvertedResidual(c3, c3, residual=True),
            InvertedResidual(c3, c3, residual=True),
        )
        self.stage4 = nn.Sequential(  # 10 x 10: (16 + 2*3 - 3) // 2 + 1 = 10 in time
            ConvBNReLU(c3, c4, stride=(1, 2), padding=(1, 3)),
            InvertedResidual(c4, c4, residual=True),
            InvertedResidual(c4, c4, residual=True),
        )
        # no batch norm on the pooled vector: it would fail on a batch of one in training mode
        self.context = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c4, c4, 1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_norm(x.flatten(1, 2)).unsqueeze(1)  # (B,1,F,T) → (B,F,T) → (B,1,F,T)
        x = self.stage4(self.stage3(self.stage2(self.stage1(self.stem(x)))))
        return x + self.context(x)


def build_audio_head(asr: str, widths: Sequence[int], audio_dim: "int | None" = None) -> nn.Module:
    """The UNet audio head for audio model `asr` at the given five encoder widths (and, for a
    free-width model such as whisper, features `audio_dim` wide; None: the registry's width)."""
    from synctalk.audio.registry import get_spec

    spec = get_spec(asr, feature_dim=audio_dim)
    shape = tuple(spec.tensor_shape)
    if spec.free_dim:
        rows, dim = shape
        return ProjectedFeatureHead(rows, dim, widths)
    if asr == "mel":
        return MelHead(shape[1], shape[2], widths)
    if asr not in _RESHAPED_PLANS:
        raise SyncTalkError(f"no UNet audio head for audio model {asr!r}")
    first, stride3 = _RESHAPED_PLANS[asr]
    cin, h, w = shape
    if (h // stride3[0], w // stride3[1]) != (16, 16):
        raise SyncTalkError(f"audio model {asr!r}: tensor shape {shape} does not fit its head (needs 16x16 after conv3)")
    return ReshapedFeatureHead(cin, widths, first, stride3)

