"""Which face detector and landmarker a run uses, and why, said once; then building them.

`--detector auto` takes SCRFD when its file is in a models folder and dlib's HOG detector (installed
with the package, no file to fetch) otherwise. A detector asked for by name is that detector or a
clear error: a missing SCRFD file is never silently replaced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SyncTalkError

DETECTOR_KINDS = ("auto", "scrfd", "dlib")


@dataclass(frozen=True)
class DetectorChoice:
    """The detector a run uses: kind ('scrfd' or 'dlib'), SCRFD's file, and why it was chosen."""

    kind: str
    path: Path | None
    reason: str

    def describe(self) -> str:
        """One line for the start of a run."""
        name = "SCRFD-2.5g-kps" if self.kind == "scrfd" else "dlib HOG"
        return f"face detector: {name} ({self.reason})"


def choose_detector(kind: str = "auto", models_dir: "str | os.PathLike | None" = None) -> DetectorChoice:
    """Resolve `kind` (auto|scrfd|dlib) to a detector; raises SyncTalkError when a requested one is missing."""
    from ..weights import MANIFEST, find_model_file, resolve_model_file, search_dirs

    if kind not in DETECTOR_KINDS:
        raise SyncTalkError(f"unknown face detector {kind!r}; choose one of: {', '.join(DETECTOR_KINDS)}")
    if kind == "dlib":
        return DetectorChoice("dlib", None, "--detector dlib")
    if kind == "scrfd":
        path = resolve_model_file("scrfd", models_dir)  # the error names the places and the download
        return DetectorChoice("scrfd", path, f"{path}")
    if find_model_file("scrfd", models_dir) is not None:
        path = resolve_model_file("scrfd", models_dir)  # refuses an incomplete copy
        return DetectorChoice("scrfd", path, f"{path}")
    where = ", ".join(str(d) for d in search_dirs(models_dir))
    return DetectorChoice(
        "dlib", None,
        f"{MANIFEST['scrfd'].filename} not found in {where}; `synctalk models download scrfd` for SCRFD")


def create_detector(choice: "DetectorChoice | str" = "auto", models_dir: "str | os.PathLike | None" = None,
                    device: object = "cpu") -> object:
    """A detector with `detect(img_bgr) -> list[Detection]` and `replicas(count, threads)`."""
    if isinstance(choice, str):
        choice = choose_detector(choice, models_dir)
    if choice.kind == "scrfd":
        from .detector import FaceDetector

        return FaceDetector(choice.path, device=device)
    from .dlib_detector import DlibFaceDetector

    return DlibFaceDetector()


def describe_landmarker(kind: str, models_dir: "str | os.PathLike | None" = None) -> str:
    """One line naming the landmark model a run uses and where it comes from."""
    if kind == "pfld":
        from ..weights import resolve_model_file

        return f"landmarks: PFLD 110 points ({resolve_model_file('pfld', models_dir)})"
    if kind == "dlib":
        return "landmarks: dlib 68 points (shape_predictor_68_face_landmarks.dat from face_recognition_models)"
    return f"landmarks: {kind}"
