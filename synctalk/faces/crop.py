"""Crop boxes from landmarks, their temporal smoothing, and cutting the 328-px face crop."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import SyncTalkError
from .topology import Topology


def fit_square(x1: np.ndarray, y1: np.ndarray, side: np.ndarray, frame_hw: Sequence[int]) -> np.ndarray:
    """Square boxes (N, 4) int32 moved (not cut) to lie inside the frame; shrunk only if larger than it.

    Moving keeps every crop square, so resizing it to the network size never changes the face's
    aspect ratio; the face only sits off-centre in crops at the frame edge.
    """
    h, w = int(frame_hw[0]), int(frame_hw[1])
    side = np.clip(np.asarray(side, np.int64), 1, min(h, w))
    x1 = np.clip(np.asarray(x1, np.int64), 0, w - side)
    y1 = np.clip(np.asarray(y1, np.int64), 0, h - side)
    return np.stack([x1, y1, x1 + side, y1 + side], axis=-1).astype(np.int32)


def crop_boxes_from_landmarks(lms: np.ndarray, topology: Topology, frame_hw: Sequence[int]) -> np.ndarray:
    """The reference crop rule per frame: (N, P, 2) landmarks → (N, 4) int32 x1 y1 x2 y2.

    Left/right edges are the topology's contour points, the top its nose-bridge point, and the box
    is square (bottom = top + width), so it spans from the nose bridge to below the chin.
    """
    lms = np.asarray(lms, np.float32)
    if lms.ndim == 2:
        lms = lms[None]
    if not np.isfinite(lms).all():
        bad = np.nonzero(~np.isfinite(lms).all(axis=(1, 2)))[0]
        raise SyncTalkError(f"landmarks of frames {bad[:10].tolist()} are not finite (frames without a face?)")
    left, right, top = topology.crop_edges(lms)
    x1 = np.rint(left).astype(np.int64)
    x2 = np.rint(right).astype(np.int64)
    y1 = np.rint(top).astype(np.int64)
    side = x2 - x1
    if (side <= 0).any():
        bad = np.nonzero(side <= 0)[0]
        raise SyncTalkError(
            f"crop rule gives an empty box for frames {bad[:10].tolist()}: "
            f"are these {topology.name} landmarks of a face?"
        )
    return fit_square(x1, y1, side, frame_hw)


def _segments(cx: np.ndarray, cy: np.ndarray, side: np.ndarray, cut_fraction: float) -> list[slice]:
    """Split at scene cuts (centre jumps by more than cut_fraction of the box side) so no average spans one."""
    if len(cx) == 0:
        return []
    jump = np.hypot(np.diff(cx), np.diff(cy))
    cuts = np.nonzero(jump > cut_fraction * np.minimum(side[:-1], side[1:]))[0] + 1
    edges = [0, *cuts.tolist(), len(cx)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def centred_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average; near the ends the window shrinks symmetrically, so there is no lag."""
    x = np.asarray(x, np.float64)
    n, r = len(x), max(int(window), 1) // 2
    if n == 0 or r == 0:
        return x.copy()
    csum = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(n)
    half = np.minimum(np.minimum(idx, n - 1 - idx), r)  # symmetric radius that fits
    return (csum[idx + half + 1] - csum[idx - half]) / (2 * half + 1)


def smooth_boxes(
    boxes: np.ndarray,
    window: int = 5,
    size_window: int | None = None,
    frame_hw: Sequence[int] | None = None,
    cut_fraction: float = 0.5,
) -> np.ndarray:
    """Temporally smooth crop boxes (N, 4) → (N, 4) int32 square boxes.

    Box centres are averaged over `window` frames and the side over `size_window` frames (default
    2·window+1: the face's size changes slower than its position). Averages do not cross scene cuts.
    With `frame_hw` the boxes are moved inside the frame.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros((0, 4), np.int32)
    size_window = 2 * window + 1 if size_window is None else size_window
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    s_cx, s_cy, s_side = cx.copy(), cy.copy(), side.copy()
    for seg in _segments(cx, cy, side, cut_fraction):
        s_cx[seg] = centred_mean(cx[seg], window)
        s_cy[seg] = centred_mean(cy[seg], window)
        s_side[seg] = centred_mean(side[seg], size_window)
    s_side = np.maximum(np.rint(s_side), 1)
    x1 = np.rint(s_cx - s_side / 2)
    y1 = np.rint(s_cy - s_side / 2)
    if frame_hw is not None:
        return fit_square(x1, y1, s_side, frame_hw)
    return np.stack([x1, y1, x1 + s_side, y1 + s_side], axis=-1).astype(np.int32)


def crop_frame(img: np.ndarray, box: Sequence[int], size: int = 328, interpolation: int | None = None) -> np.ndarray:
    """Cut box x1 y1 x2 y2 from a BGR frame (black beyond its edges) and resize to (size, size, 3) uint8.

    Default interpolation: INTER_AREA when shrinking (no aliasing); INTER_CUBIC when enlarging,
    where INTER_AREA degenerates to uneven pixel replication.
    """
    import cv2

    x1, y1, x2, y2 = (int(v) for v in box[:4])
    bw, bh = x2 - x1, y2 - y1
    if bw <= 0 or bh <= 0:
        raise SyncTalkError(f"empty crop box {list(box)}")
    h, w = img.shape[:2]
    if x1 >= 0 and y1 >= 0 and x2 <= w and y2 <= h:
        crop = img[y1:y2, x1:x2]
    else:
        crop = np.zeros((bh, bw) + img.shape[2:], img.dtype)
        sx0, sy0, sx1, sy1 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx1 > sx0 and sy1 > sy0:
            crop[sy0 - y1 : sy1 - y1, sx0 - x1 : sx1 - x1] = img[sy0:sy1, sx0:sx1]
    if interpolation is None:
        interpolation = cv2.INTER_AREA if (bw >= size and bh >= size) else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interpolation)
