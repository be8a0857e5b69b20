"""PFLD landmark network with GhostOne bottlenecks and MobileOne blocks.

Module and parameter names follow the PFLD_GhostOne checkpoints used by SyncTalk_2D-style
pipelines (`{"pfld_backbone": state_dict}`, width factor 0.5, 192-px input, 110 points), so
those state dicts load with `strict=True`. The network outputs offsets from a mean face, in units
of the input crop's side.

Training-time MobileOne blocks hold several parallel conv+BN branches; `reparameterize()` folds
them into one convolution per block for inference (same outputs, several times faster).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def conv_block(
    in_ch: int, out_ch: int, kernel: int, stride: int, padding: int, groups: int = 1, bn: bool = True, relu: bool = True
) -> nn.Sequential:
    """Conv (no bias) → BN (or empty) → ReLU (or empty); indices 0/1/2 fix the state-dict names."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=padding, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch) if bn else nn.Sequential(),
        nn.ReLU(inplace=True) if relu else nn.Sequential(),
    )


class MobileOneBlock(nn.Module):
    """k×k conv as a sum of `branches` conv+BN paths, a 1×1 conv+BN path and a BN identity path."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        branches: int = 6,
        linear: bool = False,
        fused: bool = False,
    ) -> None:
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        self.kernel, self.stride, self.padding, self.groups = kernel, stride, padding, groups
        self.branches = branches
        self.fused = fused
        self.se = nn.Identity()  # squeeze-excite slot, unused by these checkpoints
        self.activation = nn.Identity() if linear else nn.ReLU()
        if fused:
            self.reparam_conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=True)
            return
        self.rbr_skip = nn.BatchNorm2d(in_ch) if (in_ch == out_ch and stride == 1) else None
        self.rbr_conv = nn.ModuleList([self._conv_bn(kernel, padding) for _ in range(branches)])
        self.rbr_scale = self._conv_bn(1, 0) if kernel > 1 else None

    def _conv_bn(self, kernel: int, padding: int) -> nn.Sequential:
        seq = nn.Sequential()
        seq.add_module(
            "conv",
            nn.Conv2d(self.in_ch, self.out_ch, kernel, self.stride, padding, groups=self.groups, bias=False),
        )
        seq.add_module("bn", nn.BatchNorm2d(self.out_ch))
        return seq

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return self.activation(self.se(self.reparam_conv(x)))
        out = self.rbr_conv[0](x)
        for branch in self.rbr_conv[1:]:
            out = out + branch(x)
        if self.rbr_scale is not None:
            out = out + self.rbr_scale(x)
        if self.rbr_skip is not None:
            out = out + self.rbr_skip(x)
        return self.activation(self.se(out))

    @staticmethod
    def _fold_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
        std = torch.sqrt(bn.running_var + bn.eps)
        scale = bn.weight / std
        return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold every branch into one biased convolution (inference only; BN statistics frozen)."""
        if self.fused:
            return
        ref = self.rbr_conv[0].conv.weight
        kernel = torch.zeros_like(ref)
        bias = torch.zeros(self.out_ch, dtype=ref.dtype, device=ref.device)
        for branch in self.rbr_conv:
            k, b = self._fold_bn(branch.conv.weight, branch.bn)
            kernel += k
            bias += b
        centre = self.kernel // 2
        if self.rbr_scale is not None:
            k, b = self._fold_bn(self.rbr_scale.conv.weight, self.rbr_scale.bn)
            kernel[:, :, centre : centre + 1, centre : centre + 1] += k
            bias += b
        if self.rbr_skip is not None:
            # identity as a conv: each output channel picks its own input channel within its group
            per_group = self.in_ch // self.groups
            ident = torch.zeros_like(ref)
            for c in range(self.in_ch):
                ident[c, c % per_group, centre, centre] = 1.0
            k, b = self._fold_bn(ident, self.rbr_skip)
            kernel += k
            bias += b
        conv = nn.Conv2d(
            self.in_ch, self.out_ch, self.kernel, self.stride, self.padding, groups=self.groups, bias=True
        ).to(device=ref.device, dtype=ref.dtype)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        del self.rbr_conv, self.rbr_scale, self.rbr_skip
        self.reparam_conv = conv
        self.fused = True


class GhostOneModule(nn.Module):
    """Half the output channels from a 1×1 block, the other half from a cheap depthwise 3×3 on them."""

    def __init__(self, in_ch: int, out_ch: int, linear: bool, branches: int, fused: bool) -> None:
        super().__init__()
        half = math.ceil(out_ch / 2)
        self.primary_conv = MobileOneBlock(in_ch, half, 1, 1, 0, 1, branches, linear, fused)
        self.cheap_operation = MobileOneBlock(half, half, 3, 1, 1, half, branches, linear, fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary_conv(x)
        return torch.cat([y, self.cheap_operation(y)], dim=1)


class GhostOneBottleneck(nn.Module):
    """Expand (GhostOne) → optional strided depthwise → project (linear GhostOne); no shortcut."""

    def __init__(self, in_ch: int, hidden: int, out_ch: int, stride: int, branches: int, fused: bool) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        down = (
            MobileOneBlock(hidden, hidden, 3, stride, 1, hidden, branches, True, fused)
            if stride == 2
            else nn.Sequential()
        )
        self.ghost_conv = nn.Sequential(
            GhostOneModule(in_ch, hidden, False, branches, fused),
            down,
            GhostOneModule(hidden, out_ch, True, branches, fused),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ghost_conv(x)


class PFLDGhostOne(nn.Module):
    """PFLD landmark regressor: multi-scale pooled features → 1×1 conv → 2·num_points offsets."""

    def __init__(
        self,
        width_factor: float = 0.5,
        input_size: int = 192,
        num_points: int = 110,
        branches: int = 6,
        fused: bool = False,
    ) -> None:
        super().__init__()
        if input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {input_size}")
        self.input_size = input_size
        self.num_points = num_points

        def c(n: int) -> int:
            return int(n * width_factor)

        def bott(i: int, h: int, o: int, s: int) -> GhostOneBottleneck:
            return GhostOneBottleneck(c(i), c(h), c(o), s, branches, fused)

        self.conv1 = MobileOneBlock(3, c(64), 3, 2, 1, 1, branches, False, fused)
        self.conv2 = MobileOneBlock(c(64), c(64), 3, 1, 1, c(64), branches, False, fused)
        self.conv3_1 = bott(64, 96, 80, 2)
        self.conv3_2 = bott(80, 120, 80, 1)
        self.conv3_3 = bott(80, 120, 80, 1)
        self.conv4_1 = bott(80, 200, 96, 2)
        self.conv4_2 = bott(96, 240, 96, 1)
        self.conv4_3 = bott(96, 240, 96, 1)
        self.conv5_1 = bott(96, 336, 144, 2)
        self.conv5_2 = bott(144, 504, 144, 1)
        self.conv5_3 = bott(144, 504, 144, 1)
        self.conv5_4 = bott(144, 504, 144, 1)
        self.conv6 = bott(144, 216, 16, 1)
        self.conv7 = MobileOneBlock(c(16), c(32), 3, 1, 1, 1, branches, False, fused)
        self.conv8 = conv_block(c(32), c(128), input_size // 16, 1, 0, bn=False)
        self.avg_pool1 = nn.AvgPool2d(input_size // 2)
        self.avg_pool2 = nn.AvgPool2d(input_size // 4)
        self.avg_pool3 = nn.AvgPool2d(input_size // 8)
        self.avg_pool4 = nn.AvgPool2d(input_size // 16)
        self.conv_out = nn.Conv2d(c(64) + c(80) + c(96) + c(144) + c(128), num_points * 2, 1, 1, 0)
        # A spatial-transformer head the checkpoints carry; forward never uses it, but its
        # parameters are part of the saved state dict.
        self.localization = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=7),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(True),
            nn.Conv2d(8, 10, kernel_size=5),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, S, S) BGR in [0, 1] → (B, 2·num_points) offsets from the mean face."""
        x = self.conv2(self.conv1(x))
        s1 = self.avg_pool1(x)
        x = self.conv3_3(self.conv3_2(self.conv3_1(x)))
        s2 = self.avg_pool2(x)
        x = self.conv4_3(self.conv4_2(self.conv4_1(x)))
        s3 = self.avg_pool3(x)
        x = self.conv5_4(self.conv5_3(self.conv5_2(self.conv5_1(x))))
        s4 = self.avg_pool4(x)
        s5 = self.conv8(self.conv7(self.conv6(x)))
        out = self.conv_out(torch.cat([s1, s2, s3, s4, s5], dim=1))
        return out.flatten(1)

    def reparameterize(self) -> "PFLDGhostOne":
        """Fold all MobileOne branches for inference; returns self."""
        for m in [m for m in self.modules() if isinstance(m, MobileOneBlock)]:
            m.reparameterize()
        return self


def build_pfld(num_points: int = 110, input_size: int = 192, width_factor: float = 0.5, fused: bool = False) -> PFLDGhostOne:
    """The configuration of the 110-point SyncTalk checkpoints unless told otherwise."""
    return PFLDGhostOne(width_factor=width_factor, input_size=input_size, num_points=num_points, fused=fused)
