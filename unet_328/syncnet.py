"""SyncNet critic: does this mouth go with this audio window?

A face encoder and an audio encoder, each a Conv+BN+LeakyReLU stack with residual blocks, end in
512-d L2-normalised embeddings; `logits` turns their cosine into a sync logit with a learnable scale
and bias, trained with BCE-with-logits (1 = in sync). Trained per person before the UNet and then
used frozen as a lip-sync loss on the UNet's output.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from synctalk.errors import SyncTalkError

from .model import resolve_widths

EMBED_DIM = 512


class ConvBlock(nn.Module):
    """Conv → BatchNorm (+ identity when `residual`) → LeakyReLU."""

    def __init__(self, cin: int, cout: int, kernel: "int | tuple[int, int]" = 3,
                 stride: "int | tuple[int, int]" = 1, padding: "int | tuple[int, int]" = 1,
                 residual: bool = False):
        super().__init__()
        if residual and (cin != cout or stride != 1):
            raise ValueError("a residual conv block needs cin == cout and stride 1")
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.residual = residual
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_block(x)
        return self.act(x + y if self.residual else y)


def _stage(cin: int, cout: int, stride: "int | tuple[int, int]", n_res: int, kernel: int = 3) -> list[nn.Module]:
    """One strided conv block followed by `n_res` residual blocks at the new width."""
    layers: list[nn.Module] = [ConvBlock(cin, cout, kernel, stride, kernel // 2)]
    layers += [ConvBlock(cout, cout, residual=True) for _ in range(n_res)]
    return layers


class _PerBinNorm(nn.Module):
    """BatchNorm over mel bins of a (B, 1, bins, T) window (log-mel levels differ a lot per bin)."""

    def __init__(self, bins: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.flatten(1, 2)).unsqueeze(1)


def _audio_encoder(asr: str, shape: tuple[int, ...], widths: Sequence[int]) -> nn.Sequential:
    c0, c1, c2, c3, c4 = widths
    if asr == "mel":
        _, bins, _ = shape
        layers: list[nn.Module] = [_PerBinNorm(bins)]
        layers += _stage(1, c0, 1, 1)  # 80 x 64
        layers += _stage(c0, c1, 2, 2)  # 40 x 32
        layers += _stage(c1, c2, 2, 2)  # 20 x 16
        layers += _stage(c2, c3, 2, 2)  # 10 x 8
        layers += _stage(c3, c4, 2, 2)  # 5 x 4
    else:
        cin, h, w = shape
        # bring every reshaped feature block to 16x16 in the second stage, then 8x8 and 4x4
        second = (max(h // 16, 1), max(w // 16, 1))
        layers = _stage(cin, c2, 1, 2)
        layers += _stage(c2, c3, second, 2)
        layers += _stage(c3, c3, 2, 2)
        layers += _stage(c3, c4, 2, 2)
    layers.append(ConvBlock(c4, c4, 1, 1, 0))
    return nn.Sequential(*layers)


class SyncNet(nn.Module):
    """Audio–mouth sync critic; `forward(face, audio) -> (audio_emb, face_emb)`, both (B, 512) unit norm.

    `face` is the (B, 3, 320, 320) BGR [0, 1] network crop (any size works: pooling is global). Only
    its lower half (rows 160:320 of a 320 crop) is encoded: that is where the mouth and jaw are,
    the upper face carries no sync signal, and halving the pixels halves the encoder's cost.
    `audio` is the audio model's window tensor (`get_spec(asr).tensor_shape`).
    """

    def __init__(self, asr: str, width: "str | Sequence[int]" = "full", *, embed_dim: int = EMBED_DIM,
                 dropout: float = 0.0, init_scale: float = 10.0):
        super().__init__()
        from synctalk.audio.registry import get_spec

        c0, c1, c2, c3, c4 = widths = resolve_widths(width)
        self.asr = asr
        self.width = width if isinstance(width, str) else list(widths)
        self.audio_shape = tuple(get_spec(asr).tensor_shape)

        face: list[nn.Module] = [ConvBlock(3, c0, 7, 1, 3)]  # 160 x 320 (lower half of the crop)
        face += _stage(c0, c0, 2, 0, kernel=5)  # 80 x 160
        face += _stage(c0, c1, 2, 2)  # 40 x 80
        face += _stage(c1, c2, 2, 3)  # 20 x 40
        face += _stage(c2, c3, 2, 2)  # 10 x 20
        face += _stage(c3, c4, 2, 2)  # 5 x 10
        face += _stage(c4, c4, 2, 0)  # 3 x 5
        face.append(ConvBlock(c4, c4, 1, 1, 0))
        self.face_encoder = nn.Sequential(*face)
        self.audio_encoder = _audio_encoder(asr, self.audio_shape, widths)

        self.dropout = nn.Dropout(dropout)
        # plain linear projections: embeddings must be free to take either sign for the cosine
        self.face_proj = nn.Linear(c4, embed_dim)
        self.audio_proj = nn.Linear(c4, embed_dim)
        # logit = scale·cos - scale/2: cos 1 → +scale/2 (sync), cos 0 (unrelated pairs at init) → -scale/2
        self.logit_scale = nn.Parameter(torch.tensor(float(init_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(-float(init_scale) / 2))

    @property
    def config(self) -> dict:
        """What the constructor needs to rebuild this network (saved beside checkpoints)."""
        return {"asr": self.asr, "width": self.width}

    def _embed(self, encoder: nn.Module, proj: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = encoder(x).mean(dim=(2, 3))
        x = proj(self.dropout(x))
        # normalise in float32: under bf16 autocast a bf16 cosine is too coarse for the logit scale
        return F.normalize(x.float(), p=2, dim=1)

    def encode_face(self, face: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) crop → (B, 512) unit embedding of its lower half."""
        if face.dim() != 4 or face.shape[1] != 3:
            raise SyncTalkError(f"SyncNet face input must be (B, 3, H, W), got {tuple(face.shape)}")
        return self._embed(self.face_encoder, self.face_proj, face[:, :, face.shape[2] // 2 :])

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, *tensor_shape) audio window → (B, 512) unit embedding."""
        if tuple(audio.shape[1:]) != self.audio_shape:
            raise SyncTalkError(
                f"SyncNet built for audio model {self.asr!r} expects audio (B, {', '.join(map(str, self.audio_shape))}), "
                f"got {tuple(audio.shape)}"
            )
        return self._embed(self.audio_encoder, self.audio_proj, audio)

    def forward(self, face: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed a batch of faces and their audio windows → (audio_emb, face_emb)."""
        return self.encode_audio(audio), self.encode_face(face)

    def logits(self, audio_emb: torch.Tensor, face_emb: torch.Tensor) -> torch.Tensor:
        """(B,) sync logits = scale · cos(audio, face) + bias, for BCE-with-logits (1 = in sync)."""
        cos = (audio_emb.float() * face_emb.float()).sum(dim=1)
        return self.logit_scale * cos + self.logit_bias
