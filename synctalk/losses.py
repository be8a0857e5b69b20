"""Training losses beyond plain pixels: VGG19 perceptual distance, the SyncNet lip-sync loss and the
hinge losses of the adversarial stage.

Imports torch at module level: only the training code imports this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import SyncTalkError

# torchvision's vgg19 `features` up to and including conv3_3 (index 14); the perceptual distance is
# taken on conv3_3's output, before its ReLU. Entries: ("conv", cin, cout) | ("relu",) | ("pool",)
_VGG19_TO_CONV3_3: tuple[tuple, ...] = (
    ("conv", 3, 64), ("relu",), ("conv", 64, 64), ("relu",), ("pool",),
    ("conv", 64, 128), ("relu",), ("conv", 128, 128), ("relu",), ("pool",),
    ("conv", 128, 256), ("relu",), ("conv", 256, 256), ("relu",), ("conv", 256, 256),
)

# ImageNet statistics in RGB order (what the VGG19 weights were trained with)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """VGG19 convolutional trunk to conv3_3; parameter keys match torchvision (`features.{i}.weight`)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for spec in _VGG19_TO_CONV3_3:
            if spec[0] == "conv":
                layers.append(nn.Conv2d(spec[1], spec[2], kernel_size=3, padding=1))
            elif spec[0] == "relu":
                layers.append(nn.ReLU(inplace=True))
            else:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """RGB ImageNet-normalised images → conv3_3 feature maps (B, 256, H/4, W/4)."""
        return self.features(x)

    def load_vgg_state_dict(self, state: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
        """Load a torchvision vgg19 state dict (classifier and deeper layers are ignored)."""
        own = self.state_dict()
        # accept the plain torchvision layout and the same keys without the "features." prefix
        if "features.0.weight" not in state and "0.weight" in state:
            state = {f"features.{k}": v for k, v in state.items()}
        missing = [k for k in own if k not in state]
        if missing:
            raise SyncTalkError(
                f"{source} is not a VGG19 checkpoint in torchvision layout: missing {', '.join(missing[:4])}"
                f"{' …' if len(missing) > 4 else ''} (expected keys like 'features.0.weight', as in vgg19-dcbb9e9d.pth)"
            )
        wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
                 if tuple(state[k].shape) != tuple(v.shape)]
        if wrong:
            raise SyncTalkError(f"{source} does not hold VGG19 weights: shape mismatch {'; '.join(wrong[:3])}")
        self.load_state_dict({k: state[k] for k in own}, strict=True)


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SyncTalkError(f"VGG19 weights file not found: {path}") from None
    except Exception as exc:  # a truncated download or another file format
        raise SyncTalkError(f"cannot read VGG19 weights from {path}: {exc.__class__.__name__}: {exc}") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SyncTalkError(f"{path} is not a VGG19 state dict (found {type(obj).__name__})")
    return obj


class PerceptualLoss(nn.Module):
    """MSE between frozen VGG19 conv3_3 features of prediction and target (BGR [0, 1] images).

    Images are flipped to RGB and ImageNet-normalised before the VGG, as its weights expect.
    Give `weights_path` (torchvision's vgg19-dcbb9e9d.pth) or an already loaded `state_dict`.
    """

    def __init__(self, weights_path: "str | os.PathLike | None" = None, *,
                 state_dict: "Mapping[str, torch.Tensor] | None" = None):
        super().__init__()
        if (weights_path is None) == (state_dict is None):
            raise SyncTalkError("PerceptualLoss needs exactly one of weights_path or state_dict")
        self.vgg = VGG19Features()
        if weights_path is not None:
            path = Path(weights_path)
            self.vgg.load_vgg_state_dict(_read_state_dict(path), source=str(path))
        else:
            self.vgg.load_vgg_state_dict(state_dict, source="the given state dict")  # type: ignore[arg-type]
        self.vgg.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> "PerceptualLoss":
        """Always stays in eval mode: the VGG is a fixed measuring device."""
        return super().train(False)

    def _features(self, bgr: torch.Tensor) -> torch.Tensor:
        rgb = bgr.flip(1)
        return self.vgg((rgb - self.mean.to(rgb.dtype)) / self.std.to(rgb.dtype))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar perceptual distance; gradients flow into `pred` only."""
        with torch.no_grad():
            target_features = self._features(target)
        pred_features = self._features(pred)
        return F.mse_loss(pred_features.float(), target_features.float())


def load_perceptual_loss(spec: str, models_dir: "str | os.PathLike | None" = None) -> "PerceptualLoss | None":
    """"vgg19" → PerceptualLoss with weights from the models dir; "none" → None (weights-free training)."""
    name = (spec or "").strip().lower()
    if name == "none":
        return None
    if name == "vgg19":
        from .weights import resolve_model_file

        return PerceptualLoss(resolve_model_file("vgg19", models_dir))
    raise SyncTalkError(f"unknown perceptual loss {spec!r}: choose 'vgg19' or 'none'")


SYNC_MODES = ("absolute", "relative")  # what the sync loss asks of a generated frame (see sync_loss)


def sync_bce(syncnet: nn.Module, face: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """(G,) float32: a SyncNet's BCE-with-logits of each run of `face` being in sync with its `audio`.

    A SyncNet of k > 1 frames judges consecutive runs: `face` is then (G·k, 3, H, W) in runs of k
    consecutive frames and each run is scored against the audio of its middle frame.
    """
    frames = int(getattr(syncnet, "face_frames", 1))
    if frames > 1:
        if face.shape[0] % frames:
            raise ValueError(f"a {frames}-frame SyncNet needs a batch in runs of {frames} frames, got {face.shape[0]}")
        face = face.reshape(face.shape[0] // frames, frames * face.shape[1], *face.shape[2:])
        audio = audio[frames // 2::frames]
    logits = syncnet.logits(*syncnet(face, audio)).float()
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")


def sync_loss(syncnet: nn.Module, face: torch.Tensor, audio: torch.Tensor,
              real: torch.Tensor | None = None) -> torch.Tensor:
    """A frozen SyncNet's judgement of generated `face` against its `audio` (runs as in sync_bce).

    Without `real` ("absolute"): the mean BCE of the face being in sync. With `real` (the true frames of
    the same runs, "relative"): per run, how much worse the generated face scores than the real one,
    max(0, BCE(generated) - BCE(real)), averaged: a critic that doubts some real frames (every per-person
    SyncNet does) then asks the generator to be as in sync as the person, not more, and its gradient ends
    where the prediction reaches the real frame's score instead of pushing on towards patterns that fool it.

    The caller freezes the SyncNet (eval mode, requires_grad False); gradients reach `face`.
    """
    if real is None:
        return sync_bce(syncnet, face, audio).mean()
    # one pass over both (one compiled shape); the real frames only set the floor
    generated, floor = sync_bce(syncnet, torch.cat([face, real.detach().to(face.dtype)]),
                                torch.cat([audio, audio])).chunk(2)
    return (generated - floor.detach()).clamp_min(0.0).mean()


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The critic's hinge loss: real patches pushed above +1, generated ones below -1 (float32)."""
    return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's side of the hinge game: raise the critic's score of its patches (float32)."""
    return -fake_logits.float().mean()
