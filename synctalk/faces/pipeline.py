"""Frames → face landmarks: detect and pick the face per frame, then one batched landmark pass."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from .detector import FaceDetector, pick_face
from .landmarks import Landmarker


class FaceLandmarkPipeline:
    """Detector + landmarker over batches of frames, following the same face from call to call."""

    def __init__(self, detector: FaceDetector, landmarker: Landmarker, workers: int = 1) -> None:
        self.detector = detector
        self.landmarker = landmarker
        self.topology = landmarker.topology
        self._previous_box: np.ndarray | None = None
        # onnxruntime releases the GIL, so frames are detected in parallel, one session per thread
        self.workers = max(1, int(workers))
        self._replicas: list[FaceDetector] = []
        self._pool: ThreadPoolExecutor | None = None
        if self.workers > 1:
            per = max(1, (os.cpu_count() or 1) // self.workers)
            self._replicas = detector.replicas(self.workers, per)
            self._pool = ThreadPoolExecutor(self.workers)

    def reset(self) -> None:
        """Forget the followed face (call between unrelated videos)."""
        self._previous_box = None

    def detect_boxes(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Per frame the chosen face box (B, 4) float32 (NaN where none) and found (B,) bool."""
        boxes = np.full((len(frames), 4), np.nan, np.float32)
        found = np.zeros(len(frames), bool)
        if self._pool is not None:
            reps = self._replicas
            detections = list(self._pool.map(lambda k: reps[k % len(reps)].detect(frames[k]), range(len(frames))))
        else:
            detections = [self.detector.detect(f) for f in frames]
        for i, dets in enumerate(detections):
            # the face is picked in frame order, so following the previous box still works
            face = pick_face(dets, self._previous_box)
            if face is not None:
                boxes[i] = face.box
                found[i] = True
                self._previous_box = face.box
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
