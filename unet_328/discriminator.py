"""MouthDiscriminator: a patch critic of the mouth region, real crop vs generated (the adversarial stage).

A PatchGAN-style stack of 4×4 convolutions (three of stride 2, then two of stride 1) maps the mouth
box of a 320 crop to a grid of logits, one per ~70-px patch: each says whether that patch of lips,
teeth and jaw looks like the person's real footage. Every convolution is spectrally normalised and
there is no BatchNorm, so the critic's slope stays bounded (a stable hinge game at small batches,
on several GPUs alike) and a batch of real and generated crops can go through it in one forward.

`box` is x0, y0, x1, y1 in the 320 crop (end exclusive); the default covers the lower face of the
preprocessing crop (it runs from the nose bridge to below the chin, the mouth in rows ~70-190).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm

from synctalk.errors import SyncTalkError

DISC_WIDTHS: dict[str, tuple[int, int, int, int]] = {
    "full": (32, 64, 128, 256),
    "mobile": (16, 32, 64, 128),
    "tiny": (8, 8, 16, 16),  # for tests
}
# the critic's width for a UNet's (--disc_width auto): a full-width critic would add ~31 % to a full
# UNet's step (forward + backward on generated and real boxes), the mobile one ~8 %
AUTO_WIDTH: dict[str, str] = {"full": "mobile", "mobile": "mobile", "tiny": "tiny"}
MOUTH_BOX: tuple[int, int, int, int] = (32, 48, 288, 240)  # x0, y0, x1, y1 in the 320 crop: 256 × 192


def resolve_disc_widths(width: "str | Sequence[int]") -> tuple[int, int, int, int]:
    """A width name or four channel counts → the critic's four channel counts."""
    if isinstance(width, str):
        try:
            return DISC_WIDTHS[width]
        except KeyError:
            raise SyncTalkError(f"unknown discriminator width {width!r}: choose one of {', '.join(DISC_WIDTHS)}") \
                from None
    widths = tuple(int(c) for c in width)
    if len(widths) != 4 or min(widths) < 1:
        raise SyncTalkError(f"a discriminator width needs four channel counts >= 1, got {width!r}")
    return widths  # type: ignore[return-value]


class MouthDiscriminator(nn.Module):
    """(B, 3, 320, 320) crops (BGR, [0, 1]) → (B, 1, h, w) patch logits of their mouth box (higher: real)."""

    def __init__(self, width: "str | Sequence[int]" = "full", box: Sequence[int] = MOUTH_BOX):
        super().__init__()
        c0, c1, c2, c3 = self.widths = resolve_disc_widths(width)
        x0, y0, x1, y1 = (int(v) for v in box)
        if not (0 <= x0 < x1 and 0 <= y0 < y1) or min(x1 - x0, y1 - y0) < 32:
            raise SyncTalkError(f"discriminator box {x0},{y0},{x1},{y1} must be at least 32 × 32 pixels")
        self.box = (x0, y0, x1, y1)

        def conv(cin: int, cout: int, stride: int) -> nn.Module:
            return spectral_norm(nn.Conv2d(cin, cout, kernel_size=4, stride=stride, padding=1))

        act = (lambda: nn.LeakyReLU(0.2, inplace=True))
        self.net = nn.Sequential(
            conv(3, c0, 2), act(),
            conv(c0, c1, 2), act(),
            conv(c1, c2, 2), act(),
            conv(c2, c3, 1), act(),
            conv(c3, 1, 1),
        )

    def crop(self, images: torch.Tensor) -> torch.Tensor:
        """The mouth box of 320 crops (a view); images of the box's own size are taken as cropped already."""
        x0, y0, x1, y1 = self.box
        if tuple(images.shape[-2:]) == (y1 - y0, x1 - x0):
            return images
        if images.shape[-2] < y1 or images.shape[-1] < x1:
            raise ValueError(f"images of {tuple(images.shape[-2:])} do not hold the box {self.box}")
        return images[..., y0:y1, x0:x1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Patch logits of the mouth box of 320 crops (or of the boxes themselves, see `crop`); pixels are
        centred to [-1, 1] first (the crops are [0, 1])."""
        return self.net(self._centred(images))

    def _centred(self, images: torch.Tensor) -> torch.Tensor:
        """The mouth box, [0, 1] pixels mapped to [-1, 1]: the input of every layer stack below."""
        return self.crop(images) * 2.0 - 1.0

    def features(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(the four hidden activations, the patch logits) of `forward`: what a feature-matching loss
        compares between a generated crop and its real one."""
        x = self._centred(images)
        hidden = []
        for layer in self.net:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                hidden.append(x)
        return hidden, x


def build_discriminator(width: "str | Sequence[int]" = "full", box: Sequence[int] = MOUTH_BOX) -> MouthDiscriminator:
    """The mouth critic of a UNet of this width."""
    return MouthDiscriminator(width, box)
