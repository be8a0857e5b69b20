"""Frames → face landmarks: detect and pick the face per frame, then one batched landmark pass."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .detector import FaceDetector, pick_face
from .landmarks import Landmarker


class FaceLandmarkPipeline:
    """Detector + landmarker over batches of frames, following the same face from call to call."""

    def __init__(self, detector: FaceDetector, landmarker: Landmarker) -> None:
        self.detector = detector
        self.landmarker = landmarker
        self.topology = landmarker.topology
        self._previous_box: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the followed face (call between unrelated videos)."""
        self._previous_box = None

    def detect_boxes(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Per frame the chosen face box (B, 4) float32 (NaN where none) and found (B,) bool."""
        boxes = np.full((len(frames), 4), np.nan, np.float32)
        found = np.zeros(len(frames), bool)
        for i, frame in enumerate(frames):
            face = pick_face(self.detector.detect(frame), self._previous_box)
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
