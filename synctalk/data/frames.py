"""FrameData: one person's crops and audio windows, batched by index tensors on a device; the UNet batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..constants import BORDER, CROP_SIZE, INNER
from ..errors import SyncTalkError
from ..layout import DatasetLayout
from .cache import load_crop_cache
from .features import load_features
from .samples import frame_groups

if TYPE_CHECKING:  # pragma: no cover
    import torch

# the reference's mask in the inner 320 crop: cv2.rectangle((5, 5, 310, 305)) fills x 5..314, y 5..309
DEFAULT_MASK: tuple[int, int, int, int] = (5, 5, 315, 310)  # x0, y0, x1, y1 (end exclusive)


def parse_mask(text: "str | Sequence[int] | None") -> tuple[int, int, int, int]:
    """'x0,y0,x1,y1' (inner-320 pixels, end exclusive) → a checked tuple; None → the default."""
    if text is None:
        return DEFAULT_MASK
    parts = [p for p in text.replace(" ", "").split(",")] if isinstance(text, str) else list(text)
    try:
        x0, y0, x1, y1 = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise SyncTalkError(f"mask must be four integers x0,y0,x1,y1, got {text!r}") from None
    if not (0 <= x0 < x1 <= INNER and 0 <= y0 < y1 <= INNER):
        raise SyncTalkError(f"mask {x0},{y0},{x1},{y1} must satisfy 0 <= x0 < x1 <= {INNER} and 0 <= y0 < y1 <= {INNER}")
    return x0, y0, x1, y1


@dataclass(frozen=True)
class Batch:
    """A UNet batch: img6 = (reference, masked) (B, 6, 320, 320), target (B, 3, 320, 320), audio."""

    img6: "torch.Tensor"
    target: "torch.Tensor"
    audio: "torch.Tensor"


class FrameData:
    """One person's crops and audio features, batched by index tensors on a device.

    `crops` is (N, 328, 328, 3) or (N, 320, 320, 3) uint8 (a memmap, an array or a tensor).
    `on_device`: keep the inner crops resident on `device` ("auto": when it is a GPU with room);
    otherwise batches are gathered from the host array and copied over.
    """

    def __init__(self, crops: Any, features: Any, asr: str, device: Any = "cpu",
                 on_device: "bool | str" = "auto", channels_last: bool = False,
                 av_offset: "int | Sequence[int] | np.ndarray" = 0):
        import torch

        from ..audio.registry import get_spec

        self.spec = get_spec(asr).for_rows(tuple(features.shape[1:]))
        self.asr = asr
        self.device = torch.device(device)
        self.channels_last = channels_last
        # the video's audio/lip offset in frames (lips N frames after the sound): frame i hears window
        # i - N; one N for the video, or one per frame for a video whose offset drifts
        per_frame = np.asarray(av_offset, dtype=np.int64).reshape(-1)
        self.av_offset = int(np.median(per_frame)) if per_frame.size else 0  # the summary number
        drifts = per_frame.size > 1 and bool((per_frame != per_frame[0]).any())
        n_crops = int(crops.shape[0])
        n_feats = int(features.shape[0])
        self.n = min(n_crops, n_feats)
        if self.n == 0:
            raise SyncTalkError("no frames to train on")
        if crops.shape[1] == CROP_SIZE:
            self._border = BORDER
        elif crops.shape[1] == INNER:
            self._border = 0
        else:
            raise SyncTalkError(f"crops must be {CROP_SIZE} or {INNER} pixels square, got {tuple(crops.shape)}")
        feats = torch.as_tensor(np.asarray(features[: self.n], dtype=np.float32))
        self.features = feats.to(self.device)
        self._audio_rows = None  # with per-frame offsets: the audio row each frame hears
        if drifts:
            self._audio_rows = torch.as_tensor(frame_audio_rows(self.n, per_frame), dtype=torch.long,
                                               device=self.device)
        if on_device == "auto":
            on_device = self.device.type != "cpu" and _fits_on_device(self.n * INNER * INNER * 3, self.device)
        # a tensor is already in memory: keep it (on the device) rather than index it like a memmap
        self.on_device = bool(on_device) or isinstance(crops, torch.Tensor)
        self._host = None
        self._dev = None
        if self.on_device:
            self._dev = self._to_inner_tensor(crops)
        else:
            self._host = crops
        self._keep: dict[tuple, torch.Tensor] = {}

    def _to_inner_tensor(self, crops: Any) -> "torch.Tensor":
        import torch

        b = self._border
        if isinstance(crops, torch.Tensor):
            return crops[: self.n, b:b + INNER, b:b + INNER].to(self.device).contiguous()
        # copy in slices straight to the device: a big memmap is never held whole in host memory
        out = torch.empty((self.n, INNER, INNER, 3), dtype=torch.uint8, device=self.device)
        for s in range(0, self.n, 256):
            e = min(s + 256, self.n)
            out[s:e] = torch.from_numpy(np.ascontiguousarray(crops[s:e, b:b + INNER, b:b + INNER])).to(self.device)
        return out

    def __len__(self) -> int:
        return self.n

    # -- images
    def crops_uint8(self, idx: "torch.Tensor") -> "torch.Tensor":
        """(B, 320, 320, 3) uint8 inner crops on the device."""
        import torch

        if self._dev is not None:
            return self._dev[idx.to(self._dev.device)]
        i = idx.cpu().numpy()
        order = np.argsort(i, kind="stable")
        b = self._border
        rows = np.empty((len(i), INNER, INNER, 3), dtype=np.uint8)
        rows[order] = self._host[i[order]][:, b:b + INNER, b:b + INNER]  # sorted reads are sequential on disk
        t = torch.from_numpy(rows)
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        return t

    def to_float(self, crops: "torch.Tensor") -> "torch.Tensor":
        """uint8 (B, H, W, 3) → float (B, 3, H, W) in [0, 1] (channels_last strides when asked)."""
        # a permuted NHWC tensor already has channels_last strides; .float() keeps them
        x = crops.permute(0, 3, 1, 2).float().div_(255.0)
        return x if self.channels_last else x.contiguous()

    def faces(self, idx: "torch.Tensor") -> "torch.Tensor":
        """(B, 3, 320, 320) float crops of frames `idx`."""
        return self.to_float(self.crops_uint8(idx))

    def face_stack(self, idx: "torch.Tensor", frames: int = 1, lo: int = 0, hi: int | None = None) -> "torch.Tensor":
        """(B, 3·frames, 320, 320): crops of frames idx - frames//2 … idx + frames//2, oldest first.

        Neighbours are clamped to [lo, hi] (default: the whole video), so a training stack never
        reaches into the held-out tail and the first and last frames repeat at the ends.
        """
        import torch

        if frames == 1:
            return self.faces(idx)
        x = self.faces(frame_groups(idx, frames, lo, len(self) - 1 if hi is None else hi).reshape(-1))
        x = x.reshape(len(idx), frames * 3, *x.shape[2:])
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def audio(self, idx: "torch.Tensor") -> "torch.Tensor":
        """(B, *tensor_shape) audio windows of frames `idx`, zero-padded at the ends.

        With an A/V offset N the window of frame i is the one centred on frame i - N (clamped to
        the video), so the lips of frame i learn from the sound that made them.
        """
        return self.spec.batch_windows(self.features, self.audio_rows(idx.to(self.features.device)))

    def audio_rows(self, idx: "torch.Tensor") -> "torch.Tensor":
        """The feature row (audio frame) that each frame of `idx` hears: i - its A/V offset, in the video."""
        if self._audio_rows is not None:
            return self._audio_rows[idx.to(self._audio_rows.device)]
        if self.av_offset:
            return (idx - self.av_offset).clamp(0, self.n - 1)
        return idx

    def keep_mask(self, mask: Sequence[int], dtype: Any = None) -> "torch.Tensor":
        """(1, 1, 320, 320) multiplier: 0 inside the mask rectangle, 1 elsewhere."""
        import torch

        dtype = dtype or torch.float32
        key = (tuple(mask), dtype)
        if key not in self._keep:
            x0, y0, x1, y1 = mask
            k = torch.ones((1, 1, INNER, INNER), dtype=dtype, device=self.device)
            k[..., y0:y1, x0:x1] = 0
            self._keep[key] = k
        return self._keep[key]

    def unet_batch(self, idx: "torch.Tensor", ref_idx: "torch.Tensor", mask: Sequence[int] = DEFAULT_MASK) -> Batch:
        """The UNet's inputs for frames `idx` with reference frames `ref_idx`."""
        import torch

        target = self.faces(idx)
        ref = self.faces(ref_idx)
        masked = target * self.keep_mask(mask, target.dtype)
        img6 = torch.cat([ref, masked], dim=1)
        if self.channels_last:
            img6 = img6.contiguous(memory_format=torch.channels_last)
        return Batch(img6=img6, target=target, audio=self.audio(idx))


def frame_audio_rows(n: int, av_offset: "int | Sequence[int] | np.ndarray") -> np.ndarray:
    """The feature row each of `n` frames hears: i - its A/V offset, within the video. `av_offset` is one
    number for the video or one per frame (a short list holds its last value)."""
    off = np.asarray(av_offset, dtype=np.int64).reshape(-1)[:n]
    if off.size == 0:
        off = np.zeros(1, np.int64)
    off = np.concatenate([off, np.full(n - len(off), off[-1])])
    return np.clip(np.arange(n) - off, 0, n - 1)


def _fits_on_device(nbytes: int, device: Any) -> bool:
    """Whether `nbytes` of crops leave room for training on a CUDA device (half its free memory)."""
    import torch

    if device.type != "cuda":
        return False
    try:
        free, _total = torch.cuda.mem_get_info(device)
    except RuntimeError:
        return False
    return nbytes < 0.5 * free


def load_frame_data(layout: DatasetLayout, asr: str, device: Any = "cpu", on_device: "bool | str" = "auto",
                    channels_last: bool = False, progress: bool = True,
                    av_offset: "int | np.ndarray" = 0) -> FrameData:
    """FrameData of a preprocessed dataset (building the crop cache when needed)."""
    feats = load_features(layout, asr)
    crops = load_crop_cache(layout, progress=progress)
    if abs(len(crops) - len(feats)) > 2:
        raise SyncTalkError(
            f"{layout.name}: {len(crops)} crops but {len(feats)} {asr!r} feature rows; rerun preprocessing"
        )
    return FrameData(crops, feats, asr, device=device, on_device=on_device, channels_last=channels_last,
                     av_offset=av_offset)
