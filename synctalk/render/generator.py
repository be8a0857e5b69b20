"""The generator side of rendering: which checkpoint, loading it, and the UNet on crops + audio windows.

`Generator` is the one place a batch of 328 crops and feature rows becomes generated crops: the audio
window of output frame k is `spec.batch_windows(features, rows)[k]` — the same registry call training
makes — so `synctalk infer`, `synctalk eval` and anything streaming see exactly the windows the UNet
was trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..constants import BORDER, INNER
from ..device import tune_cpu_allocator
from ..errors import SyncTalkError
from ..layout import DatasetLayout, checkpoint_layout
from ..state import PREPROCESSING


def resolve_checkpoint(checkpoint_dir: str | Path, name: str, checkpoint: str | Path | None = None) -> Path:
    """The UNet checkpoint to render with: the given file, else checkpoint_best.pth, latest, newest epoch."""
    from ..training.checkpoint import epoch_files

    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise SyncTalkError(f"checkpoint not found: {path}")
        return path
    ck = checkpoint_layout(checkpoint_dir, name)
    run_dir = ck.unet_dir
    candidates = [ck.best(run_dir), ck.latest(run_dir)] + [p for _e, p in reversed(epoch_files(run_dir))]
    for p in candidates:
        if p.is_file():
            return p
    raise SyncTalkError(
        f"no trained model for {name!r}: looked for {ck.best(run_dir)}, {ck.latest(run_dir)} and <epoch>.pth in "
        f"{run_dir}. Train one with `python scripts/train_328.py --name {name}` "
        f"(after `python scripts/train_328.py --name {name} --train_syncnet`), or pass --checkpoint FILE"
    )


def dataset_asr_models(layout: DatasetLayout) -> list[str]:
    """Audio models the dataset has feature files for (from its state file, else from the files present)."""
    from ..audio.registry import ASR_MODELS
    from ..state import TrainingState

    found: list[str] = []
    if layout.state_file.exists():
        sec = TrainingState(layout.state_file).section(PREPROCESSING)
        found = [a for a in (sec.get("asr_models") or sorted(sec.get("feature_files") or {})) if a in ASR_MODELS]
    if not found:
        found = [a for a in ASR_MODELS if layout.features(a).exists()]
    return found


def load_generator(path: str | Path, device: Any, *, asr: str | None = None,
                   layout: DatasetLayout | None = None) -> tuple[Any, dict]:
    """Build the UNet of a checkpoint and load its weights (eval mode, on `device`); return (model, checkpoint).

    Raises when the file is not a UNet checkpoint, when it was trained on other audio features than an
    explicitly asked `asr`, or than the ones `layout`'s dataset was preprocessed with.
    """
    from unet_328 import build_unet

    from ..training.checkpoint import load_checkpoint

    path = Path(path)
    ckpt = load_checkpoint(path, "unet")
    config = dict(ckpt.get("config") or {})
    have = ckpt.get("asr") or config.get("asr")
    if not have:
        raise SyncTalkError(f"{path} does not say which audio features it was trained on (no 'asr' entry)")
    if asr is not None and asr != have:
        raise SyncTalkError(
            f"{path} was trained on {have!r} audio features, but --asr {asr} was asked: "
            f"drop --asr, or pass a checkpoint trained on {asr!r}"
        )
    if layout is not None:
        made = dataset_asr_models(layout)
        if made and have not in made:
            raise SyncTalkError(
                f"{path} was trained on {have!r} audio features, but dataset {layout.root} has only "
                f"{', '.join(made)} features: is it another person's checkpoint? "
                f"(pass the right --checkpoint, or preprocess {layout.name} with --asr_model {have})"
            )
    width = config.get("width", "full")
    model = build_unet(have, width, config.get("audio_dim"))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:200]
        raise SyncTalkError(f"{path} does not fit a {width!r} UNet for {have!r} features: {first}") from None
    model = model.to(device).eval()
    return model, ckpt


CPU_MICRO_BATCH = 4  # on the CPU, small network batches keep activations in the reused heap (2x faster)


def fuse_conv_bn(model: Any) -> Any:
    """Fold every BatchNorm2d that follows a Conv2d in a Sequential into the convolution (eval only; in place).

    Inference then skips a third of its work (the normalisation passes) for the same output.
    """
    import torch.nn as nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    return model


INFERENCE_AMP = ("auto", "bf16", "none")  # what --amp of infer and serve takes (fp16 is training's only)


def inference_bf16(amp: str, device: Any) -> bool:
    """Whether a render or a server on `device` runs the UNet under bf16 autocast (auto: on a CUDA GPU)."""
    from ..device import resolve_amp

    if amp not in INFERENCE_AMP:
        raise SyncTalkError(f"--amp must be one of {', '.join(INFERENCE_AMP)} for rendering, got {amp!r}")
    return resolve_amp(amp, device) == "bf16"


class Generator:
    """A loaded UNet with its mask and audio model: crops + audio windows → generated 328 crops."""

    def __init__(self, model: Any, ckpt: dict, device: Any, bf16: bool = False, pad_to: int = 0):
        import torch

        from ..audio.registry import get_spec
        from ..data import parse_mask

        self.model = model
        self.device = device
        self.asr = ckpt.get("asr") or (ckpt.get("config") or {}).get("asr")
        self.spec = get_spec(self.asr, feature_dim=(ckpt.get("config") or {}).get("audio_dim"))
        self.mask = parse_mask((ckpt.get("config") or {}).get("mask"))
        self.bf16 = bool(bf16) and device.type == "cuda"
        # on a GPU every new input shape costs kernel selection (seconds with cuDNN); a short last
        # batch is padded to the usual size so a render sees one shape only
        self.pad_to = int(pad_to) if device.type == "cuda" else 0
        self.micro = CPU_MICRO_BATCH if device.type == "cpu" else 0
        if device.type == "cpu":
            tune_cpu_allocator()
        # NHWC is faster for these depthwise convolutions on the CPU (oneDNN) as on GPUs
        self.channels_last = True
        self.model = fuse_conv_bn(self.model.eval()).to(memory_format=torch.channels_last)
        x0, y0, x1, y1 = self.mask
        keep = torch.ones((1, 1, INNER, INNER), device=device)
        keep[..., y0:y1, x0:x1] = 0
        self.keep = keep

    def __call__(self, crops: np.ndarray, features: Any, audio_idx: Sequence[int],
                 references: np.ndarray | None = None) -> Any:
        """(B, 328, 328, 3) uint8 crops, audio rows → (B, 3, 328, 328) float [0, 1].

        Each crop is its own reference unless `references` (same shape) gives another appearance
        (a resting mouth in pauses); the masked input is always the crop itself, so the pose is its own.
        """
        import contextlib

        import torch

        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        b = len(crops)
        audio_idx = np.asarray(audio_idx)
        if b < self.pad_to:
            fill = self.pad_to - b
            crops = np.concatenate([crops, np.repeat(crops[-1:], fill, axis=0)])
            if references is not None:
                references = np.concatenate([references, np.repeat(references[-1:], fill, axis=0)])
            audio_idx = np.concatenate([audio_idx, np.repeat(audio_idx[-1:], fill)])
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(crops))
            if self.device.type == "cuda":
                t = t.pin_memory()
            full = t.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
            inner = full[:, :, BORDER:BORDER + INNER, BORDER:BORDER + INNER]
            ref = inner
            if references is not None:
                r = torch.from_numpy(np.ascontiguousarray(references)).to(self.device).permute(0, 3, 1, 2)
                ref = r[:, :, BORDER:BORDER + INNER, BORDER:BORDER + INNER].float().div_(255.0)
            img6 = torch.cat([ref, inner * self.keep], dim=1)
            if self.channels_last:
                img6 = img6.contiguous(memory_format=torch.channels_last)
            idx = torch.as_tensor(np.asarray(audio_idx), dtype=torch.long, device=features.device)
            audio = self.spec.batch_windows(features, idx).to(self.device)
            step = self.micro or len(img6)
            with ctx:
                pred = torch.cat([self.model(img6[i:i + step], audio[i:i + step])
                                  for i in range(0, len(img6), step)])
            # the 4-pixel border keeps the real crop; the network's image fills the inner 320
            full[:, :, BORDER:BORDER + INNER, BORDER:BORDER + INNER] = pred.float().clamp_(0, 1)
        return full[:b]


def crops_to_uint8(crops: Any) -> np.ndarray:
    """(B, 3, H, W) float [0, 1] tensor → (B, H, W, 3) uint8 BGR array."""
    import torch

    return crops.mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
