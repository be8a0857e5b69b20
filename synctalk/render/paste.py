"""Paste-back: a generated 328 crop resized into its box of the full frame, with a feathered border."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..constants import CROP_SIZE

FEATHER_FRACTION = 0.08  # width of the blend ramp at the box border, as a fraction of the box side


_FEATHER_CACHE: dict[tuple[int, int], np.ndarray] = {}


def feather_alpha(height: int, width: int, fraction: float = FEATHER_FRACTION) -> np.ndarray:
    """(height, width) float32 blend weight: 1 inside, easing to 0 at the border over `fraction` of the side."""
    key = (height, width)
    if key in _FEATHER_CACHE and fraction == FEATHER_FRACTION:
        return _FEATHER_CACHE[key]
    ramp = max(fraction * min(height, width), 1.0)

    def edge(n: int) -> np.ndarray:
        d = np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5)
        t = np.clip(d / ramp, 0.0, 1.0)
        return t * t * (3.0 - 2.0 * t)  # smoothstep: no visible kink where the ramp ends

    alpha = np.minimum(edge(height)[:, None], edge(width)[None, :]).astype(np.float32)
    if fraction == FEATHER_FRACTION:
        _FEATHER_CACHE[key] = alpha
    return alpha


# ---------------------------------------------------------------- paste-back


def _clip_box(box: Sequence[int], frame_hw: tuple[int, int]) -> tuple[int, int, int, int, int, int, int, int]:
    """Box and its part inside the frame: (x1, y1, x2, y2, sx0, sy0, sx1, sy1)."""
    x1, y1, x2, y2 = (int(v) for v in box[:4])
    h, w = frame_hw
    return x1, y1, x2, y2, max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)


def paste_back(frame: np.ndarray, crop328: np.ndarray, box: Sequence[int], weight: float = 1.0) -> np.ndarray:
    """Resize a 328 crop into its box of `frame` and blend it in with a feathered border (CPU, in place)."""
    import cv2

    x1, y1, x2, y2, sx0, sy0, sx1, sy1 = _clip_box(box, frame.shape[:2])
    bw, bh = x2 - x1, y2 - y1
    if sx1 <= sx0 or sy1 <= sy0 or weight <= 0:
        return frame
    interp = cv2.INTER_AREA if (bw < CROP_SIZE and bh < CROP_SIZE) else cv2.INTER_CUBIC
    patch = cv2.resize(crop328, (bw, bh), interpolation=interp)[sy0 - y1:sy1 - y1, sx0 - x1:sx1 - x1]
    alpha = feather_alpha(bh, bw)[sy0 - y1:sy1 - y1, sx0 - x1:sx1 - x1, None] * np.float32(weight)
    region = frame[sy0:sy1, sx0:sx1].astype(np.float32)
    frame[sy0:sy1, sx0:sx1] = np.clip(region + (patch.astype(np.float32) - region) * alpha + 0.5, 0, 255).astype(np.uint8)
    return frame


def paste_back_torch(frames: Sequence[np.ndarray], crops328: Any, boxes: Sequence[Sequence[int]],
                     weights: Sequence[float]) -> None:
    """The same paste-back with the resize and blend on the crops' device; in place.

    `crops328` is (B, 3, 328, 328) float in [0, 1] on any device; `frames` are host BGR uint8 arrays.
    The frames' regions go to the device in one copy (pinned, so it does not wait for the device's
    queued work) and come back in one; the blend weights are made on the device.
    """
    import torch
    import torch.nn.functional as F

    device = crops328.device
    jobs = []
    for i, (frame, box, wgt) in enumerate(zip(frames, boxes, weights)):
        x1, y1, x2, y2, sx0, sy0, sx1, sy1 = _clip_box(box, frame.shape[:2])
        if sx1 <= sx0 or sy1 <= sy0 or wgt <= 0:
            continue
        jobs.append((i, x1, y1, x2, y2, sx0, sy0, sx1, sy1, float(wgt)))
    if not jobs:
        return
    sizes = [(j[8] - j[6]) * (j[7] - j[5]) * 3 for j in jobs]
    host = torch.empty(sum(sizes), dtype=torch.uint8, pin_memory=device.type == "cuda")
    staged = host.numpy()
    pos = 0
    for (i, _x1, _y1, _x2, _y2, sx0, sy0, sx1, sy1, _w), n in zip(jobs, sizes):
        staged[pos:pos + n].reshape(sy1 - sy0, sx1 - sx0, 3)[:] = frames[i][sy0:sy1, sx0:sx1]
        pos += n
    regions = host.to(device, non_blocking=True).split(sizes)
    parts = []
    for (i, x1, y1, x2, y2, sx0, sy0, sx1, sy1, wgt), flat in zip(jobs, regions):
        bw, bh = x2 - x1, y2 - y1
        shrink = bw < CROP_SIZE and bh < CROP_SIZE
        patch = F.interpolate(crops328[i:i + 1].float(), size=(bh, bw), mode="bicubic", align_corners=False,
                              antialias=shrink)[0, :, sy0 - y1:sy1 - y1, sx0 - x1:sx1 - x1]
        region = flat.reshape(sy1 - sy0, sx1 - sx0, 3).permute(2, 0, 1).float()
        alpha = feather_alpha_torch(bh, bw, device)[sy0 - y1:sy1 - y1, sx0 - x1:sx1 - x1]
        out = region + (patch * 255.0 - region) * (alpha * wgt)
        parts.append(out.add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).reshape(-1))
    flat = torch.cat(parts).cpu().numpy()  # one device → host copy for the whole batch
    pos = 0
    for (i, _x1, _y1, _x2, _y2, sx0, sy0, sx1, sy1, _w), n in zip(jobs, sizes):
        frames[i][sy0:sy1, sx0:sx1] = flat[pos:pos + n].reshape(sy1 - sy0, sx1 - sx0, 3)
        pos += n


def feather_alpha_torch(height: int, width: int, device: Any, fraction: float = FEATHER_FRACTION) -> Any:
    """feather_alpha computed on `device` (float32), so no host array is copied over per frame."""
    import torch

    ramp = max(fraction * min(height, width), 1.0)

    def edge(n: int) -> "torch.Tensor":
        k = torch.arange(n, device=device, dtype=torch.float64)
        t = (torch.minimum(k + 0.5, n - k - 0.5) / ramp).clamp_(0.0, 1.0)
        return t * t * (3.0 - 2.0 * t)

    return torch.minimum(edge(height)[:, None], edge(width)[None, :]).float()
