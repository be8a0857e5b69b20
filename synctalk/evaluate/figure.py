"""A picture of the mouth: real against generated crops at a few moments of one recording.

Reads a video rendered from a recording's speech (`synctalk infer --audio_path REF`) and the
recording itself, finds the face in both with the app's detector and dlib landmarks, and lays the
mouth of each chosen frame side by side: the real one on the top row, the generated one below it
(several renders, of several checkpoints, give a row each, in the order given).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SyncTalkError

TILE = (192, 120)  # w, h of one mouth tile


def _frames_at(path: Path, wanted: Sequence[int]) -> dict[int, np.ndarray]:
    from .. import media

    want, out = set(int(i) for i in wanted), {}
    for i, frame in enumerate(media.iter_frames(path)):
        if i in want:
            out[i] = frame
        if len(out) == len(want):
            break
    missing = sorted(want - set(out))
    if missing:
        raise SyncTalkError(f"{path} has no frame {missing[0]} (it has {i + 1 if out or missing else 0})")
    return out


def _mouth_tile(frame: np.ndarray, points: np.ndarray, mouth: Sequence[int]) -> np.ndarray:
    """The mouth's box (its landmarks, widened by half its width) resized to one tile."""
    import cv2

    pts = points[list(mouth)]
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    w = max(x1 - x0, 8.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w, half_h = 0.8 * w, 0.8 * w * TILE[1] / TILE[0]
    xa, xb = int(max(cx - half_w, 0)), int(min(cx + half_w, frame.shape[1]))
    ya, yb = int(max(cy - half_h, 0)), int(min(cy + half_h, frame.shape[0]))
    return cv2.resize(frame[ya:yb, xa:xb], TILE, interpolation=cv2.INTER_CUBIC)


def mouth_strip(rendered: str | Path | Sequence[str | Path], reference: str | Path, frames: Sequence[int],
                output: str | Path, *, models_dir: str | Path | None = None, detector: str = "auto") -> Path:
    """Write a PNG: the reference's mouth (top) over each rendered one (a row each) at each of `frames`."""
    import cv2

    from ..fileio import atomic_path
    from .scoring import landmark_meter

    if not frames:
        raise SyncTalkError("name at least one frame for the picture")
    meter = landmark_meter("dlib", models_dir, "cpu", detector)
    mouth = list(meter.topology.mouth_outer)
    renders = [rendered] if isinstance(rendered, (str, Path)) else list(rendered)
    if not renders:
        raise SyncTalkError("name at least one rendered video for the picture")
    real = _frames_at(Path(reference), frames)
    order = sorted(real)
    videos = [(real, meter.measure([real[i] for i in order], track="real")[0])]
    for k, path in enumerate(renders):
        gen = _frames_at(Path(path), frames)
        # each video is tracked on its own: the avatar's head moves as the avatar's video did
        videos.append((gen, meter.measure([gen[i] for i in order], track=f"generated {k}")[0]))
    rows = []
    for src, pts_set in videos:
        rows.append(np.concatenate([_mouth_tile(src[i], p, mouth) for i, p in zip(order, pts_set)], axis=1))
    grid = np.concatenate(rows, axis=0)
    labels = np.full((24, grid.shape[1], 3), 255, np.uint8)
    for k, i in enumerate(order):
        cv2.putText(labels, f"{i / 25:.2f} s", (k * TILE[0] + 6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    picture = np.concatenate([labels, grid], axis=0)
    output = Path(output)
    with atomic_path(output, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), picture):
            raise SyncTalkError(f"could not write {output}")
    return output
