"""The 328-px UNet generator: a depthwise (inverted-residual) U-Net that redraws the mouth from audio.

Input is six channels at 320x320 — the reference crop and the masked current crop, BGR, in [0, 1] —
and an audio window of the shape the audio registry gives for the chosen model. Five stride-2 stages
bring the image to 10x10; the audio head brings the window to the same (C, 10, 10); the two are
concatenated and fused, and the decoder climbs back up with skip connections to a sigmoid BGR image.

Parameter names follow the SyncTalk_2D checkpoint layout (`inc`, `down1..5`, `audio_model`,
`fuse_conv`, `up1..5`, `outc`, including their inner names), so state dicts of the same width and
audio model are interchangeable with checkpoints in that format.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from synctalk.errors import SyncTalkError

# channel widths of the five encoder levels (320, 160, 80, 40, 20 -> 10 px)
WIDTHS: dict[str, tuple[int, int, int, int, int]] = {
    "full": (32, 64, 128, 256, 512),
    "mobile": (16, 32, 64, 128, 256),
    "tiny": (8, 16, 16, 32, 32),  # for tests: runs a 320-px forward on a CPU in milliseconds
}

IMAGE_SIZE = 320
IN_CHANNELS = 6
BOTTLENECK = IMAGE_SIZE // 32  # 10: the spatial size the audio heads must reach


def resolve_widths(width: "str | Sequence[int]") -> tuple[int, int, int, int, int]:
    """A width name ("full", "mobile", "tiny") or five explicit channel counts → five ints."""
    if isinstance(width, str):
        try:
            return WIDTHS[width]
        except KeyError:
            raise SyncTalkError(f"unknown network width {width!r}: choose one of {', '.join(WIDTHS)}") from None
    widths = tuple(int(c) for c in width)
    if len(widths) != 5 or min(widths) < 2:
        raise SyncTalkError(f"a network width needs five channel counts >= 2, got {width!r}")
    return widths  # type: ignore[return-value]


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise (optionally strided), 1x1 project, BN after each."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 2, residual: bool | None = None):
        super().__init__()
        hidden = cin * expand
        if residual is None:
            residual = stride == 1 and cin == cout
        if residual and (stride != 1 or cin != cout):
            raise ValueError("a residual inverted block needs stride 1 and cin == cout")
        self.residual = residual
        # index layout (0 conv, 1 bn, 2 relu, 3 dw, 4 bn, 5 relu, 6 conv, 7 bn) is the checkpoint layout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


class DWDoubleConv(nn.Module):
    """Two inverted-residual blocks: the first changes width (and maybe resolution), the second refines."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.double_conv = nn.Sequential(
            InvertedResidual(cin, cout, stride=stride, residual=False),
            InvertedResidual(cout, cout, stride=1, residual=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class InConv(nn.Module):
    """Full-resolution entry block (6 image channels → first width)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.inconv = nn.Sequential(InvertedResidual(cin, cout, stride=1, residual=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inconv(x)


class Down(nn.Module):
    """Halve the resolution with a strided depthwise double block."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        # attribute name fixed by the checkpoint layout (there is no max-pool: the stride downsamples)
        self.maxpool_conv = nn.Sequential(DWDoubleConv(cin, cout, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Double the resolution (bilinear), concatenate the skip connection, fuse with a double block."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = DWDoubleConv(cin, cout, stride=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        return self.conv(torch.cat([x, skip], dim=1))


class OutConv(nn.Module):
    """1x1 projection to the three BGR channels (the sigmoid is applied by the model)."""

    def __init__(self, cin: int, cout: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UNet328(nn.Module):
    """Audio-conditioned generator: (B,6,320,320) image pair + (B,*tensor_shape) audio → (B,3,320,320)."""

    def __init__(self, asr: str, width: "str | Sequence[int]" = "full"):
        super().__init__()
        from synctalk.audio.registry import get_spec

        from .audio_heads import build_audio_head

        c0, c1, c2, c3, c4 = widths = resolve_widths(width)
        self.asr = asr
        self.width = width if isinstance(width, str) else list(widths)
        self.widths = widths
        self.audio_shape = tuple(get_spec(asr).tensor_shape)

        self.audio_model = build_audio_head(asr, widths)
        self.fuse_conv = nn.Sequential(
            DWDoubleConv(c4 * 2, c4, stride=1),
            DWDoubleConv(c4, c3, stride=1),
        )

        self.inc = InConv(IN_CHANNELS, c0)
        self.down1 = Down(c0, c0)
        self.down2 = Down(c0, c1)
        self.down3 = Down(c1, c2)
        self.down4 = Down(c2, c3)
        self.down5 = Down(c3, c4)

        d1, d2, d3, d4, d5 = c3 // 2, c2 // 2, c1 // 2, c0, c0 // 2
        self.up1 = Up(c3 + c3, d1)  # fused bottleneck (c3) + down4 skip (c3)
        self.up2 = Up(d1 + c2, d2)
        self.up3 = Up(d2 + c1, d3)
        self.up4 = Up(d3 + c0, d4)
        self.up5 = Up(d4 + c0, d5)
        self.outc = OutConv(d5, 3)

    @property
    def config(self) -> dict:
        """What `build_unet` needs to rebuild this network (saved beside checkpoints)."""
        return {"asr": self.asr, "width": self.width}

    def _check_inputs(self, x: torch.Tensor, audio: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != IN_CHANNELS or tuple(x.shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE):
            raise SyncTalkError(
                f"UNet input must be (B, {IN_CHANNELS}, {IMAGE_SIZE}, {IMAGE_SIZE}), got {tuple(x.shape)}"
            )
        if tuple(audio.shape[1:]) != self.audio_shape or audio.shape[0] != x.shape[0]:
            raise SyncTalkError(
                f"UNet built for audio model {self.asr!r} expects audio (B, {', '.join(map(str, self.audio_shape))}), "
                f"got {tuple(audio.shape)} — were the features made with another audio model?"
            )

    def forward(self, x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Generate the BGR [0, 1] face crop for one audio window per image pair."""
        self._check_inputs(x, audio)
        x1 = self.inc(x)  # 320
        x2 = self.down1(x1)  # 160
        x3 = self.down2(x2)  # 80
        x4 = self.down3(x3)  # 40
        x5 = self.down4(x4)  # 20
        x6 = self.down5(x5)  # 10
        a = self.audio_model(audio)
        x6 = self.fuse_conv(torch.cat([x6, a], dim=1))
        x = self.up1(x6, x5)
        x = self.up2(x, x4)
        x = self.up3(x, x3)
        x = self.up4(x, x2)
        x = self.up5(x, x1)
        return torch.sigmoid(self.outc(x))


def build_unet(asr: str, width: "str | Sequence[int]" = "full") -> UNet328:
    """The generator for audio model `asr` at width "full" (~12 M params), "mobile" or "tiny"."""
    return UNet328(asr, width)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, *inputs: torch.Tensor) -> int:
    """Floating-point operations of one forward on `inputs` (a multiply-add counts as 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(*inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
