"""SCRFD face detector (the 2.5g-kps ONNX export) run through onnxruntime."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SyncTalkError

# The network was trained on RGB input normalised as (x - 127.5) / 128.
_MEAN = 127.5
_STD = 128.0
_STRIDES = (8, 16, 32)
_ANCHORS_PER_CELL = 2


@dataclass
class Detection:
    """One detected face: box (x1, y1, x2, y2) in frame pixels, confidence, 5 keypoints (eyes, nose, mouth corners)."""

    box: np.ndarray
    score: float
    kps: np.ndarray = field(default_factory=lambda: np.zeros((5, 2), np.float32))

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


def _wants_cuda(device: object) -> bool:
    spec = str(device) if device is not None else "cpu"
    if spec in ("", "auto"):
        return True
    return spec.startswith("cuda")


def _cuda_index(device: object) -> int:
    spec = str(device)
    if spec.startswith("cuda:"):
        try:
            return int(spec.split(":", 1)[1])
        except ValueError:
            return 0
    return 0


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between boxes a (N, 4) and b (M, 4), both x1 y1 x2 y2; returns (N, M)."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / np.maximum(union, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, highest score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        ious = box_iou(boxes[i], boxes[order[1:]])[0]
        order = order[1:][ious <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


class FaceDetector:
    """SCRFD-2.5g-kps: letterboxed input, distance decoding per stride, NMS.

    `device` "cuda"/"cuda:N"/"auto" uses onnxruntime's CUDAExecutionProvider when this onnxruntime
    build has it, otherwise the CPU.
    """

    kind = "scrfd"

    def __init__(
        self,
        model_path: str | os.PathLike,
        device: object = "cpu",
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        input_size: int = 640,
        threads: int = 0,
    ) -> None:
        import onnxruntime as ort

        self._init_args = dict(model_path=model_path, device=device, score_threshold=score_threshold,
                               nms_threshold=nms_threshold, input_size=input_size)

        model_path = Path(model_path)
        if not model_path.is_file():
            raise SyncTalkError(f"face detector model not found: {model_path}")
        if input_size % 32 or input_size < 64:
            raise SyncTalkError(f"detector input size {input_size} must be a multiple of 32 (and at least 64)")
        self.input_size = int(input_size)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        available = ort.get_available_providers()
        self._providers: list = ["CPUExecutionProvider"]
        if _wants_cuda(device) and "CUDAExecutionProvider" in available:
            self._providers.insert(0, ("CUDAExecutionProvider", {"device_id": _cuda_index(device)}))
        self._opts = ort.SessionOptions()
        self._opts.log_severity_level = 3  # keep onnxruntime's provider chatter off the console
        if threads > 0:
            self._opts.intra_op_num_threads = int(threads)

        # The exported graph computes its reshapes from tensor shapes, so with the input's fixed
        # 640x640 relaxed it runs on any multiple of 32: a 3:4 frame then costs a 480x640 pass
        # instead of a letterboxed 640x640 one. Exports that do not allow it keep their fixed size.
        self.session = None
        self.dynamic = False
        relaxed = _relax_input_shape(model_path)
        if relaxed is not None:
            try:
                self.session = ort.InferenceSession(relaxed, sess_options=self._opts, providers=self._providers)
                self._setup_io()
                self.dynamic = self._outputs_follow_input((64, 96))
            except Exception:  # onnxruntime raises its own exception types
                self.session, self.dynamic = None, False
        if not self.dynamic:
            try:
                self.session = ort.InferenceSession(str(model_path), sess_options=self._opts, providers=self._providers)
            except Exception as exc:
                raise SyncTalkError(f"cannot load face detector {model_path}: {exc}") from exc
            self._setup_io()
        self.providers = self.session.get_providers()
        self._anchor_cache: dict[tuple[int, int, int], np.ndarray] = {}

    def _setup_io(self) -> None:
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        h, w = inp.shape[2], inp.shape[3]
        self._fixed_hw = (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None
        self._output_names = [o.name for o in self.session.get_outputs()]

    def _outputs_follow_input(self, hw: tuple[int, int]) -> bool:
        """Dry run at a small odd size: do the output anchor counts follow the input?"""
        outs = self.session.run(self._output_names, {self.input_name: np.zeros((1, 3, *hw), np.float32)})
        try:
            self._group_outputs(outs, hw)
        except SyncTalkError:
            return False
        return True

    def input_hw_for(self, frame_hw: tuple[int, int]) -> tuple[int, int]:
        """Network input size for a frame: its aspect ratio fitted into input_size, sides rounded up to 32."""
        if not self.dynamic:
            return self._fixed_hw if self._fixed_hw else (self.input_size, self.input_size)
        h, w = frame_hw
        scale = self.input_size / max(h, w)
        return (
            max(32, int(np.ceil(round(h * scale) / 32)) * 32),
            max(32, int(np.ceil(round(w * scale) / 32)) * 32),
        )

    # -- pre-processing ---------------------------------------------------------------------
    def _letterbox(self, img_bgr: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, float]:
        """Resize keeping aspect ratio into the top-left of the input canvas; return blob and scale."""
        import cv2

        ih, iw = input_hw
        h, w = img_bgr.shape[:2]
        scale = min(ih / h, iw / w)
        nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(img_bgr, (nw, nh), interpolation=interp)
        # The padding is black pixels after normalisation, the border the network was trained with.
        canvas = np.full((ih, iw, 3), (0.0 - _MEAN) / _STD, np.float32)
        canvas[:nh, :nw] = (resized[:, :, ::-1].astype(np.float32) - _MEAN) / _STD
        blob = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None])
        return blob, scale

    def _anchors(self, stride: int, fh: int, fw: int) -> np.ndarray:
        key = (stride, fh, fw)
        if key not in self._anchor_cache:
            ys, xs = np.mgrid[:fh, :fw]
            centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
            self._anchor_cache[key] = np.repeat(centres, _ANCHORS_PER_CELL, axis=0)
        return self._anchor_cache[key]

    def _group_outputs(self, outs: Sequence[np.ndarray], input_hw: tuple[int, int]) -> dict[int, dict[str, np.ndarray]]:
        """Map raw outputs to {stride: {score, bbox, kps}} by their shapes, not their order."""
        ih, iw = input_hw
        count_to_stride = {(ih // s) * (iw // s) * _ANCHORS_PER_CELL: s for s in _STRIDES}
        kind_by_dim = {1: "score", 4: "bbox", 10: "kps"}
        grouped: dict[int, dict[str, np.ndarray]] = {s: {} for s in _STRIDES}
        for out in outs:
            arr = np.asarray(out)
            if arr.ndim == 3:  # (1, N, C) exports carry a batch axis
                arr = arr[0]
            n, c = arr.shape
            if n not in count_to_stride or c not in kind_by_dim:
                raise SyncTalkError(f"unexpected SCRFD output shape {np.asarray(out).shape}; is this a SCRFD *_kps model?")
            grouped[count_to_stride[n]][kind_by_dim[c]] = arr
        return grouped

    # -- detection --------------------------------------------------------------------------
    def replicas(self, count: int, threads: int) -> list["FaceDetector"]:
        """`count` independent sessions of the same model with `threads` threads each, for running
        frames in parallel (a small conv net scales better over frames than inside one frame)."""
        return [FaceDetector(**self._init_args, threads=threads) for _ in range(count)]

    def detect(self, img_bgr: np.ndarray) -> list[Detection]:
        """Detect faces in one BGR frame; returns detections sorted by score, best first."""
        if img_bgr is None or img_bgr.ndim != 3 or img_bgr.shape[2] != 3:
            raise SyncTalkError(f"detect() needs an (H, W, 3) BGR image, got shape {getattr(img_bgr, 'shape', None)}")
        input_hw = self.input_hw_for(img_bgr.shape[:2])
        blob, scale = self._letterbox(img_bgr, input_hw)
        outs = self.session.run(self._output_names, {self.input_name: blob})
        grouped = self._group_outputs(outs, input_hw)
        ih, iw = input_hw

        all_boxes, all_scores, all_kps = [], [], []
        for stride in _STRIDES:
            g = grouped[stride]
            scores = g["score"][:, 0]
            keep = np.nonzero(scores >= self.score_threshold)[0]
            if keep.size == 0:
                continue
            centres = self._anchors(stride, ih // stride, iw // stride)[keep]
            dist = g["bbox"][keep] * stride
            boxes = np.concatenate([centres - dist[:, :2], centres + dist[:, 2:]], axis=1)
            kps = centres[:, None, :] + g["kps"][keep].reshape(-1, 5, 2) * stride
            all_boxes.append(boxes)
            all_scores.append(scores[keep])
            all_kps.append(kps)
        if not all_scores:
            return []
        boxes = np.concatenate(all_boxes) / scale
        scores = np.concatenate(all_scores)
        kps = np.concatenate(all_kps) / scale
        # Boxes are left unclipped: for a face cut by the frame edge the full extent keeps the
        # landmark network's square crop centred on the face (the part outside is padded black).
        keep = nms(boxes, scores, self.nms_threshold)
        return [
            Detection(box=boxes[i].astype(np.float32), score=float(scores[i]), kps=kps[i].astype(np.float32))
            for i in keep
        ]

    __call__ = detect


def _relax_input_shape(model_path: Path) -> bytes | None:
    """The model with its input height/width (and output anchor counts) made symbolic, or None."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.load(str(model_path))
        dims = model.graph.input[0].type.tensor_type.shape.dim
        if len(dims) != 4:
            return None
        for i, name in ((2, "height"), (3, "width")):
            dims[i].ClearField("dim_value")
            dims[i].dim_param = name
        for out in model.graph.output:
            odims = out.type.tensor_type.shape.dim
            if len(odims) >= 2:
                odims[len(odims) - 2].ClearField("dim_value")
                odims[len(odims) - 2].dim_param = f"{out.name}_anchors"
        del model.graph.value_info[:]  # stale inferred shapes of the fixed size
        return model.SerializeToString()
    except Exception:  # a malformed file is reported when the plain session loads it
        return None


def pick_face(detections: Sequence[Detection], previous_box: np.ndarray | None = None) -> Detection | None:
    """Choose the face to follow in a frame.

    With a previous box, the detection overlapping it most (IoU > 0.3) wins, so a second person
    walking into frame does not steal the crop. Otherwise the largest face among those scoring at
    least half the best score: the speaker is normally the biggest face in a talking-head video.
    """
    if not detections:
        return None
    if previous_box is not None:
        ious = box_iou(np.asarray(previous_box, np.float32), np.stack([d.box for d in detections]))[0]
        best = int(np.argmax(ious))
        if ious[best] > 0.3:
            return detections[best]
    top = max(d.score for d in detections)
    candidates = [d for d in detections if d.score >= 0.5 * top]
    return max(candidates, key=lambda d: d.area)
