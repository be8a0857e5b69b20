"""dlib's frontal face detector (HOG + linear SVM), the one that comes with `pip install dlib-bin`.

It needs no model file, so preprocessing and evaluation run on a fresh machine with no download. Its
boxes are turned into the SCRFD convention (`landmarks.box_for_dlib_rect`), and its keypoints are
taken from dlib's 68-point landmarks, so the pipeline, the landmarkers and the crop rule see the same
`Detection` from either detector.

Speed: HOG scans an image pyramid whose cost grows with the pixel count, while its window finds
faces of about 80 px and more. Once a face was found, the next frames are searched at the scale that
makes that face about TARGET_FACE_PX wide (a talking head changes size slowly); when nothing is
found there, the full frame is searched, then (small frames only) the frame upsampled once.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import SyncTalkError
from .detector import Detection, nms

TARGET_FACE_PX = 110  # the detector's window is 80 px: a margin for a face that grows between frames
# smaller faces are searched in the full frame: near full size a miss (and a second search) costs more
# than the smaller image saves (measured on sun.mp4, 114-px faces)
MAX_SEARCH_SCALE = 0.75
UPSAMPLE_MAX_SIDE = 800  # frames up to this size are searched once more, upsampled, when no face is found
# dlib's 68-point indices of the SCRFD keypoints: eye centres (means of the eye contours), nose tip,
# mouth corners
_LEFT_EYE, _RIGHT_EYE, _NOSE_TIP, _MOUTH_LEFT, _MOUTH_RIGHT = slice(36, 42), slice(42, 48), 30, 48, 54


class DlibFaceDetector:
    """dlib HOG face detector with `detect(img_bgr) -> list[Detection]`, like faces.detector.FaceDetector.

    dlib keeps Python's lock while it runs, so frames are not detected in parallel threads
    (`parallel_frames` False tells the pipeline).
    """

    kind = "dlib"
    parallel_frames = False

    def __init__(self, score_threshold: float = 0.0, keypoints: bool = True) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise SyncTalkError("the dlib face detector needs dlib: pip install dlib-bin") from exc
        self._detector = dlib.get_frontal_face_detector()
        self.score_threshold = float(score_threshold)
        self._predictor = None
        if keypoints:
            from .landmarks import dlib_predictor_path, load_dlib_predictor

            self._predictor = load_dlib_predictor(str(dlib_predictor_path()))
        self._rectangle = dlib.rectangle
        self._face_px: float | None = None  # width of the last face found, in frame pixels

    def replicas(self, count: int, threads: int) -> list["DlibFaceDetector"]:
        """One detector: dlib gains nothing from threads (see the class note)."""
        return [self]

    def _run(self, gray: np.ndarray, scale: float, upsample: int) -> tuple[np.ndarray, np.ndarray]:
        """Rectangles (N, 4) left top right bottom in frame pixels and scores (N,) at one scale."""
        import cv2

        if scale < 1.0:
            h, w = gray.shape
            gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        rects, scores, _ = self._detector.run(gray, upsample, self.score_threshold)
        if not rects:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        # kept in dlib's own numbers (right/bottom inclusive), the convention DLIB_BOX_ADJUST was measured in
        boxes = np.array([(r.left(), r.top(), r.right(), r.bottom()) for r in rects], np.float32) / scale
        return boxes, np.asarray(scores, np.float32)

    def detect(self, img_bgr: np.ndarray) -> list[Detection]:
        """Detect faces in one BGR frame; returns detections sorted by score, best first."""
        import cv2

        if img_bgr is None or img_bgr.ndim != 3 or img_bgr.shape[2] != 3:
            raise SyncTalkError(f"detect() needs an (H, W, 3) BGR image, got shape {getattr(img_bgr, 'shape', None)}")
        gray = cv2.cvtColor(img_bgr, cv2.COLOR_BGR2GRAY)
        rects = np.zeros((0, 4), np.float32)
        scores = np.zeros(0, np.float32)
        if self._face_px is not None:
            scale = min(1.0, TARGET_FACE_PX / self._face_px)
            if scale <= MAX_SEARCH_SCALE:
                rects, scores = self._run(gray, scale, 0)
        if not len(rects):
            rects, scores = self._run(gray, 1.0, 0)
        if not len(rects) and max(gray.shape) <= UPSAMPLE_MAX_SIDE:
            rects, scores = self._run(gray, 1.0, 1)
        if not len(rects):
            return []
        keep = nms(rects, scores, 0.4)
        rects, scores = rects[keep], scores[keep]
        self._face_px = float(rects[0, 2] - rects[0, 0])
        return [Detection(box=self._scrfd_box(r), score=float(s), kps=self._keypoints(img_bgr, r))
                for r, s in zip(rects, scores)]

    __call__ = detect

    @staticmethod
    def _scrfd_box(rect: np.ndarray) -> np.ndarray:
        from .landmarks import box_for_dlib_rect

        return box_for_dlib_rect(tuple(rect))

    def _keypoints(self, img_bgr: np.ndarray, rect: Sequence[float]) -> np.ndarray:
        """Eyes, nose tip and mouth corners (5, 2) from the 68-point landmarks; zeros without a predictor."""
        if self._predictor is None:
            return np.zeros((5, 2), np.float32)
        left, top, right, bottom = (int(round(v)) for v in rect)
        shape = self._predictor(np.ascontiguousarray(img_bgr[:, :, ::-1]), self._rectangle(left, top, right, bottom))
        pts = np.array([(p.x, p.y) for p in shape.parts()], np.float32)
        return np.stack([pts[_LEFT_EYE].mean(0), pts[_RIGHT_EYE].mean(0), pts[_NOSE_TIP],
                         pts[_MOUTH_LEFT], pts[_MOUTH_RIGHT]]).astype(np.float32)
