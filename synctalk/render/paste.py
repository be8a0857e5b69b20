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
    """The same paste-back with the resize and blend on the crops' device (one transfer back); in place.

    `crops328` is (B, 3, 328, 328) float in [0, 1] on any device; `frames` are host BGR uint8 arrays.
    """
    import torch
    import torch.nn.functional as F

    device = crops328.device
    jobs = []
    parts = []
    for i, (frame, box, wgt) in enumerate(zip(frames, boxes, weights)):
        x1, y1, x2, y2, sx0, sy0, sx1, sy1 = _clip_box(box, frame.shape[:2])
        bw, bh = x2 - x1, y2 - y1
        if sx1 <= sx0 or sy1 <= sy0 or wgt <= 0:
            continue
        shrink = bw < CROP_SIZE and bh < CROP_SIZE
        patch = F.interpolate(crops328[i:i + 1].float(), size=(bh, bw), mode="bicubic", align_corners=False,
                              antialias=shrink)[0, :, sy0 - y1:sy1 - y1, sx0 - x1:sx1 - x1]
        region = torch.from_numpy(np.ascontiguousarray(frame[sy0:sy1, sx0:sx1])).to(device, non_blocking=True)
        region = region.permute(2, 0, 1).float()
        alpha = torch.from_numpy(feather_alpha(bh, bw)[sy0 - y1:sy1 - y1, sx0 - x1:sx1 - x1]).to(device)
        out = region + (patch * 255.0 - region) * (alpha * float(wgt))
        parts.append(out.add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).reshape(-1))
        jobs.append((i, sx0, sy0, sx1, sy1))
    if not parts:
        return
    flat = torch.cat(parts).cpu().numpy()  # one device → host copy for the whole batch
    pos = 0
    for i, sx0, sy0, sx1, sy1 in jobs:
        n = (sy1 - sy0) * (sx1 - sx0) * 3
        frames[i][sy0:sy1, sx0:sx1] = flat[pos:pos + n].reshape(sy1 - sy0, sx1 - sx0, 3)
        pos += n
