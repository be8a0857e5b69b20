"""Frame source and sink of a render: the avatar's walk, its boxes, decoding ahead, encoding behind."""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..constants import CROP_SIZE
from ..errors import SyncTalkError
from ..layout import DatasetLayout


def pingpong_indices(count: int, num_frames: int, start_frame: int = 0, loop_back: bool = False) -> np.ndarray:
    """Source frame of each of `count` output frames: forward from start_frame, bouncing at both ends.

    With `loop_back` the walk turns round halfway so the last output frame is start_frame again.
    """
    if num_frames < 1:
        raise SyncTalkError("the dataset has no frames")
    if not 0 <= start_frame < num_frames:
        raise SyncTalkError(f"--start_frame {start_frame} is outside the dataset's frames 0..{num_frames - 1}")
    k = np.arange(count, dtype=np.int64)
    if loop_back:
        k = np.minimum(k, count - 1 - k)
    if num_frames == 1:
        return np.zeros(count, dtype=np.int64)
    period = 2 * (num_frames - 1)
    u = (start_frame + k) % period
    return np.where(u < num_frames, u, period - u).astype(np.int64)


def load_boxes(layout: DatasetLayout) -> np.ndarray:
    """The dataset's smoothed crop boxes (N, 4), checked."""
    if not layout.root.is_dir():
        raise SyncTalkError(
            f"dataset folder {layout.root} not found: preprocess the person first "
            f"(python scripts/preprocess_data.py --video_path VIDEO --name {layout.name})"
        )
    if not layout.crop_boxes.exists():
        raise SyncTalkError(f"{layout.crop_boxes} not found: preprocessing of {layout.name} is not finished")
    boxes = np.load(layout.crop_boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) == 0:
        raise SyncTalkError(f"{layout.crop_boxes} must hold (N, 4) boxes, found shape {boxes.shape}")
    return boxes.astype(np.int64)


def cv2_shape(path: Path) -> tuple[int, int]:
    """(height, width) of an image file."""
    import cv2

    img = cv2.imread(str(path))
    if img is None:
        raise SyncTalkError(f"frame {path} is missing or unreadable")
    return img.shape[0], img.shape[1]


def _read_frame(layout: DatasetLayout, boxes: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    from ..faces.crop import crop_frame

    path = layout.frame_path(index)
    img = cv2.imread(str(path))
    if img is None:
        raise SyncTalkError(f"frame {path} is missing or unreadable; rerun preprocessing for {layout.name}")
    return img, crop_frame(img, boxes[index], CROP_SIZE)


def prefetch_frames(layout: DatasetLayout, boxes: np.ndarray, sources: Sequence[int], chunk: int,
                    workers: int = 4, ahead: int = 3) -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
    """Chunks of (frame, 328 crop) for `sources`, decoded by worker threads `ahead` chunks in advance."""
    pending: deque = deque()
    starts = iter(range(0, len(sources), chunk))
    with ThreadPoolExecutor(max(1, workers)) as pool:  # cv2 decoding and resizing release the GIL

        def submit() -> bool:
            s = next(starts, None)
            if s is None:
                return False
            pending.append([pool.submit(_read_frame, layout, boxes, int(i)) for i in sources[s:s + chunk]])
            return True

        for _ in range(ahead):
            if not submit():
                break
        while pending:
            futures = pending.popleft()
            submit()
            yield [f.result() for f in futures]


class FrameSink:
    """A writer thread in front of a VideoWriter, so encoding overlaps the network."""

    def __init__(self, writer: Any, depth: int = 64):
        self.writer = writer
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="synctalk-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            frame = self.q.get()
            if frame is None:
                return
            if self.error is None:
                try:
                    self.writer.write(frame)
                except BaseException as exc:  # handed to the main thread in put()/close()
                    self.error = exc

    def put(self, frame: np.ndarray) -> None:
        """Queue a frame (re-raising a failure of the writer thread)."""
        if self.error is not None:
            raise self.error
        self.q.put(frame)

    def close(self) -> None:
        """Wait until every queued frame is written."""
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
