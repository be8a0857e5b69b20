"""Building blocks shared by the UNet, its audio heads and the SyncNet: widths and the depthwise blocks.

A module of its own so that the audio heads (which use these blocks) and the UNet (which uses the
heads) import in one direction only.
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


class _DepthwiseConv(torch.autograd.Function):
    """A stride-1 depthwise convolution whose input gradient is the forward kernel on the flipped taps.

    cuDNN's data-gradient kernel for depthwise convolutions in channels-last bf16 took about twice
    the forward kernel's time on an H200 (8.4 against 3.8 ms of a 64-image UNet step); for stride 1
    the input gradient is that same forward convolution of the output gradient with the kernel
    rotated by 180 degrees. The weight gradient stays cuDNN's.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, None, 1, padding, 1, weight.shape[0])

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        groups = weight.shape[0]
        w = weight.to(g.dtype)  # under autocast the forward ran in the activations' dtype
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(g, w.flip(-2, -1), None, 1, ctx.padding, 1, groups)
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.aten.convolution_backward(
                g, x.to(g.dtype), w, None, [1, 1], [ctx.padding, ctx.padding], [1, 1], False, [0, 0], groups,
                [False, True, False])[1].to(weight.dtype)
        return grad_x, grad_w, None


class DepthwiseConv2d(nn.Conv2d):
    """3x3 depthwise convolution; stride 1 without a bias trains through _DepthwiseConv. A plain Conv2d
    in its parameters and state dict (BatchNorm folding for inference gives it a bias)."""

    def __init__(self, channels: int, stride: int = 1):
        super().__init__(channels, channels, 3, stride, 1, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.stride == (1, 1) and self.bias is None and torch.is_grad_enabled()
                and (x.requires_grad or self.weight.requires_grad)):
            return _DepthwiseConv.apply(x, self.weight, self.padding[0])
        return super().forward(x)


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
            DepthwiseConv2d(hidden, stride),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


class FeatureRowProjection(nn.Module):
    """(B, rows, D) feature rows → (B, rows, side, side): each row mapped to a side x side plane.

    What follows it is then the same whatever the feature width D of the audio model (whisper-tiny
    384 … large 1280). The input norm is per feature over the batch, not per row: a row near zero
    (silence, once the whisper baseline is off) must stay small, not be blown up to unit variance.
    """

    def __init__(self, dim: int, side: int = 16):
        super().__init__()
        self.side = int(side)
        self.norm = nn.BatchNorm1d(dim)
        self.proj = nn.Linear(dim, self.side * self.side)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, rows, _ = x.shape
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        return self.proj(x).view(b, rows, self.side, self.side)
