"""The .lms landmark files of a dataset: one 'x y' line per point, full-frame pixels, one file per frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SyncTalkError
from ..fileio import write_bytes_atomic
from ..layout import DatasetLayout


def write_landmarks(path: Path, points: np.ndarray) -> None:
    """Write one .lms file: one 'x y' line per point, full-frame pixels."""
    text = "\n".join(f"{x:.2f} {y:.2f}" for x, y in points) + "\n"
    write_bytes_atomic(path, text.encode("ascii"))


def read_landmarks(path: Path) -> np.ndarray:
    """Read one .lms file into a (P, 2) float32 array (a damaged file is a SyncTalkError naming it)."""
    try:
        points = np.loadtxt(path, dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise SyncTalkError(f"landmark file {path} is damaged ({exc}); delete it and rerun preprocessing to "
                            f"detect that frame again") from None
    if points.shape[1] != 2 or not np.isfinite(points).all():
        raise SyncTalkError(f"landmark file {path} is damaged (expected finite 'x y' lines, found shape "
                            f"{points.shape}); delete it and rerun preprocessing to detect that frame again")
    return points


def load_all_landmarks(layout: DatasetLayout, count: int) -> np.ndarray:
    """All landmark files of a dataset as (N, P, 2) float32."""
    return np.stack([read_landmarks(layout.landmark_path(i)) for i in range(count)])
