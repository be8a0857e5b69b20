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

from .audio_heads import build_audio_head
from .blocks import WIDTHS, DepthwiseConv2d, InvertedResidual, resolve_widths  # noqa: F401  (public here too)

IMAGE_SIZE = 320
IN_CHANNELS = 6
BOTTLENECK = IMAGE_SIZE // 32  # 10: the spatial size the audio heads must reach


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


def interpolation_matrix(n_out: int, n_in: int, device: "torch.device | None" = None,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n_out, n_in) weights of 1-D linear resampling with aligned corners: row i mixes the two input
    samples around position i·(n_in − 1)/(n_out − 1), as F.interpolate(..., align_corners=True) does."""
    if n_in == 1:
        return torch.ones((n_out, 1), device=device, dtype=dtype)
    src = torch.arange(n_out, device=device, dtype=torch.float64) * ((n_in - 1) / max(n_out - 1, 1))
    lo = src.floor().clamp(max=n_in - 2).long()
    frac = src - lo
    rows = torch.arange(n_out, device=device)
    m = torch.zeros((n_out, n_in), device=device, dtype=torch.float64)
    m[rows, lo] = 1.0 - frac
    m[rows, lo + 1] += frac
    return m.to(dtype)


class _UpsampleBilinear(torch.autograd.Function):
    """F.interpolate(bilinear, align_corners=True) whose backward is two small matrix products.

    The gradient of bilinear upsampling scatters every output pixel into four input pixels; done
    with atomic adds (PyTorch's kernel and the compiled one alike) that took ~10 ms of a 64-image
    training step at 320 px on an H200. The same gradient is Mh^T · g · Mw, with Mh and Mw the 1-D
    interpolation matrices: in channels-last memory both products run on contiguous views.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:  # type: ignore[override]
        ctx.in_size = (int(x.shape[-2]), int(x.shape[-1]))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        h, w = ctx.in_size
        b, c, big_h, big_w = g.shape
        mh_t = interpolation_matrix(big_h, h, g.device, g.dtype).t()  # (h, H)
        mw = interpolation_matrix(big_w, w, g.device, g.dtype)  # (W, w)
        if g.is_contiguous(memory_format=torch.channels_last) and not g.is_contiguous():
            rows = torch.matmul(mh_t, g.permute(0, 2, 3, 1).reshape(b, big_h, big_w * c))  # (B, h, W·C)
            cols = torch.matmul(mw.t(), rows.reshape(b * h, big_w, c))  # (B·h, w, C)
            return cols.reshape(b, h, w, c).permute(0, 3, 1, 2), None
        cols = torch.matmul(g.contiguous(), mw)  # (B, C, H, w)
        return torch.matmul(mh_t, cols), None


def upsample_bilinear(x: torch.Tensor, size: "Sequence[int]") -> torch.Tensor:
    """Bilinear resize with aligned corners to `size` (H, W); gradients without atomic scatter."""
    return _UpsampleBilinear.apply(x, (int(size[0]), int(size[1])))


class Up(nn.Module):
    """Double the resolution (bilinear), concatenate the skip connection, fuse with a double block."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = DWDoubleConv(cin, cout, stride=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = upsample_bilinear(x, skip.shape[-2:])
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

    def __init__(self, asr: str, width: "str | Sequence[int]" = "full", audio_dim: "int | None" = None):
        super().__init__()
        from synctalk.audio.registry import get_spec

        c0, c1, c2, c3, c4 = widths = resolve_widths(width)
        spec = get_spec(asr, feature_dim=audio_dim)
        self.asr = asr
        self.width = width if isinstance(width, str) else list(widths)
        self.widths = widths
        # the feature width of a free-width audio model (whisper), recorded in the config
        self.audio_dim = spec.feature_dim if spec.free_dim else None
        self.audio_shape = tuple(spec.tensor_shape)

        self.audio_model = build_audio_head(asr, widths, self.audio_dim)
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
        """What `build_unet(**config)` needs to rebuild this network (saved beside checkpoints)."""
        config = {"asr": self.asr, "width": self.width}
        if self.audio_dim is not None:
            config["audio_dim"] = self.audio_dim
        return config

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


def build_unet(asr: str, width: "str | Sequence[int]" = "full", audio_dim: "int | None" = None) -> UNet328:
    """The generator for audio model `asr` at width "full" (~12 M params), "mobile" or "tiny";
    `audio_dim`: the feature width of a free-width audio model (whisper; None: the registry's)."""
    return UNet328(asr, width, audio_dim)


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
