"""The .lms landmark files of a dataset: one 'x y' line per point, full-frame pixels, one file per frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..fileio import write_bytes_atomic
from ..layout import DatasetLayout


def write_landmarks(path: Path, points: np.ndarray) -> None:
    """Write one .lms file: one 'x y' line per point, full-frame pixels."""
    text = "\n".join(f"{x:.2f} {y:.2f}" for x, y in points) + "\n"
    write_bytes_atomic(path, text.encode("ascii"))


def read_landmarks(path: Path) -> np.ndarray:
    """Read one .lms file into a (P, 2) float32 array."""
    return np.loadtxt(path, dtype=np.float32, ndmin=2)


def load_all_landmarks(layout: DatasetLayout, count: int) -> np.ndarray:
    """All landmark files of a dataset as (N, P, 2) float32."""
    return np.stack([read_landmarks(layout.landmark_path(i)) for i in range(count)])
