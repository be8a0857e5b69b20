"""Training data: the crop cache, the held-out split, and batched sample construction.

The crop cache is every frame's 328x328 face crop in one (N, 328, 328, 3) uint8 BGR .npy file, made
once from the frames and crop_boxes.npy and then memory-mapped: training never decodes a JPEG.
`FrameData` holds the crops' inner 320x320 and the audio features either on the training device
(the whole cache as uint8 on a GPU) or as the memmap on the host; either way a batch is chosen by
an integer index tensor, and masking, normalisation and audio windows are done batched on the
device. Samples:

* SyncNet: crop i with audio window i (in sync, label 1) or with window j, |i - j| >= 5 (label 0);
  some negatives are drawn 2-15 frames away (hard), and on request training pairs are jittered.
* UNet: target = inner crop of frame i; input = reference crop of another training frame
  concatenated with the target masked by a rectangle; audio = window i.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .errors import SyncTalkError
from .fileio import atomic_path
from .layout import CROP_SIZE, DatasetLayout

if TYPE_CHECKING:  # pragma: no cover
    import torch

BORDER = 4  # the networks see crop[4:324, 4:324]
INNER = CROP_SIZE - 2 * BORDER  # 320
# the reference's mask in the inner 320 crop: cv2.rectangle((5, 5, 310, 305)) fills x 5..314, y 5..309
DEFAULT_MASK: tuple[int, int, int, int] = (5, 5, 315, 310)  # x0, y0, x1, y1 (end exclusive)
MIN_NEGATIVE_OFFSET = 5  # an off-sync pair is at least this many frames apart


# ---------------------------------------------------------------- crop cache


def build_crop_cache(layout: DatasetLayout, progress: bool = True, workers: int | None = None) -> Path:
    """Crop every frame with its box into layout.crop_cache ((N, 328, 328, 3) uint8 BGR); return the path.

    Written to a temporary file and renamed into place, so a kill leaves no half cache.
    """
    import cv2
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from .faces.crop import crop_frame

    if not layout.crop_boxes.exists():
        raise SyncTalkError(f"{layout.crop_boxes} not found: preprocess the video first (synctalk preprocess --name {layout.name} ...)")
    boxes = np.load(layout.crop_boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) == 0:
        raise SyncTalkError(f"{layout.crop_boxes} must hold (N, 4) boxes, found shape {boxes.shape}")
    n = len(boxes)
    last = layout.frame_path(n - 1)
    if not last.exists():
        raise SyncTalkError(f"{layout.name}: {n} crop boxes but frame {last} is missing; rerun preprocessing")

    def crop_one(i: int) -> np.ndarray:
        img = cv2.imread(str(layout.frame_path(i)))
        if img is None:
            raise SyncTalkError(f"frame {layout.frame_path(i)} is missing or unreadable; rerun preprocessing")
        return crop_frame(img, boxes[i], CROP_SIZE)

    from .device import usable_cpus

    workers = max(1, workers if workers is not None else min(8, usable_cpus()))
    with atomic_path(layout.crop_cache, suffix=".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, CROP_SIZE, CROP_SIZE, 3))
        bar = tqdm(total=n, desc=f"crop cache {layout.name}", unit="frame", disable=not progress)
        chunk = 64
        with ThreadPoolExecutor(workers) as pool:  # cv2 decode/resize release the GIL
            for start in range(0, n, chunk):
                idx = range(start, min(start + chunk, n))
                for i, crop in zip(idx, pool.map(crop_one, idx)):
                    out[i] = crop
                bar.update(len(idx))
        bar.close()
        out.flush()
        del out
    return layout.crop_cache


def _cache_is_current(layout: DatasetLayout) -> bool:
    path = layout.crop_cache
    if not path.exists():
        return False
    try:
        cache = np.load(path, mmap_mode="r")
    except (ValueError, OSError):
        return False
    if cache.ndim != 4 or cache.shape[1:] != (CROP_SIZE, CROP_SIZE, 3) or cache.dtype != np.uint8:
        return False
    if layout.crop_boxes.exists():
        # boxes remade after the cache → the cache is stale
        if layout.crop_boxes.stat().st_mtime > path.stat().st_mtime:
            return False
        if np.load(layout.crop_boxes, mmap_mode="r").shape[0] != cache.shape[0]:
            return False
    return True


def load_crop_cache(layout: DatasetLayout, progress: bool = True) -> np.ndarray:
    """The crop cache as a read-only memmap (N, 328, 328, 3) uint8, built first when missing or stale."""
    if not _cache_is_current(layout):
        if not layout.crop_boxes.exists() and not layout.crop_cache.exists():
            raise SyncTalkError(
                f"{layout.root} has neither a crop cache nor crop_boxes.npy: preprocess first "
                f"(python scripts/preprocess_data.py --video_path VIDEO --name {layout.name})"
            )
        if layout.crop_boxes.exists():
            build_crop_cache(layout, progress=progress)
    return np.load(layout.crop_cache, mmap_mode="r")


# ---------------------------------------------------------------- split and features


def split_indices(n: int, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) frame indices: the last `val_fraction` of the video is held out, contiguous."""
    if not 0.0 <= val_fraction < 1.0:
        raise SyncTalkError(f"--val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n_val == 0 and n >= 2:
        n_val = 1
    if n - n_val < 2:
        raise SyncTalkError(f"only {n} frames: too few to train on (with {n_val} held out)")
    return np.arange(0, n - n_val, dtype=np.int64), np.arange(n - n_val, n, dtype=np.int64)


def load_features(layout: DatasetLayout, asr: str) -> np.ndarray:
    """The dataset's audio features for `asr`, float32 (N, *frame_shape), or a clear error."""
    from .audio.registry import get_spec

    spec = get_spec(asr)
    path = layout.features(asr)
    if not path.exists():
        raise SyncTalkError(
            f"{layout.name} has no {asr!r} audio features ({path} not found): make them with "
            f"`synctalk preprocess --video_path {layout.video} --name {layout.name} --asr_model {asr}` "
            f"(or python scripts/preprocess_data.py with the same flags)"
        )
    feats = np.load(path).astype(np.float32, copy=False)
    if tuple(feats.shape[1:]) != tuple(spec.frame_shape):
        raise SyncTalkError(f"{path} has rows of shape {feats.shape[1:]}, expected {spec.frame_shape} for {asr!r}")
    return feats


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


# ---------------------------------------------------------------- index sampling (torch generators)


def syncnet_pairs(frames: "torch.Tensor", pool: "torch.Tensor", generator: "torch.Generator",
                  min_offset: int = MIN_NEGATIVE_OFFSET, shuffle: bool = True
                  ) -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor]":
    """One epoch of SyncNet pairs: (face_idx, audio_idx, label) over `frames`.

    Each frame appears once; labels alternate 1, 0 along the (shuffled) order so every batch is
    balanced; a negative's audio frame is drawn from `pool` at least `min_offset` frames away.
    """
    import torch

    order = frames[torch.randperm(len(frames), generator=generator)] if shuffle else frames.clone()
    labels = (torch.arange(len(order)) % 2 == 0).float()
    audio = order.clone()
    neg = labels == 0
    audio[neg] = far_indices(order[neg], pool, generator, min_offset)
    return order, audio, labels


def far_indices(idx: "torch.Tensor", pool: "torch.Tensor", generator: "torch.Generator",
                min_offset: int = MIN_NEGATIVE_OFFSET) -> "torch.Tensor":
    """For each index, a random member of `pool` at least `min_offset` away from it."""
    import torch

    out = torch.empty_like(idx)
    todo = torch.arange(len(idx))
    for _ in range(64):
        if len(todo) == 0:
            return out
        pick = pool[torch.randint(len(pool), (len(todo),), generator=generator)]
        ok = (pick - idx[todo]).abs() >= min_offset
        out[todo[ok]] = pick[ok]
        todo = todo[~ok]
    # the few left (tiny pools): take the pool end farthest away, if it is far enough
    lo, hi = pool.min(), pool.max()
    rest = idx[todo]
    far = torch.where((rest - lo).abs() >= (hi - rest).abs(), lo, hi)
    if ((far - rest).abs() < min_offset).any():
        raise SyncTalkError(
            f"too few frames ({len(pool)}) to draw off-sync pairs at least {min_offset} frames apart"
        )
    out[todo] = far
    return out


def reference_indices(idx: "torch.Tensor", pool: "torch.Tensor", generator: "torch.Generator") -> "torch.Tensor":
    """For each frame a random *other* frame of `pool` (sorted; the UNet's reference crops)."""
    import torch

    ref = pool[torch.randint(len(pool), (len(idx),), generator=generator)]
    same = ref == idx
    if same.any() and len(pool) > 1:
        # shift to the pool neighbour: still random, never the frame itself
        pos = torch.searchsorted(pool, ref[same])
        ref[same] = pool[(pos + 1) % len(pool)]
    return ref


def frame_groups(centres: "torch.Tensor", frames: int, lo: int, hi: int) -> "torch.Tensor":
    """(G, frames) runs of consecutive frames centred on `centres`, clamped to [lo, hi].

    The UNet trains on such runs when its SyncNet judges several frames at once: the critic then
    sees `frames` generated crops in a row, and the held-out tail stays out of every run.
    """
    import torch

    offsets = torch.arange(frames, device=centres.device) - frames // 2
    return (centres[:, None] + offsets[None, :]).clamp(lo, hi)


# ---------------------------------------------------------------- batched samples on a device


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
                 on_device: "bool | str" = "auto", channels_last: bool = False, av_offset: int = 0):
        import torch

        from .audio.registry import get_spec

        self.spec = get_spec(asr)
        self.asr = asr
        self.device = torch.device(device)
        self.channels_last = channels_last
        # the video's audio/lip offset in frames (lips N frames after the sound): frame i hears window i - N
        self.av_offset = int(av_offset)
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
        idx = idx.to(self.features.device)
        if self.av_offset:
            idx = (idx - self.av_offset).clamp(0, self.n - 1)
        return self.spec.batch_windows(self.features, idx)

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
                    channels_last: bool = False, progress: bool = True, av_offset: int = 0) -> FrameData:
    """FrameData of a preprocessed dataset (building the crop cache when needed)."""
    feats = load_features(layout, asr)
    crops = load_crop_cache(layout, progress=progress)
    if abs(len(crops) - len(feats)) > 2:
        raise SyncTalkError(
            f"{layout.name}: {len(crops)} crops but {len(feats)} {asr!r} feature rows; rerun preprocessing"
        )
    return FrameData(crops, feats, asr, device=device, on_device=on_device, channels_last=channels_last,
                     av_offset=av_offset)


# ---------------------------------------------------------------- SyncNet: hard negatives and augmentation
#
# A person's video is short (a few hundred to a few thousand frames), and a SyncNet trained on it
# with plain pairs learns to recognise the frames instead of the sync: a negative drawn from
# anywhere in the video differs from the positive in head pose, lighting and the sentence being
# spoken, all of which identify the moment without looking at the lips. Negatives a few frames
# away share all of that and differ only in the mouth and the sound of that instant; random
# geometric and photometric jitter takes away what is left of the frame identity.

NEAR_NEGATIVE_OFFSETS = (2, 15)  # a hard negative's audio is this many frames away (both ends included)


def near_indices(idx: "torch.Tensor", pool: "torch.Tensor", generator: "torch.Generator",
                 offsets: tuple[int, int] = NEAR_NEGATIVE_OFFSETS) -> "torch.Tensor":
    """For each index, a member of `pool` (sorted) min..max frames before or after it; far when none is."""
    import torch

    lo, hi = int(offsets[0]), int(offsets[1])
    if not 1 <= lo <= hi:
        raise SyncTalkError(f"near-negative offsets must satisfy 1 <= min <= max, got {offsets}")
    n = len(idx)
    dist = torch.randint(lo, hi + 1, (n,), generator=generator)
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1, 1)

    def member(j: "torch.Tensor") -> "torch.Tensor":
        pos = torch.searchsorted(pool, j).clamp(max=len(pool) - 1)
        return pool[pos] == j

    out = idx + sign * dist
    bad = ~member(out)
    out[bad] = idx[bad] - sign[bad] * dist[bad]  # the other side (frames near either end of the pool)
    bad = ~member(out)
    if bad.any():
        out[bad] = far_indices(idx[bad], pool, generator, lo)
    return out


def add_hard_negatives(face_idx: "torch.Tensor", audio_idx: "torch.Tensor", labels: "torch.Tensor",
                       pool: "torch.Tensor", generator: "torch.Generator", fraction: float,
                       offsets: tuple[int, int] = NEAR_NEGATIVE_OFFSETS) -> "torch.Tensor":
    """`audio_idx` with `fraction` of the negatives (label 0) re-drawn near their face frame."""
    import torch

    if not 0.0 <= fraction <= 1.0:
        raise SyncTalkError(f"the hard-negative fraction must be in [0, 1], got {fraction}")
    neg = torch.nonzero(labels == 0).flatten()
    pick = torch.rand(len(neg), generator=generator) < fraction
    rows = neg[pick]
    out = audio_idx.clone()
    if len(rows):
        out[rows] = near_indices(face_idx[rows], pool, generator, offsets)
    return out


@dataclass(frozen=True)
class SyncNetAugment:
    """Per-sample jitter of SyncNet training pairs, drawn on the host and applied batched on the device.

    Faces: a random zoom (1 ± scale), translation (± shift of the side) and horizontal flip — a
    mouth is near-symmetric, its sync is not — plus brightness, contrast and per-channel gain.
    Audio (log-mel windows only): one band of up to `freq_mask` mel bins replaced by the window's
    mean, and optionally a level offset. The offset is off by default: a person's recording has one
    level, and loudness is one of the cues that go with how wide the mouth opens. Other audio
    features are left alone: their channels have no such meaning.
    Evaluation never augments: only the training loop calls this.
    """

    shift: float = 0.03
    scale: float = 0.06
    flip: bool = True
    brightness: float = 0.1
    contrast: float = 0.15
    channel_gain: float = 0.05
    audio_gain: float = 0.0  # ± level offset in log-mel units
    freq_mask: int = 8  # widest band of mel bins replaced by the window mean

    # columns of `sample`'s table
    _COLS = ("zoom", "tx", "ty", "flip", "bright", "contrast", "gain_b", "gain_g", "gain_r", "a_gain", "f0", "fw")

    def sample(self, n: int, generator: "torch.Generator") -> "torch.Tensor":
        """(n, 12) float32 jitter parameters (host, from `generator`): shard and move them like the indices."""
        import torch

        u = torch.rand(n, len(self._COLS), generator=generator) * 2 - 1  # uniform in [-1, 1)
        p = torch.empty_like(u)
        p[:, 0] = 1 + self.scale * u[:, 0]
        p[:, 1] = 2 * self.shift * u[:, 1]  # affine_grid coordinates span 2 per side
        p[:, 2] = 2 * self.shift * u[:, 2]
        p[:, 3] = torch.where(u[:, 3] < 0, -1.0, 1.0) if self.flip else 1.0
        p[:, 4] = self.brightness * u[:, 4]
        p[:, 5] = 1 + self.contrast * u[:, 5]
        p[:, 6:9] = 1 + self.channel_gain * u[:, 6:9]
        p[:, 9] = self.audio_gain * u[:, 9]
        p[:, 10] = (u[:, 10] + 1) / 2  # where the masked band starts, as a fraction of the free range
        p[:, 11] = torch.floor((u[:, 11] + 1) / 2 * (self.freq_mask + 1)).clamp(max=self.freq_mask)
        return p

    def faces(self, x: "torch.Tensor", params: "torch.Tensor") -> "torch.Tensor":
        """Jittered copies of float faces (B, 3·k, H, W) in [0, 1] (k stacked frames jittered alike)."""
        import torch
        import torch.nn.functional as F

        p = params.to(device=x.device, dtype=torch.float32)
        b = x.shape[0]
        theta = torch.zeros(b, 2, 3, device=x.device, dtype=torch.float32)
        theta[:, 0, 0] = p[:, 3] / p[:, 0]
        theta[:, 1, 1] = 1 / p[:, 0]
        theta[:, 0, 2] = p[:, 1]
        theta[:, 1, 2] = p[:, 2]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        y = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        mean = y.mean(dim=(1, 2, 3), keepdim=True)
        y = (y - mean) * p[:, 5, None, None, None] + mean + p[:, 4, None, None, None]
        shape = y.shape
        y = y.reshape(b, -1, 3, *shape[2:]) * p[:, None, 6:9, None, None]  # per-colour gain, every stacked frame
        y = y.reshape(shape).clamp_(0.0, 1.0).to(x.dtype)
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            y = y.contiguous(memory_format=torch.channels_last)
        return y

    def audio(self, a: "torch.Tensor", params: "torch.Tensor", layout: str) -> "torch.Tensor":
        """Jittered copies of audio windows; only log-mel windows (B, 1, bins, T) are changed."""
        import torch

        if layout != "mel":
            return a
        p = params.to(device=a.device, dtype=torch.float32)
        bins = a.shape[2]
        width = p[:, 11].clamp(max=bins - 1)
        start = torch.floor(p[:, 10] * (bins - width + 1)).clamp(max=bins - 1)
        k = torch.arange(bins, device=a.device, dtype=torch.float32)
        masked = (k[None] >= start[:, None]) & (k[None] < (start + width)[:, None])  # (B, bins)
        y = a.float() + p[:, 9, None, None, None]
        y = torch.where(masked[:, None, :, None], y.mean(dim=(2, 3), keepdim=True), y)
        return y.to(a.dtype)


# ---------------------------------------------------------------- dataset checks


def check_preprocessed(layout: DatasetLayout) -> None:
    """Raise when the dataset folder is missing or its preprocessing is recorded as unfinished."""
    from .state import TrainingState

    if not layout.root.is_dir():
        raise SyncTalkError(
            f"dataset folder {layout.root} not found: preprocess the video first "
            f"(python scripts/preprocess_data.py --video_path VIDEO --name {layout.name})"
        )
    sec = TrainingState(layout.state_file).section("preprocessing") if layout.state_file.exists() else {}
    if sec and not sec.get("completed") and not (layout.crop_boxes.exists() or layout.crop_cache.exists()):
        raise SyncTalkError(
            f"preprocessing of {layout.name} is not finished: rerun "
            f"`python scripts/preprocess_data.py --video_path {layout.video} --name {layout.name}` to complete it"
        )
    if not (layout.crop_boxes.exists() or layout.crop_cache.exists()):
        raise SyncTalkError(
            f"{layout.root} has no crop_boxes.npy: preprocess the video first "
            f"(python scripts/preprocess_data.py --video_path {layout.video} --name {layout.name})"
        )


def resolve_asr(layout: DatasetLayout, asr: str | None) -> str:
    """The audio model to train with: `asr` when given, else the one the dataset was preprocessed with."""
    from .audio.registry import ASR_MODELS, get_spec
    from .state import TrainingState

    if asr:
        get_spec(asr)
        if not layout.features(asr).exists():
            load_features(layout, asr)  # raises, naming the command that makes them
        return asr
    data = TrainingState(layout.state_file).load() if layout.state_file.exists() else {}
    sec = data.get("preprocessing") or {}
    candidates = [data.get("asr_model")] + list(sec.get("asr_models") or [])
    for name in candidates:
        if name in ASR_MODELS and layout.features(name).exists():
            return name
    present = [name for name in ASR_MODELS if layout.features(name).exists()]
    if len(present) == 1:
        return present[0]
    if not present:
        raise SyncTalkError(
            f"{layout.name} has no audio features: make them with "
            f"`synctalk preprocess --video_path {layout.video} --name {layout.name} --asr_model ave` (or mel, hubert, wenet)"
        )
    raise SyncTalkError(f"{layout.name} has features for {', '.join(present)}: choose one with --asr")
