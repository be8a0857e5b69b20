"""`synctalk eval`: render the held-out tail of the person's own video from its own audio and score it.

The tail the UNet never trained on (the same split as training) is rendered exactly as `synctalk
infer` renders — each frame's crop is its own reference, the mouth is redrawn from the audio
window, and the crop is pasted back — once with the true audio and once with the audio one second
(25 frames) away, as a control. Both are compared with the real frames:

* sync: Pearson correlation of the mouth opening (dlib landmarks) generated vs real; the control
  must be clearly lower, or the mouth does not follow the audio;
* fidelity: PSNR and SSIM of the mouth region (lower half of the network's 320 crop);
* jitter: mean |second difference| of the mouth landmarks over time, generated ÷ real (1 = as steady);
* sharpness: variance of the Laplacian in the mouth region, generated ÷ real (1 = as sharp);
* opening range: standard deviation of the mouth opening, generated ÷ real (1 = as lively).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import SyncTalkError
from .layout import CROP_SIZE, dataset_layout

SHIFT_FRAMES = 25  # the control: audio one second away
BORDER = 4
INNER = CROP_SIZE - 2 * BORDER
MIN_FRAMES = 5  # the fewest held-out frames the temporal metrics mean anything on

METRIC_KEYS = ("sync_corr", "sync_corr_shifted", "sync_margin", "psnr_mouth", "ssim_mouth", "jitter_ratio",
               "sharpness_ratio", "opening_range_ratio")


# ---------------------------------------------------------------- image metrics


def mouth_region(crop328: np.ndarray) -> np.ndarray:
    """The lower half of the network's inner 320 crop (where the mouth is redrawn) of a 328 crop."""
    return crop328[BORDER + INNER // 2:BORDER + INNER, BORDER:BORDER + INNER]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of two uint8 images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def _gaussian_kernel(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(a: np.ndarray, b: np.ndarray, window: int = 11, sigma: float = 1.5) -> float:
    """Structural similarity of two uint8 images (Gaussian window, per channel, averaged; 'valid' borders)."""
    import torch
    import torch.nn.functional as F

    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))
    y = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float64))
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    x = x.permute(2, 0, 1)[None]
    y = y.permute(2, 0, 1)[None]
    c = x.shape[1]
    g = torch.from_numpy(_gaussian_kernel(window, sigma))
    kx = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    ky = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t: Any) -> Any:  # separable Gaussian, no padding
        return F.conv2d(F.conv2d(t, kx, groups=c), ky, groups=c)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cov = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def laplacian_variance(img: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: higher is sharper."""
    import cv2

    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation, or None when either series is constant."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if len(x) < 2 or x.std() < 1e-12 or y.std() < 1e-12:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def jitter(points: np.ndarray) -> float:
    """Mean |second difference| over time of landmark tracks (T, P, 2)."""
    if len(points) < 3:
        return float("nan")
    return float(np.abs(points[2:] - 2 * points[1:-1] + points[:-2]).mean())


def _ratio(a: float, b: float) -> float | None:
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return None
    return a / b


# ---------------------------------------------------------------- the evaluation


@dataclass
class EvalResult:
    """Scores of one evaluation, and the per-frame series they came from."""

    name: str
    checkpoint: Path
    frames: list[int]
    metrics: dict[str, float | None]
    info: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (NaN/inf become null)."""
        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v

        return clean({"name": self.name, "checkpoint": str(self.checkpoint), "frames": self.frames,
                      "metrics": dict(self.metrics), **self.info, "series": self.series})


def _face_boxes(detector: Any, frames: Sequence[np.ndarray],
                previous: np.ndarray | None) -> tuple[list[np.ndarray | None], np.ndarray | None]:
    """One face box per frame (the followed face; a frame without one keeps the previous box)."""
    from .faces.detector import pick_face

    out = []
    for f in frames:
        d = pick_face(detector.detect(f), previous)
        if d is not None:
            previous = np.asarray(d.box, np.float32)
        out.append(previous)
    return out, previous


def evaluate(name: str, *, dataset_dir: str | Path = "dataset", checkpoint_dir: str | Path = "checkpoint",
             checkpoint: str | Path | None = None, device: Any = "auto", models_dir: str | Path | None = None,
             batch_size: int = 16, val_fraction: float | None = None, shift: int = SHIFT_FRAMES,
             progress: bool = True, detector: str = "auto") -> EvalResult:
    """Render the person's held-out tail (true and shifted audio) and score it against the real frames."""
    import cv2
    import torch
    from tqdm import tqdm

    from .data import load_crop_cache, load_features, split_indices
    from .device import resolve_device
    from .faces.factory import choose_detector, create_detector
    from .faces.landmarks import create_landmarker
    from .render import Generator, crops_to_uint8, load_boxes, load_generator, paste_back, resolve_checkpoint

    layout = dataset_layout(dataset_dir, name)
    ckpt_path = resolve_checkpoint(checkpoint_dir, name, checkpoint)
    boxes = load_boxes(layout)
    dev = resolve_device(device) if isinstance(device, str) or device is None else torch.device(device)
    detector_choice = choose_detector(detector, models_dir)  # fail before any rendering
    print(detector_choice.describe(), flush=True)
    model, ckpt = load_generator(ckpt_path, dev, layout=layout)
    gen = Generator(model, ckpt, dev, pad_to=batch_size)
    config = dict(ckpt.get("config") or {})
    feats = load_features(layout, gen.asr)
    crops = load_crop_cache(layout, progress=progress)
    n = min(len(crops), len(feats), len(boxes))
    vf = float(val_fraction if val_fraction is not None else config.get("val_fraction", 0.1))
    _train, val = split_indices(n, vf if vf > 0 else 0.1)
    if len(val) < MIN_FRAMES:
        raise SyncTalkError(
            f"only {len(val)} held-out frames in {name} ({n} frames, val_fraction {vf}): at least {MIN_FRAMES} "
            f"are needed; evaluate a longer video or pass a larger --val_fraction"
        )
    feats_t = torch.from_numpy(np.ascontiguousarray(feats[:n])).to(dev)

    face_detector = create_detector(detector_choice, models_dir, device=str(dev))
    landmarker = create_landmarker("dlib")
    topo = landmarker.topology
    mouth_pts = list(topo.mouth_outer) + list(topo.mouth_inner)

    lms = {"real": [], "gen": [], "shift": []}
    psnrs, ssims, sharp_gen, sharp_real = [], [], [], []
    previous = None
    bar = tqdm(total=len(val), desc=f"eval {name}", unit="frame", disable=not progress)
    for start in range(0, len(val), batch_size):
        idx = val[start:start + batch_size]
        real_crops = np.asarray(crops[idx])
        out = crops_to_uint8(gen(real_crops, feats_t, idx))
        out_shift = crops_to_uint8(gen(real_crops, feats_t, (idx - shift) % n))
        real_frames = []
        for i in idx:
            img = cv2.imread(str(layout.frame_path(int(i))))
            if img is None:
                raise SyncTalkError(f"frame {layout.frame_path(int(i))} is missing or unreadable")
            real_frames.append(img)
        gen_frames = [paste_back(f.copy(), c, boxes[i]) for f, c, i in zip(real_frames, out, idx)]
        shift_frames = [paste_back(f.copy(), c, boxes[i]) for f, c, i in zip(real_frames, out_shift, idx)]
        face_boxes, previous = _face_boxes(face_detector, real_frames, previous)
        if any(b is None for b in face_boxes):
            missing = [int(i) for i, b in zip(idx, face_boxes) if b is None]
            raise SyncTalkError(f"no face found in held-out frames {missing[:10]} of {name}")
        fb = np.stack(face_boxes).astype(np.float32)
        # the same face box for all three: differences come from the mouth alone
        lms["real"].append(landmarker(real_frames, fb))
        lms["gen"].append(landmarker(gen_frames, fb))
        lms["shift"].append(landmarker(shift_frames, fb))
        for g, r in zip(out, real_crops):
            gm, rm = mouth_region(g), mouth_region(r)
            psnrs.append(psnr(gm, rm))
            ssims.append(ssim(gm, rm))
            sharp_gen.append(laplacian_variance(gm))
            sharp_real.append(laplacian_variance(rm))
        bar.update(len(idx))
    bar.close()

    pts = {k: np.concatenate(v) for k, v in lms.items()}
    ap = {k: topo.mouth_aperture(v) for k, v in pts.items()}
    sync = pearson(ap["gen"], ap["real"])
    control = pearson(ap["shift"], ap["real"])
    finite_psnr = [p for p in psnrs if math.isfinite(p)]
    metrics: dict[str, float | None] = {
        "sync_corr": sync,
        "sync_corr_shifted": control,
        "sync_margin": (sync - control) if sync is not None and control is not None else None,
        "psnr_mouth": float(np.mean(finite_psnr)) if finite_psnr else float("inf"),
        "ssim_mouth": float(np.mean(ssims)),
        "jitter_ratio": _ratio(jitter(pts["gen"][:, mouth_pts]), jitter(pts["real"][:, mouth_pts])),
        "sharpness_ratio": _ratio(float(np.mean(sharp_gen)), float(np.mean(sharp_real))),
        "opening_range_ratio": _ratio(float(np.std(ap["gen"])), float(np.std(ap["real"]))),
    }
    info = {"asr": gen.asr, "width": config.get("width", "full"), "epoch": ckpt.get("epoch"),
            "held_out": {"first": int(val[0]), "last": int(val[-1]), "count": int(len(val)), "of": int(n)},
            "shift_frames": int(shift), "landmarker": "dlib"}
    series = {"aperture_real": ap["real"].tolist(), "aperture_generated": ap["gen"].tolist(),
              "aperture_shifted": ap["shift"].tolist(), "psnr_mouth": psnrs, "ssim_mouth": ssims}
    return EvalResult(name=name, checkpoint=ckpt_path, frames=[int(i) for i in val], metrics=metrics, info=info,
                      series=series)


# ---------------------------------------------------------------- command line


_DESCRIPTIONS = {
    "sync_corr": ("mouth opening vs real (Pearson)", "higher; 1 is perfect"),
    "sync_corr_shifted": ("same with audio 1 s off (control)", "must be clearly below sync"),
    "sync_margin": ("sync − control", "higher"),
    "psnr_mouth": ("PSNR of the mouth region (dB)", "higher"),
    "ssim_mouth": ("SSIM of the mouth region", "higher; 1 is identical"),
    "jitter_ratio": ("mouth landmark jitter, generated ÷ real", "near 1; above is shakier"),
    "sharpness_ratio": ("Laplacian variance, generated ÷ real", "near 1; below is blurrier"),
    "opening_range_ratio": ("std of mouth opening, generated ÷ real", "near 1; below is muted"),
}


def print_table(result: EvalResult) -> None:
    """The metrics as a rich table."""
    from rich.console import Console
    from rich.table import Table

    held = result.info.get("held_out", {})
    table = Table(title=f"{result.name}: held-out frames {held.get('first')}–{held.get('last')} "
                        f"({held.get('count')} of {held.get('of')}), {result.checkpoint}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("what")
    table.add_column("better")
    for key in METRIC_KEYS:
        v = result.metrics.get(key)
        text = "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"
        what, better = _DESCRIPTIONS[key]
        table.add_row(key, text, what, better)
    Console().print(table)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `synctalk eval`."""
    p.add_argument("--name", required=True, help="person name: dataset/<name>/, checkpoint/<name>/")
    p.add_argument("--checkpoint", default=None, help="UNet checkpoint (default: the one `synctalk infer` uses)")
    p.add_argument("--json", default=None, type=Path, help="write the scores (and per-frame series) here")
    p.add_argument("--dataset_dir", default="dataset", type=Path)
    p.add_argument("--checkpoint_dir", default="checkpoint", type=Path)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 …")
    p.add_argument("--models_dir", default=None, type=Path, help="where the face detector's weights are looked for")
    from .faces.factory import DETECTOR_KINDS

    p.add_argument("--detector", default="auto", choices=DETECTOR_KINDS,
                   help="face detector (auto: scrfd when its file is found, else dlib)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--val_fraction", type=float, default=None,
                   help="held-out tail (default: the checkpoint's training value, else 0.1)")
    p.add_argument("--no_progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Entry point of `synctalk eval`."""
    from .fileio import write_json_atomic

    result = evaluate(args.name, dataset_dir=args.dataset_dir, checkpoint_dir=args.checkpoint_dir,
                      checkpoint=args.checkpoint, device=args.device, models_dir=args.models_dir,
                      batch_size=args.batch_size, val_fraction=args.val_fraction, progress=not args.no_progress,
                      detector=args.detector)
    print_table(result)
    if args.json:
        write_json_atomic(args.json, result.to_json())
        print(f"scores written to {args.json}")
    return 0
