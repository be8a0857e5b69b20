"""SyncNet critic: does this mouth go with this audio window?

A face encoder and an audio encoder, each a Conv+BN+LeakyReLU stack with residual blocks, end in
512-d L2-normalised embeddings; `logits` turns their cosine into a sync logit with a learnable scale
and bias, trained with BCE-with-logits (1 = in sync). Trained per person before the UNet and then
used frozen as a lip-sync loss on the UNet's output.

What each encoder sees matters more than its size on a person's few hundred frames:

* the face: the crop runs from the nose bridge to below the chin, so the mouth lies in rows
  ~70-190 of the 320 crop (measured on dlib landmarks of five fixture videos); the encoder sees the
  band FACE_ROWS = 0.2..0.7 of the height (rows 64-224): mouth and jaw, no neck or hair.
* the audio (log-mel): the window spans 16 video frames (640 ms) but one frame's mouth depends on
  ~±100 ms of sound; with global pooling a 640 ms window scores its neighbours a frame or two away
  almost the same. The encoder sees the central AUDIO_CONTEXT mel steps around the frame's own.
* time on the face side: with `face_frames` > 1 the face input stacks that many consecutive crops
  centred on the frame (3 channels each, oldest first), so the encoder sees the mouth move, as the
  5-frame SyncNet of Wav2Lip does; one still frame says little about which 40 ms of sound it shows.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from synctalk.errors import SyncTalkError

from .blocks import FeatureRowProjection, resolve_widths

EMBED_DIM = 512
FACE_ROWS = (0.2, 0.7)  # the encoded band of the crop, as fractions of its height (top, bottom)
AUDIO_CONTEXT = 24  # log-mel steps (10 ms each) around the frame that the audio encoder sees; 0: all


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
        layers += _stage(1, c0, 1, 1)  # 80 x T (T: AUDIO_CONTEXT steps, or 64)
        layers += _stage(c0, c1, 2, 2)  # 40 x T/2
        layers += _stage(c1, c2, 2, 2)  # 20 x T/4
        layers += _stage(c2, c3, 2, 2)  # 10 x T/8
        layers += _stage(c3, c4, 2, 2)  # 5 x T/16
    else:
        layers = []
        if len(shape) == 2:  # (rows, D) of a free-width model: each row → a 16x16 plane first
            layers.append(FeatureRowProjection(shape[1], 16))
            shape = (shape[0], 16, 16)
        cin, h, w = shape
        # bring every reshaped feature block to 16x16 in the second stage, then 8x8 and 4x4
        second = (max(h // 16, 1), max(w // 16, 1))
        layers += _stage(cin, c2, 1, 2)
        layers += _stage(c2, c3, second, 2)
        layers += _stage(c3, c3, 2, 2)
        layers += _stage(c3, c4, 2, 2)
    layers.append(ConvBlock(c4, c4, 1, 1, 0))
    return nn.Sequential(*layers)


class SyncNet(nn.Module):
    """Audio–mouth sync critic; `forward(face, audio) -> (audio_emb, face_emb)`, both (B, 512) unit norm.

    `face` is the (B, 3, 320, 320) BGR [0, 1] network crop (any size works: pooling is global). Only
    the band `face_rows` of its height is encoded (rows 64:224 of a 320 crop): the mouth and jaw;
    the nose, neck and hair carry no sync signal, and half the pixels halve the encoder's cost.
    `audio` is the audio model's window tensor (`get_spec(asr, feature_dim=audio_dim).tensor_shape`; `audio_dim`:
    the feature width of a free-width model, whisper); of a log-mel window
    only the `audio_context` steps centred on the frame are encoded (0: the whole window).
    """

    def __init__(self, asr: str, width: "str | Sequence[int]" = "full", *, embed_dim: int = EMBED_DIM,
                 dropout: float = 0.0, init_scale: float = 10.0,
                 face_rows: tuple[float, float] = FACE_ROWS, audio_context: int = AUDIO_CONTEXT,
                 face_frames: int = 1, audio_dim: "int | None" = None):
        super().__init__()
        from synctalk.audio.registry import get_spec

        c0, c1, c2, c3, c4 = widths = resolve_widths(width)
        top, bottom = (float(r) for r in face_rows)
        if not 0.0 <= top < bottom <= 1.0:
            raise SyncTalkError(f"SyncNet face_rows must satisfy 0 <= top < bottom <= 1, got {face_rows}")
        if face_frames < 1 or face_frames % 2 == 0:
            raise SyncTalkError(f"SyncNet face_frames must be odd and >= 1 (centred on the frame), got {face_frames}")
        spec = get_spec(asr, feature_dim=audio_dim)
        self.asr = asr
        self.audio_dim = spec.feature_dim if spec.free_dim else None  # whisper: the feature width
        self.face_frames = int(face_frames)
        self.audio_context = int(audio_context)
        self.width = width if isinstance(width, str) else list(widths)
        self.audio_shape = tuple(spec.tensor_shape)
        self.face_rows = (top, bottom)
        # the time slice of a log-mel window around the frame's own steps (other features: all of it)
        self.audio_slice: slice | None = None
        if spec.layout == "mel" and audio_context > 0:
            steps = int(spec.frame_shape[0])  # mel steps per video frame
            total = self.audio_shape[-1]
            centre = spec.left * steps + steps // 2
            start = min(max(centre - audio_context // 2, 0), max(total - audio_context, 0))
            self.audio_slice = slice(start, min(start + audio_context, total))

        face: list[nn.Module] = [ConvBlock(3 * self.face_frames, c0, 7, 1, 3)]  # 160 x 320 (the mouth band)
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
        config = {"asr": self.asr, "width": self.width, "face_rows": list(self.face_rows),
                  "audio_context": self.audio_context, "face_frames": self.face_frames}
        if self.audio_dim is not None:
            config["audio_dim"] = self.audio_dim
        return config

    def _embed(self, encoder: nn.Module, proj: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = encoder(x).mean(dim=(2, 3))
        x = proj(self.dropout(x))
        # normalise in float32: under bf16 autocast a bf16 cosine is too coarse for the logit scale
        return F.normalize(x.float(), p=2, dim=1)

    def face_band(self, height: int) -> slice:
        """The rows of a crop `height` pixels tall that the face encoder sees."""
        top, bottom = self.face_rows
        return slice(int(round(top * height)), max(int(round(bottom * height)), int(round(top * height)) + 1))

    def encode_face(self, face: torch.Tensor) -> torch.Tensor:
        """(B, 3·face_frames, H, W) crops → (B, 512) unit embedding of their mouth band."""
        if face.dim() != 4 or face.shape[1] != 3 * self.face_frames:
            raise SyncTalkError(f"SyncNet face input must be (B, {3 * self.face_frames}, H, W) "
                                f"({self.face_frames} frame(s) of 3 channels), got {tuple(face.shape)}")
        return self._embed(self.face_encoder, self.face_proj, face[:, :, self.face_band(face.shape[2])])

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, *tensor_shape) audio window → (B, 512) unit embedding."""
        if tuple(audio.shape[1:]) != self.audio_shape:
            raise SyncTalkError(
                f"SyncNet built for audio model {self.asr!r} expects audio (B, {', '.join(map(str, self.audio_shape))}), "
                f"got {tuple(audio.shape)}"
            )
        if self.audio_slice is not None:
            audio = audio[..., self.audio_slice]
        return self._embed(self.audio_encoder, self.audio_proj, audio)

    def forward(self, face: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed a batch of faces and their audio windows → (audio_emb, face_emb)."""
        return self.encode_audio(audio), self.encode_face(face)

    def logits(self, audio_emb: torch.Tensor, face_emb: torch.Tensor) -> torch.Tensor:
        """(B,) sync logits = scale · cos(audio, face) + bias, for BCE-with-logits (1 = in sync)."""
        cos = (audio_emb.float() * face_emb.float()).sum(dim=1)
        return self.logit_scale * cos + self.logit_bias
