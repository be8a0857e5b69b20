"""A small preprocessed person with a UNet checkpoint, shared by the render and evaluation tests."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import MODELS, VIDEOS

NAME = "clip2"
_CACHE: dict[str, SimpleNamespace] = {}


def save_random_unet(path: Path, asr: str = "mel", width: str = "tiny", seed: int = 0) -> Path:
    """A randomly initialised UNet checkpoint in the training module's file format."""
    import torch

    from synctalk.data import DEFAULT_MASK
    from synctalk.training.checkpoint import save_checkpoint
    from unet_328 import build_unet

    torch.manual_seed(seed)
    model = build_unet(asr, width)
    config = {"asr": asr, "width": width, "mask": list(DEFAULT_MASK), "val_fraction": 0.1}
    return save_checkpoint(path, {"kind": "unet", "model": model.state_dict(), "config": config, "asr": asr,
                                  "epoch": 0, "metrics": {}})


def trained_person(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """clip2 preprocessed for real (mel features, dlib landmarks) and a tiny UNet trained on it for one
    epoch through `synctalk train`, so the checkpoint is exactly what training writes."""
    if "person" in _CACHE:  # made once per test session, whichever module asks first
        return _CACHE["person"]
    from synctalk.cli import main
    from synctalk.layout import checkpoint_layout, dataset_layout
    from synctalk.preprocess import PreprocessOptions, preprocess_video

    root = tmp_path_factory.mktemp("render")
    dataset_dir, checkpoint_dir = root / "dataset", root / "checkpoint"
    preprocess_video(PreprocessOptions(video_path=VIDEOS / "clip2.mp4", name=NAME, dataset_dir=dataset_dir,
                                       asr_model="mel", landmarker="dlib", models_dir=MODELS, device="cpu",
                                       progress=False))
    rc = main(["train", "--name", NAME, "--dataset_dir", str(dataset_dir), "--checkpoint_dir", str(checkpoint_dir),
               "--width", "tiny", "--perceptual", "none", "--no_syncnet", "--epochs", "1", "--device", "cpu",
               "--no_progress"])
    assert rc == 0
    ck = checkpoint_layout(checkpoint_dir, NAME)
    assert ck.best(ck.unet_dir).is_file()
    _CACHE["person"] = SimpleNamespace(root=root, dataset_dir=dataset_dir, checkpoint_dir=checkpoint_dir,
                                       layout=dataset_layout(dataset_dir, NAME))
    return _CACHE["person"]


# ---------------------------------------------------------------- a synthetic person whose mouth is known

SYN_SIZE = 200  # frame side, pixels
SYN_BOX = (20, 20, 180, 180)  # the face box of every frame
SYN_MOUTH_INNER = (100, 190, 220, 250)  # x0, y0, x1, y1 of the "mouth" in the network's inner 320


def syn_envelope(seconds: float, seed: int, sample_rate: int = 16000) -> np.ndarray:
    """A speech-like on/off loudness envelope per sample: bursts of 60-320 ms with gaps of 60-400 ms,
    and a pause of 0.6 s every 2 s; edges at arbitrary times (not on frame boundaries)."""
    rng = np.random.default_rng(seed)
    env = np.zeros(int(seconds * sample_rate), np.float32)
    t, next_pause = 0.25, 2.0
    while t < seconds - 0.2:
        if t >= next_pause:
            t += 0.6  # a pause the silence handling must find
            next_pause += 2.0
        dur = rng.uniform(0.06, 0.32)
        a, b = int(t * sample_rate), int(min(t + dur, seconds) * sample_rate)
        env[a:b] = rng.uniform(0.5, 1.0)
        t += dur + rng.uniform(0.06, 0.4)
    return env


def syn_mouth_rect() -> tuple[int, int, int, int]:
    """The mouth rectangle in full-frame pixels (x0, y0, x1, y1), where the crop maps SYN_MOUTH_INNER."""
    from synctalk.constants import BORDER, CROP_SIZE

    x1, y1, x2, y2 = SYN_BOX
    s = (x2 - x1) / CROP_SIZE
    mx0, my0, mx1, my1 = SYN_MOUTH_INNER
    return (int(round(x1 + (mx0 + BORDER) * s)), int(round(y1 + (my0 + BORDER) * s)),
            int(round(x1 + (mx1 + BORDER) * s)), int(round(y1 + (my1 + BORDER) * s)))


def syn_frame_levels(env: np.ndarray, frames: int, sample_rate: int = 16000, fps: int = 25) -> np.ndarray:
    """The envelope around each frame's instant k/fps (mean over ±20 ms): what the lips show at frame k."""
    out = np.zeros(frames, np.float32)
    half = sample_rate // fps // 2
    for k in range(frames):
        c = k * sample_rate // fps
        seg = env[max(c - half, 0):c + half]
        out[k] = float(seg.mean()) if seg.size else 0.0
    return out


def syn_video(path: Path, seconds: float, seed: int) -> np.ndarray:
    """Write an H.264 + AAC MP4 (through media.VideoWriter, as renders are written): noise-burst speech and
    a face whose mouth brightness is the loudness at each frame's instant. Returns the per-frame levels."""
    import soundfile as sf

    from synctalk import media

    sr = 16000
    env = syn_envelope(seconds, seed, sr)
    rng = np.random.default_rng(seed + 1)
    audio = (0.3 * env * rng.standard_normal(env.size)).astype(np.float32)
    wav = path.with_suffix(".wav")
    sf.write(str(wav), audio, sr, subtype="PCM_16")
    frames = int(round(seconds * 25))
    levels = syn_frame_levels(env, frames, sr)
    yy, xx = np.mgrid[0:SYN_SIZE, 0:SYN_SIZE]
    face = (90 + 40 * np.sin(xx / 9.0) * np.cos(yy / 13.0)).astype(np.float32)  # texture, no flat areas
    mx0, my0, mx1, my1 = syn_mouth_rect()
    with media.VideoWriter(path, SYN_SIZE, SYN_SIZE, 25, audio_path=wav, duration=frames / 25, crf=10) as w:
        for k in range(frames):
            img = face.copy()
            img[my0:my1, mx0:mx1] = 30 + 200 * levels[k]
            w.write(np.repeat(np.clip(img, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2))
    return levels


def syn_landmarks(levels: np.ndarray) -> np.ndarray:
    """dlib-68 landmarks whose inner-lip opening follows `levels` and whose face width is the box's."""
    x1, y1, x2, y2 = SYN_BOX
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    pts = np.tile(np.array([cx, cy], np.float32), (len(levels), 68, 1))
    pts[:, 0, 0], pts[:, 16, 0] = x1, x2
    pts[:, 29, 1] = y1
    gap = 2.0 + 20.0 * levels
    for top, bottom in zip((61, 62, 63), (67, 66, 65)):
        pts[:, top, 1] = cy + 30 - gap / 2
        pts[:, bottom, 1] = cy + 30 + gap / 2
    return pts


def synthetic_person(tmp_path_factory: pytest.TempPathFactory, name: str = "syn", seconds: float = 6.0,
                     seed: int = 0) -> SimpleNamespace:
    """A person preprocessed by the real frame/audio/feature steps from a synthetic MP4 whose mouth is
    known; landmarks and crop boxes are written from the known geometry (no face to detect). Made
    once per test session, with a second recording of 4 s (`reference`, its levels `reference_levels`)."""
    if name in _CACHE:
        return _CACHE[name]
    root = tmp_path_factory.mktemp("synthetic")
    import cv2

    from synctalk.faces.lms import write_landmarks
    from synctalk.layout import dataset_layout
    from synctalk.preprocess import PreprocessOptions, preprocess_video
    from synctalk.state import PREPROCESSING, TrainingState

    video = root / f"{name}.mp4"
    syn_video(video, seconds, seed)
    dataset_dir = root / "dataset"
    res = preprocess_video(PreprocessOptions(video_path=video, name=name, dataset_dir=dataset_dir, asr_model="mel",
                                             landmarker="dlib", skip_landmarks=True, device="cpu", progress=False,
                                             crop_cache=False))
    layout = dataset_layout(dataset_dir, name)
    mx0, my0, mx1, my1 = syn_mouth_rect()
    # the levels as the dataset's own frames show them (after H.264 and back)
    levels = np.array([(cv2.imread(str(layout.frame_path(i)))[my0 + 2:my1 - 2, mx0 + 2:mx1 - 2].mean() - 30) / 200
                       for i in range(res.frame_count)], np.float32)
    lms = syn_landmarks(levels)
    layout.landmarks_dir.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(lms):
        write_landmarks(layout.landmark_path(i), p)
    np.save(layout.crop_boxes, np.tile(np.array(SYN_BOX, np.int32), (res.frame_count, 1)))
    TrainingState(layout.state_file).update(PREPROCESSING, landmarks_done=True, landmarker="dlib",
                                            landmark_count=res.frame_count, crop_boxes_done=True)
    reference = root / "reference.mp4"
    reference_levels = syn_video(reference, 4.0, seed + 5)
    _CACHE[name] = SimpleNamespace(root=root, dataset_dir=dataset_dir, layout=layout, name=name,
                                   frames=res.frame_count, video=video, levels=levels, reference=reference,
                                   reference_levels=reference_levels)
    return _CACHE[name]


class OracleUNet:
    """Stands in for the UNet: the reference crop with its mouth rectangle painted as bright as the audio
    window is loud at column `column` (default: the window's middle, the instant the frame shows)."""

    def __new__(cls, lo: float, hi: float, column: int | None = None):
        import torch

        class _Oracle(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lo, self.hi, self.column = lo, hi, column

            def forward(self, img6: "torch.Tensor", audio: "torch.Tensor") -> "torch.Tensor":
                col = audio.shape[-1] // 2 if self.column is None else self.column
                energy = audio[:, 0, :, col].mean(dim=1)  # mel layout (B, 1, bins, time)
                level = ((energy - self.lo) / (self.hi - self.lo)).clamp(0, 1)
                out = img6[:, :3].clone()
                x0, y0, x1, y1 = SYN_MOUTH_INNER
                out[:, :, y0:y1, x0:x1] = ((30 + 200 * level) / 255.0).view(-1, 1, 1, 1)
                return out

        return _Oracle()


def oracle_generator(layout, column: int | None = None):
    """A render.Generator around OracleUNet, calibrated on the person's own features."""
    import torch

    from synctalk.data import DEFAULT_MASK
    from synctalk.render import Generator

    feats = np.load(layout.features("mel"))
    frame_energy = feats.mean(axis=2)  # (N, 4): mean log-mel of each 10 ms column
    lo, hi = np.percentile(frame_energy, 5), np.percentile(frame_energy, 99)
    ckpt = {"asr": "mel", "config": {"asr": "mel", "mask": list(DEFAULT_MASK)}}
    return Generator(OracleUNet(float(lo), float(hi), column), ckpt, torch.device("cpu"))


class BrightnessMeter:
    """Measures the synthetic mouth: its mean brightness in the known rectangle (a 1-point 'landmark')."""

    mouth_points = [0]

    def measure(self, frames, boxes=None, track="real"):
        mx0, my0, mx1, my1 = syn_mouth_rect()
        v = np.array([f[my0 + 2:my1 - 2, mx0 + 2:mx1 - 2].mean() for f in frames], np.float32)
        pts = np.zeros((len(frames), 1, 2), np.float32)
        pts[:, 0, 0] = v
        return pts, np.tile(np.array(SYN_BOX, np.float32), (len(frames), 1))

    def openings(self, points):
        return points[:, 0, 0].astype(np.float32)
