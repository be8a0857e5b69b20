"""Frames → face landmarks: detect and pick the face per frame, then one batched landmark pass.

With `detect_every` N > 1 the detector runs on every Nth frame of a batch (and its last frame) and
the boxes in between are interpolated: a talking head moves little in N/25 s, and the landmark
networks are insensitive to a box a few pixels off. Where the two key frames around a stretch
disagree (a face on one side only, or boxes that barely overlap, as at a cut), every frame of the
stretch is detected after all.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..device import usable_cpus
from .detector import FaceDetector, box_iou, pick_face
from .landmarks import Landmarker

if TYPE_CHECKING:
    from .dlib_detector import DlibFaceDetector


class FaceLandmarkPipeline:
    """Detector + landmarker over batches of frames, following the same face from call to call."""

    def __init__(self, detector: "FaceDetector | DlibFaceDetector", landmarker: Landmarker, workers: int = 1,
                 detect_every: int = 1) -> None:
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        self.detect_every = int(detect_every)
        self.detector = detector
        self.landmarker = landmarker
        self.topology = landmarker.topology
        self._previous_box: np.ndarray | None = None
        # onnxruntime releases the GIL, so frames are detected in parallel, one session per thread;
        # a detector that keeps the GIL (dlib) says so and runs on the calling thread
        self.workers = max(1, int(workers)) if getattr(detector, "parallel_frames", True) else 1
        self._replicas: list[FaceDetector] = []
        self._pool: ThreadPoolExecutor | None = None
        if self.workers > 1:
            per = max(1, usable_cpus() // self.workers)
            self._replicas = detector.replicas(self.workers, per)
            self._pool = ThreadPoolExecutor(self.workers)

    def reset(self) -> None:
        """Forget the followed face (call between unrelated videos)."""
        self._previous_box = None

    def _detect(self, frames: Sequence[np.ndarray], which: Sequence[int]) -> list:
        if self._pool is not None:
            reps = self._replicas
            return list(self._pool.map(lambda k: reps[k % len(reps)].detect(frames[which[k]]), range(len(which))))
        return [self.detector.detect(frames[i]) for i in which]

    def _pick(self, frames: Sequence[np.ndarray], which: Sequence[int], boxes: np.ndarray, found: np.ndarray) -> None:
        # the face is picked in frame order, so following the previous box still works
        for i, dets in zip(which, self._detect(frames, which)):
            face = pick_face(dets, self._previous_box)
            if face is not None:
                boxes[i] = face.box
                found[i] = True
                self._previous_box = face.box

    def detect_boxes(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Per frame the chosen face box (B, 4) float32 (NaN where none) and found (B,) bool."""
        n = len(frames)
        boxes = np.full((n, 4), np.nan, np.float32)
        found = np.zeros(n, bool)
        if n == 0:
            return boxes, found
        keys = sorted(set(range(0, n, self.detect_every)) | {n - 1})
        start_box = self._previous_box
        self._pick(frames, keys, boxes, found)
        redo: list[int] = []
        for a, b in zip(keys[:-1], keys[1:]):
            if b - a < 2:
                continue
            inner = range(a + 1, b)
            if found[a] and found[b] and box_iou(boxes[a], boxes[b][None])[0, 0] > 0.5:
                t = (np.arange(1, b - a, dtype=np.float32) / (b - a))[:, None]
                boxes[a + 1:b] = (1 - t) * boxes[a] + t * boxes[b]
                found[a + 1:b] = True
            elif found[a] or found[b]:
                redo.extend(inner)  # the face came or went, or jumped: look at every frame
        if redo:
            last = self._previous_box
            self._previous_box = start_box
            for i in redo:  # follow the face from the key frame before each stretch
                before = max(k for k in keys if k < i)
                self._previous_box = boxes[before] if found[before] else self._previous_box
                self._pick(frames, [i], boxes, found)
            self._previous_box = last
        return boxes, found

    def process(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (B, P, 2) float32 full-frame pixels and found (B,) bool.

        Rows of frames without a face are NaN; the caller decides what to reuse for them.
        """
        boxes, found = self.detect_boxes(frames)
        lms = np.full((len(frames), self.topology.num_points, 2), np.nan, np.float32)
        idx = np.nonzero(found)[0]
        if idx.size:
            lms[idx] = self.landmarker([frames[i] for i in idx], boxes[idx])
        return lms, found
