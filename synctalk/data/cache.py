"""The crop cache: every frame's 328x328 face crop in one memory-mapped uint8 .npy, and the dataset checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SyncTalkError
from ..fileio import atomic_path
from ..constants import CROP_SIZE
from ..layout import DatasetLayout


def build_crop_cache(layout: DatasetLayout, progress: bool = True, workers: int | None = None) -> Path:
    """Crop every frame with its box into layout.crop_cache ((N, 328, 328, 3) uint8 BGR); return the path.

    Written to a temporary file and renamed into place, so a kill leaves no half cache.
    """
    import cv2
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from ..faces.crop import crop_frame

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

    from ..device import usable_cpus

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


def check_preprocessed(layout: DatasetLayout) -> None:
    """Raise when the dataset folder is missing or its preprocessing is recorded as unfinished."""
    from ..state import PREPROCESSING, TrainingState

    if not layout.root.is_dir():
        raise SyncTalkError(
            f"dataset folder {layout.root} not found: preprocess the video first "
            f"(python scripts/preprocess_data.py --video_path VIDEO --name {layout.name})"
        )
    sec = TrainingState(layout.state_file).section(PREPROCESSING) if layout.state_file.exists() else {}
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
