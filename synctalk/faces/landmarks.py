"""Landmark networks on detector boxes: PFLD (110 points, SyncTalk-compatible) or dlib (68 points)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import SyncTalkError
from .topology import Topology, get_topology

if TYPE_CHECKING:
    import torch

LANDMARKER_KINDS = ("pfld", "dlib")

# PFLD input preparation: the detector box is made square around its centre, grown by 5 %,
# cut out (zero-padded past the frame edge) and resized to the network's input size.
PFLD_BOX_SCALE = 1.05
PFLD_INPUT_SIZE = 192  # the SyncTalk checkpoints' size; other checkpoints carry theirs in conv8

# dlib's 68-point predictor was trained on its HOG detector's boxes, which are wider and start
# lower than SCRFD's. Measured on the fixture videos (50 frames): HOG box = SCRFD box moved by
# these fractions of its width/height (left, top, right, bottom). Landmarks from the adjusted box
# are twice as close to the HOG-initialised ones as landmarks from the raw SCRFD box.
DLIB_BOX_ADJUST = (-0.053, 0.153, 0.056, -0.028)


def _as_boxes(boxes: np.ndarray | Sequence[np.ndarray], count: int) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if arr.shape[0] != count:
        raise SyncTalkError(f"got {count} frames but {arr.shape[0]} face boxes")
    return arr


class Landmarker:
    """Base: `landmarker(frames, boxes) -> (B, P, 2) float32` full-frame pixel coordinates."""

    kind: str = ""
    topology: Topology

    def __call__(self, frames: Sequence[np.ndarray], boxes: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# PFLD


def pfld_square_box(box: np.ndarray, scale: float = PFLD_BOX_SCALE) -> tuple[int, int, int]:
    """Square crop (x0, y0, side) the PFLD network sees for a detector box x1 y1 x2 y2."""
    x1, y1, x2, y2 = (int(v) for v in box[:4])
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    side = max(int(max(w, h) * scale), 1)
    return cx - side // 2, cy - side // 2, side


def cut_square(img: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """img[y0:y0+side, x0:x0+side] with black where the square leaves the frame."""
    h, w = img.shape[:2]
    out = np.zeros((side, side) + img.shape[2:], dtype=img.dtype)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = img[sy0:sy1, sx0:sx1]
    return out


def load_mean_face(path: str | os.PathLike, num_points: int = 110) -> np.ndarray:
    """Read the whitespace-separated mean face (2·num_points numbers, crop-normalised x y pairs)."""
    try:
        values = np.asarray(Path(path).read_text().split(), dtype=np.float32)
    except (OSError, ValueError) as exc:
        raise SyncTalkError(f"cannot read the PFLD mean face {path}: {exc}") from exc
    if values.size != 2 * num_points:
        raise SyncTalkError(f"PFLD mean face {path} has {values.size} numbers, expected {2 * num_points}")
    return values


def _pfld_safe_globals() -> list:
    """What PFLD training scripts pickle beside the weights and may be rebuilt without running code:
    argparse namespaces (the run's flags) and numpy scalars/arrays (losses, epoch numbers)."""
    import argparse

    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray

    dtype_classes = [type(np.dtype(t)) for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                                                    "uint32", "uint64", "float16", "float32", "float64")]
    return [argparse.Namespace, multiarray.scalar, multiarray._reconstruct, np.ndarray, np.dtype, *dtype_classes]


def _unsafe_reason(path: Path, exc: Exception) -> str:
    """What in a checkpoint the weights-only unpickler would not rebuild, in a few words."""
    import re

    import torch

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: the unpickler's own words are all there is
        names = re.findall(r"GLOBAL ([\w.]+)", str(exc))
    if names:
        return f"it asks for {', '.join(names[:5])}"
    detail = str(exc).split("WeightsUnpickler error:")[-1].strip().splitlines()
    return f"it holds pickled objects beyond tensors ({detail[0][:120] if detail else 'unreadable'})"


def load_pfld_state_dict(path: str | os.PathLike) -> dict:
    """The backbone state dict of a PFLD checkpoint (`{"pfld_backbone": ...}` or a bare state dict).

    Read with torch's weights-only unpickler and a short allow-list (see _pfld_safe_globals): a
    checkpoint that needs any other class could run code when loaded, so it is refused.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise SyncTalkError(f"PFLD checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_pfld_safe_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise SyncTalkError(
            f"refused to load PFLD checkpoint {path}: {_unsafe_reason(path, exc)}, and loading it could run "
            "code from the file. Use the original checkpoint, or re-save its weights only: "
            "torch.save({'pfld_backbone': state_dict}, path)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - zip, torch and OS errors all mean "not a file we can read"
        raise SyncTalkError(f"cannot read PFLD checkpoint {path}: {exc}") from None
    if isinstance(ckpt, dict) and "pfld_backbone" in ckpt:
        state = ckpt["pfld_backbone"]
    elif isinstance(ckpt, dict) and any(k.endswith("conv_out.weight") for k in ckpt):
        state = ckpt
    else:
        keys = list(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise SyncTalkError(f"{path} is not a PFLD checkpoint: expected a 'pfld_backbone' entry, found {keys}")
    # checkpoints saved from nn.DataParallel carry a 'module.' prefix
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}


def build_pfld_from_state(state: dict, path: str | os.PathLike = "checkpoint") -> "torch.nn.Module":
    """Build the PFLD network matching `state` and load it strictly (the unused STN head may be absent)."""
    from pfld.model import build_pfld

    if "conv_out.weight" not in state:
        raise SyncTalkError(f"{path}: no conv_out.weight in the PFLD state dict")
    num_points = int(state["conv_out.weight"].shape[0]) // 2
    fused = any(".reparam_conv." in k for k in state)
    # conv8's kernel spans the whole 1/16-scale feature map, so it fixes the input size
    conv8 = state.get("conv8.0.weight")
    input_size = int(conv8.shape[-1]) * 16 if conv8 is not None else PFLD_INPUT_SIZE
    stem = state.get("conv1.reparam_conv.weight" if fused else "conv1.rbr_conv.0.conv.weight")
    width_factor = int(stem.shape[0]) / 64 if stem is not None else 0.5
    model = build_pfld(num_points=num_points, input_size=input_size, width_factor=width_factor, fused=fused)
    own = set(model.state_dict())
    missing = sorted(own - set(state))
    unexpected = sorted(set(state) - own)
    # The spatial-transformer head is never run; some exports drop it.
    tolerated = all(k.startswith("localization.") for k in missing + unexpected)
    if (missing or unexpected) and not tolerated:
        raise SyncTalkError(
            f"{path} does not match the PFLD_GhostOne architecture: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    try:
        model.load_state_dict(state, strict=not (missing or unexpected))
    except RuntimeError as exc:
        raise SyncTalkError(f"{path}: PFLD weights have the wrong shapes: {exc}") from exc
    return model


class PfldLandmarker(Landmarker):
    """PFLD_GhostOne 110-point landmarks, batched over faces, on the CPU or a CUDA GPU."""

    kind = "pfld"

    def __init__(
        self,
        checkpoint_path: str | os.PathLike,
        mean_face_path: str | os.PathLike,
        device: object = "cpu",
        batch_size: int = 64,
    ) -> None:
        import torch

        from ..device import resolve_device

        self.device = resolve_device(device) if isinstance(device, str) or device is None else torch.device(device)
        model = build_pfld_from_state(load_pfld_state_dict(checkpoint_path), checkpoint_path)
        self.num_points = model.num_points
        self.input_size = model.input_size
        if self.num_points != 110:
            raise SyncTalkError(
                f"{checkpoint_path} predicts {self.num_points} points; synctalk's crop rule is defined for 110-point PFLD"
            )
        self.topology = get_topology("pfld110")
        self.mean_face = load_mean_face(mean_face_path, self.num_points)
        # Folding the MobileOne branches gives the same outputs several times faster.
        self.model = model.eval().reparameterize().to(self.device)
        # On the CPU, oneDNN runs these small depthwise convolutions about twice as fast channels-last.
        self._channels_last = self.device.type == "cpu"
        if self._channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.batch_size = max(int(batch_size), 1)

    def prepare(self, frames: Sequence[np.ndarray], boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Network input (B, 3, S, S) float32 BGR in [0, 1] and each crop's (x0, y0, side)."""
        import cv2

        s = self.input_size
        batch = np.empty((len(frames), 3, s, s), np.float32)
        squares = np.empty((len(frames), 3), np.float32)
        for i, (img, box) in enumerate(zip(frames, boxes)):
            x0, y0, side = pfld_square_box(box)
            crop = cv2.resize(cut_square(img, x0, y0, side), (s, s))
            batch[i] = crop.transpose(2, 0, 1) * np.float32(1.0 / 255.0)
            squares[i] = (x0, y0, side)
        return batch, squares

    def __call__(self, frames: Sequence[np.ndarray], boxes: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        import torch

        boxes = _as_boxes(boxes, len(frames))
        if len(frames) == 0:
            return np.zeros((0, self.num_points, 2), np.float32)
        batch, squares = self.prepare(frames, boxes)
        outs = []
        with torch.inference_mode():
            for start in range(0, len(batch), self.batch_size):
                x = torch.from_numpy(batch[start : start + self.batch_size]).to(self.device)
                if self._channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                outs.append(self.model(x).float().cpu().numpy())
        offsets = np.concatenate(outs)
        pts = (offsets + self.mean_face[None]).reshape(len(frames), self.num_points, 2)
        # crop-normalised → full-frame pixels
        pts = pts * squares[:, None, 2:3] + squares[:, None, :2]
        return pts.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# dlib


def dlib_predictor_path() -> Path:
    """Location of the 68-point model shipped by the face_recognition_models package."""
    try:
        import face_recognition_models

        return Path(face_recognition_models.pose_predictor_model_location())
    except ImportError as exc:
        # the package's helper needs pkg_resources (gone from recent setuptools); find the file directly
        import importlib.util

        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise SyncTalkError(
                "the dlib landmarker needs the face_recognition_models package: "
                "pip install dlib-bin face_recognition_models"
            ) from exc
        root = Path(list(spec.submodule_search_locations)[0])
        return root / "models" / "shape_predictor_68_face_landmarks.dat"


def dlib_rect_for_box(box: np.ndarray) -> tuple[int, int, int, int]:
    """The dlib-detector-like rectangle (left, top, right, bottom) for a SCRFD box."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    w, h = x2 - x1, y2 - y1
    dl, dt, dr, db = DLIB_BOX_ADJUST
    return (int(round(x1 + dl * w)), int(round(y1 + dt * h)), int(round(x2 + dr * w)), int(round(y2 + db * h)))


def box_for_dlib_rect(rect: tuple[float, float, float, float]) -> np.ndarray:
    """The SCRFD-like box x1 y1 x2 y2 whose `dlib_rect_for_box` is `rect` (a dlib detector's rectangle).

    Boxes from dlib's own detector go through this, so every detector hands the landmarkers and the
    crop code boxes of one convention.
    """
    left, top, right, bottom = (float(v) for v in rect)
    dl, dt, dr, db = DLIB_BOX_ADJUST
    w = (right - left) / (1.0 + dr - dl)
    h = (bottom - top) / (1.0 + db - dt)
    x1, y1 = left - dl * w, top - dt * h
    return np.array([x1, y1, x1 + w, y1 + h], np.float32)


@functools.lru_cache(maxsize=2)
def load_dlib_predictor(path: str) -> object:
    """dlib's shape predictor from `path`, loaded once per process (the 68-point file is 95 MB)."""
    try:
        import dlib
    except ImportError as exc:
        raise SyncTalkError("the dlib landmarker needs dlib: pip install dlib-bin face_recognition_models") from exc
    if not Path(path).is_file():
        raise SyncTalkError(f"dlib 68-point model not found at {path}: pip install face_recognition_models")
    return dlib.shape_predictor(str(path))


class DlibLandmarker(Landmarker):
    """dlib's 68-point shape predictor run on the detector's boxes (CPU only, no downloads)."""

    kind = "dlib"

    def __init__(self, predictor_path: str | os.PathLike | None = None) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise SyncTalkError("the dlib landmarker needs dlib: pip install dlib-bin face_recognition_models") from exc
        path = Path(predictor_path) if predictor_path else dlib_predictor_path()
        self._dlib = dlib
        self.predictor = load_dlib_predictor(str(path))
        self.topology = get_topology("dlib68")
        self.num_points = 68

    def __call__(self, frames: Sequence[np.ndarray], boxes: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        import cv2

        boxes = _as_boxes(boxes, len(frames))
        out = np.zeros((len(frames), 68, 2), np.float32)
        for i, (img, box) in enumerate(zip(frames, boxes)):
            rgb = np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
            shape = self.predictor(rgb, self._dlib.rectangle(*dlib_rect_for_box(box)))
            out[i] = [(p.x, p.y) for p in shape.parts()]
        return out


# ---------------------------------------------------------------------------------------------


def create_landmarker(
    kind: str,
    models_dir: str | os.PathLike | None = None,
    device: object = "cpu",
    *,
    checkpoint_path: str | os.PathLike | None = None,
    mean_face_path: str | os.PathLike | None = None,
    batch_size: int = 64,
) -> Landmarker:
    """Build a landmarker: 'pfld' (checkpoint + mean face from the models dir, or given paths) or 'dlib'."""
    if kind == "pfld":
        if checkpoint_path is None or mean_face_path is None:
            from ..weights import resolve_model_file

            checkpoint_path = checkpoint_path or resolve_model_file("pfld", models_dir)
            mean_face_path = mean_face_path or resolve_model_file("pfld_mean_face", models_dir)
        return PfldLandmarker(checkpoint_path, mean_face_path, device=device, batch_size=batch_size)
    if kind == "dlib":
        return DlibLandmarker()
    raise SyncTalkError(f"unknown landmarker {kind!r}; choose one of: {', '.join(LANDMARKER_KINDS)}")
