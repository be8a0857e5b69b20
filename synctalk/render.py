"""`synctalk infer`: new speech → a lip-synced video of the person.

The avatar's own frames are walked forward and back (ping-pong) from --start_frame so long speech
never jumps; each frame's 328 crop (its box from crop_boxes.npy) is both the reference and, masked,
the image the UNet redraws the mouth into; the generated inner 320 goes back into the 328 crop,
which is resized into the box and pasted with a feathered border. Where the speech has not yet
begun (or has ended) the real frame is shown, cross-faded into the generated ones.

Three stages overlap: worker threads decode frames and cut crops ahead of the network, the network
runs in batches (on the GPU when there is one, where the paste-back happens too), and a writer
thread streams finished frames into ffmpeg.
"""

from __future__ import annotations

import argparse
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .device import tune_cpu_allocator
from .errors import SyncTalkError
from .layout import CROP_SIZE, DatasetLayout, checkpoint_layout, dataset_layout

FPS = 25
BORDER = 4  # the networks see crop[4:324, 4:324]
INNER = CROP_SIZE - 2 * BORDER
FEATHER_FRACTION = 0.08  # width of the blend ramp at the box border, as a fraction of the box side
# leading/trailing silence: frame RMS below this many dB under the speech level (95th percentile)
SILENCE_REL_DB = 30.0
SILENCE_FLOOR = 10 ** (-55.0 / 20.0)  # and never louder than -55 dBFS counts as silence
SILENCE_MIN_FRAMES = 3  # shorter pauses at the ends are left to the network
SPEECH_LEAD_FRAMES = 2  # lips move a little before the sound starts (and close a little after)
CROSSFADE_FRAMES = 4  # real → generated over this many frames


@dataclass(frozen=True)
class RenderResult:
    """What a render produced and how fast (end to end: audio in → MP4 out)."""

    frames: int
    seconds: float
    fps: float
    output: Path


# ---------------------------------------------------------------- checkpoints


def resolve_checkpoint(checkpoint_dir: str | Path, name: str, checkpoint: str | Path | None = None) -> Path:
    """The UNet checkpoint to render with: the given file, else checkpoint_best.pth, latest, newest epoch."""
    from .training.checkpoint import epoch_files

    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise SyncTalkError(f"checkpoint not found: {path}")
        return path
    ck = checkpoint_layout(checkpoint_dir, name)
    run_dir = ck.unet_dir
    candidates = [ck.best(run_dir), ck.latest(run_dir)] + [p for _e, p in reversed(epoch_files(run_dir))]
    for p in candidates:
        if p.is_file():
            return p
    raise SyncTalkError(
        f"no trained model for {name!r}: looked for {ck.best(run_dir)}, {ck.latest(run_dir)} and <epoch>.pth in "
        f"{run_dir}. Train one with `python scripts/train_328.py --name {name}` "
        f"(after `python scripts/train_328.py --name {name} --train_syncnet`), or pass --checkpoint FILE"
    )


def dataset_asr_models(layout: DatasetLayout) -> list[str]:
    """Audio models the dataset has feature files for (from its state file, else from the files present)."""
    from .audio.registry import ASR_MODELS
    from .state import TrainingState

    found: list[str] = []
    if layout.state_file.exists():
        sec = TrainingState(layout.state_file).section("preprocessing")
        found = [a for a in (sec.get("asr_models") or sorted(sec.get("feature_files") or {})) if a in ASR_MODELS]
    if not found:
        found = [a for a in ASR_MODELS if layout.features(a).exists()]
    return found


def load_generator(path: str | Path, device: Any, *, asr: str | None = None,
                   layout: DatasetLayout | None = None) -> tuple[Any, dict]:
    """Build the UNet of a checkpoint and load its weights (eval mode, on `device`); return (model, checkpoint).

    Raises when the file is not a UNet checkpoint, when it was trained on other audio features than an
    explicitly asked `asr`, or than the ones `layout`'s dataset was preprocessed with.
    """
    from unet_328 import build_unet

    from .training.checkpoint import load_checkpoint

    path = Path(path)
    ckpt = load_checkpoint(path, "unet")
    config = dict(ckpt.get("config") or {})
    have = ckpt.get("asr") or config.get("asr")
    if not have:
        raise SyncTalkError(f"{path} does not say which audio features it was trained on (no 'asr' entry)")
    if asr is not None and asr != have:
        raise SyncTalkError(
            f"{path} was trained on {have!r} audio features, but --asr {asr} was asked: "
            f"drop --asr, or pass a checkpoint trained on {asr!r}"
        )
    if layout is not None:
        made = dataset_asr_models(layout)
        if made and have not in made:
            raise SyncTalkError(
                f"{path} was trained on {have!r} audio features, but dataset {layout.root} has only "
                f"{', '.join(made)} features: is it another person's checkpoint? "
                f"(pass the right --checkpoint, or preprocess {layout.name} with --asr_model {have})"
            )
    width = config.get("width", "full")
    model = build_unet(have, width)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:200]
        raise SyncTalkError(f"{path} does not fit a {width!r} UNet for {have!r} features: {first}") from None
    model = model.to(device).eval()
    return model, ckpt


# ---------------------------------------------------------------- walk, silence, feathering


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


def frame_rms(audio: np.ndarray, count: int, sample_rate: int = 16000, fps: int = FPS) -> np.ndarray:
    """RMS level of each video frame's stretch of audio (count,) (zero past the end)."""
    hop = sample_rate // fps
    padded = np.zeros(count * hop, dtype=np.float32)
    n = min(audio.size, padded.size)
    padded[:n] = audio[:n]
    return np.sqrt(np.mean(padded.reshape(count, hop).astype(np.float64) ** 2, axis=1))


def silent_edges(audio: np.ndarray, count: int, sample_rate: int = 16000) -> tuple[int, int]:
    """(leading, trailing) frames of silence, by energy relative to the speech level."""
    rms = frame_rms(audio, count, sample_rate)
    level = float(np.percentile(rms, 95)) if count else 0.0
    threshold = max(SILENCE_FLOOR, level * 10 ** (-SILENCE_REL_DB / 20.0))
    loud = np.nonzero(rms >= threshold)[0]
    if level <= SILENCE_FLOOR or len(loud) == 0:
        return count, 0
    return int(loud[0]), int(count - 1 - loud[-1])


def generation_weights(audio: np.ndarray, count: int, sample_rate: int = 16000) -> np.ndarray:
    """Per output frame: 1 = generated mouth, 0 = the real frame (silent start/end), cross-faded between.

    The first and last frame of a silent start or end are always real, so a clip begins and ends on
    the person's own closed mouth.
    """
    lead, trail = silent_edges(audio, count, sample_rate)
    w = np.ones(count, dtype=np.float32)
    if lead >= count:
        return np.zeros(count, dtype=np.float32)
    if lead >= SILENCE_MIN_FRAMES:
        end = max(lead - SPEECH_LEAD_FRAMES, 1)  # generated from here on
        n = max(min(CROSSFADE_FRAMES, end - 1), 0)
        w[:end] = 0.0
        w[end - n:end] = np.arange(1, n + 1, dtype=np.float32) / (n + 1)
    if trail >= SILENCE_MIN_FRAMES:
        begin = min(count - trail + SPEECH_LEAD_FRAMES, count - 1)  # real from here on
        n = max(min(CROSSFADE_FRAMES, count - begin - 1), 0)
        fade = np.arange(n, 0, -1, dtype=np.float32) / (n + 1)
        w[begin:] = 0.0
        w[begin:begin + n] = fade
    return w


_FEATHER_CACHE: dict[tuple[int, int], np.ndarray] = {}


def feather_alpha(height: int, width: int, fraction: float = FEATHER_FRACTION) -> np.ndarray:
    """(height, width) float32 blend weight: 1 inside, easing to 0 at the border over `fraction` of the side."""
    key = (height, width)
    if key in _FEATHER_CACHE and fraction == FEATHER_FRACTION:
        return _FEATHER_CACHE[key]
    ramp = max(fraction * min(height, width), 1.0)

    def edge(n: int) -> np.ndarray:
        d = np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5)
        t = np.clip(d / ramp, 0.0, 1.0)
        return t * t * (3.0 - 2.0 * t)  # smoothstep: no visible kink where the ramp ends

    alpha = np.minimum(edge(height)[:, None], edge(width)[None, :]).astype(np.float32)
    if fraction == FEATHER_FRACTION:
        _FEATHER_CACHE[key] = alpha
    return alpha


# ---------------------------------------------------------------- paste-back


def _clip_box(box: Sequence[int], frame_hw: tuple[int, int]) -> tuple[int, int, int, int, int, int, int, int]:
    """Box and its part inside the frame: (x1, y1, x2, y2, sx0, sy0, sx1, sy1)."""
    x1, y1, x2, y2 = (int(v) for v in box[:4])
    h, w = frame_hw
    return x1, y1, x2, y2, max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)


def paste_back(frame: np.ndarray, crop328: np.ndarray, box: Sequence[int], weight: float = 1.0) -> np.ndarray:
    """Resize a 328 crop into its box of `frame` and blend it in with a feathered border (CPU, in place)."""
    import cv2

    x1, y1, x2, y2, sx0, sy0, sx1, sy1 = _clip_box(box, frame.shape[:2])
    bw, bh = x2 - x1, y2 - y1
    if sx1 <= sx0 or sy1 <= sy0 or weight <= 0:
        return frame
    interp = cv2.INTER_AREA if (bw < CROP_SIZE and bh < CROP_SIZE) else cv2.INTER_CUBIC
    patch = cv2.resize(crop328, (bw, bh), interpolation=interp)[sy0 - y1:sy1 - y1, sx0 - x1:sx1 - x1]
    alpha = feather_alpha(bh, bw)[sy0 - y1:sy1 - y1, sx0 - x1:sx1 - x1, None] * np.float32(weight)
    region = frame[sy0:sy1, sx0:sx1].astype(np.float32)
    frame[sy0:sy1, sx0:sx1] = np.clip(region + (patch.astype(np.float32) - region) * alpha + 0.5, 0, 255).astype(np.uint8)
    return frame


def paste_back_torch(frames: Sequence[np.ndarray], crops328: Any, boxes: Sequence[Sequence[int]],
                     weights: Sequence[float]) -> None:
    """The same paste-back with the resize and blend on the crops' device (one transfer back); in place.

    `crops328` is (B, 3, 328, 328) float in [0, 1] on any device; `frames` are host BGR uint8 arrays.
    """
    import torch
    import torch.nn.functional as F

    device = crops328.device
    jobs = []
    parts = []
    for i, (frame, box, wgt) in enumerate(zip(frames, boxes, weights)):
        x1, y1, x2, y2, sx0, sy0, sx1, sy1 = _clip_box(box, frame.shape[:2])
        bw, bh = x2 - x1, y2 - y1
        if sx1 <= sx0 or sy1 <= sy0 or wgt <= 0:
            continue
        shrink = bw < CROP_SIZE and bh < CROP_SIZE
        patch = F.interpolate(crops328[i:i + 1].float(), size=(bh, bw), mode="bicubic", align_corners=False,
                              antialias=shrink)[0, :, sy0 - y1:sy1 - y1, sx0 - x1:sx1 - x1]
        region = torch.from_numpy(np.ascontiguousarray(frame[sy0:sy1, sx0:sx1])).to(device, non_blocking=True)
        region = region.permute(2, 0, 1).float()
        alpha = torch.from_numpy(feather_alpha(bh, bw)[sy0 - y1:sy1 - y1, sx0 - x1:sx1 - x1]).to(device)
        out = region + (patch * 255.0 - region) * (alpha * float(wgt))
        parts.append(out.add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).reshape(-1))
        jobs.append((i, sx0, sy0, sx1, sy1))
    if not parts:
        return
    flat = torch.cat(parts).cpu().numpy()  # one device → host copy for the whole batch
    pos = 0
    for i, sx0, sy0, sx1, sy1 in jobs:
        n = (sy1 - sy0) * (sx1 - sx0) * 3
        frames[i][sy0:sy1, sx0:sx1] = flat[pos:pos + n].reshape(sy1 - sy0, sx1 - sx0, 3)
        pos += n


# ---------------------------------------------------------------- the network on crops


CPU_MICRO_BATCH = 4  # on the CPU, small network batches keep activations in the reused heap (2x faster)
def fuse_conv_bn(model: Any) -> Any:
    """Fold every BatchNorm2d that follows a Conv2d in a Sequential into the convolution (eval only; in place).

    Inference then skips a third of its work (the normalisation passes) for the same output.
    """
    import torch.nn as nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    return model


class Generator:
    """A loaded UNet with its mask and audio model: crops + audio windows → generated 328 crops."""

    def __init__(self, model: Any, ckpt: dict, device: Any, bf16: bool = False, pad_to: int = 0):
        import torch

        from .audio.registry import get_spec
        from .data import parse_mask

        self.model = model
        self.device = device
        self.asr = ckpt.get("asr") or (ckpt.get("config") or {}).get("asr")
        self.spec = get_spec(self.asr)
        self.mask = parse_mask((ckpt.get("config") or {}).get("mask"))
        self.bf16 = bool(bf16) and device.type == "cuda"
        # on a GPU every new input shape costs kernel selection (seconds with cuDNN); a short last
        # batch is padded to the usual size so a render sees one shape only
        self.pad_to = int(pad_to) if device.type == "cuda" else 0
        self.micro = CPU_MICRO_BATCH if device.type == "cpu" else 0
        if device.type == "cpu":
            tune_cpu_allocator()
        # NHWC is faster for these depthwise convolutions on the CPU (oneDNN) as on GPUs
        self.channels_last = True
        self.model = fuse_conv_bn(self.model.eval()).to(memory_format=torch.channels_last)
        x0, y0, x1, y1 = self.mask
        keep = torch.ones((1, 1, INNER, INNER), device=device)
        keep[..., y0:y1, x0:x1] = 0
        self.keep = keep

    def __call__(self, crops: np.ndarray, features: Any, audio_idx: Sequence[int]) -> Any:
        """(B, 328, 328, 3) uint8 crops (each its own reference), audio rows → (B, 3, 328, 328) float [0, 1]."""
        import contextlib

        import torch

        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        b = len(crops)
        audio_idx = np.asarray(audio_idx)
        if b < self.pad_to:
            fill = self.pad_to - b
            crops = np.concatenate([crops, np.repeat(crops[-1:], fill, axis=0)])
            audio_idx = np.concatenate([audio_idx, np.repeat(audio_idx[-1:], fill)])
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(crops))
            if self.device.type == "cuda":
                t = t.pin_memory()
            full = t.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
            inner = full[:, :, BORDER:BORDER + INNER, BORDER:BORDER + INNER]
            img6 = torch.cat([inner, inner * self.keep], dim=1)
            if self.channels_last:
                img6 = img6.contiguous(memory_format=torch.channels_last)
            idx = torch.as_tensor(np.asarray(audio_idx), dtype=torch.long, device=features.device)
            audio = self.spec.batch_windows(features, idx).to(self.device)
            step = self.micro or len(img6)
            with ctx:
                pred = torch.cat([self.model(img6[i:i + step], audio[i:i + step])
                                  for i in range(0, len(img6), step)])
            # the 4-pixel border keeps the real crop; the network's image fills the inner 320
            full[:, :, BORDER:BORDER + INNER, BORDER:BORDER + INNER] = pred.float().clamp_(0, 1)
        return full[:b]


def crops_to_uint8(crops: Any) -> np.ndarray:
    """(B, 3, H, W) float [0, 1] tensor → (B, H, W, 3) uint8 BGR array."""
    import torch

    return crops.mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


# ---------------------------------------------------------------- frame reading / writing threads


def _read_frame(layout: DatasetLayout, boxes: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    from .faces.crop import crop_frame

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


# ---------------------------------------------------------------- render


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


def default_output(name: str, audio_path: str | Path, checkpoint: Path) -> Path:
    """result/<name>_<audio>_<checkpoint>.mp4."""
    return Path("result") / f"{name}_{Path(audio_path).stem}_{checkpoint.stem}.mp4"


def render(name: str, audio_path: str | Path, output: str | Path | None = None, *,
           dataset_dir: str | Path = "dataset", checkpoint_dir: str | Path = "checkpoint",
           checkpoint: str | Path | None = None, start_frame: int = 0, loop_back: bool = False,
           batch_size: int = 16, device: Any = "auto", models_dir: str | Path | None = None,
           asr: str | None = None, bf16: bool = False, progress: bool = True) -> RenderResult:
    """Render `audio_path` as speech of `name`; write an H.264 + AAC MP4 to `output`."""
    import torch
    from tqdm import tqdm

    from . import media
    from .audio.features import compute_features, frames_for_duration
    from .audio.registry import SAMPLE_RATE
    from .device import resolve_device

    t0 = time.perf_counter()
    if batch_size < 1:
        raise SyncTalkError(f"--batch_size must be at least 1, got {batch_size}")
    layout = dataset_layout(dataset_dir, name)
    ckpt_path = resolve_checkpoint(checkpoint_dir, name, checkpoint)
    boxes = load_boxes(layout)
    n_src = len(boxes)
    if not layout.frame_path(n_src - 1).exists():
        raise SyncTalkError(f"{layout.name}: {n_src} crop boxes but frame {layout.frame_path(n_src - 1)} is missing")
    if not 0 <= start_frame < n_src:
        raise SyncTalkError(f"--start_frame {start_frame} is outside the dataset's frames 0..{n_src - 1}")

    audio_path = Path(audio_path)
    if not audio_path.is_file():
        raise SyncTalkError(f"audio file not found: {audio_path}")
    audio = media.load_audio(audio_path, SAMPLE_RATE)  # unreadable / empty → SyncTalkError
    if not np.isfinite(audio).all():
        raise SyncTalkError(f"{audio_path} decodes to NaN or infinite samples")
    count = frames_for_duration(audio.size / SAMPLE_RATE, FPS)

    dev = resolve_device(device) if isinstance(device, str) or device is None else torch.device(device)
    model, ckpt = load_generator(ckpt_path, dev, asr=asr, layout=layout)
    gen = Generator(model, ckpt, dev, bf16=bf16, pad_to=batch_size)
    out_path = Path(output) if output else default_output(name, audio_path, ckpt_path)
    if progress:
        print(f"{name}: {audio.size / SAMPLE_RATE:.2f} s of speech → {count} frames with {ckpt_path} "
              f"({gen.asr}, {(ckpt.get('config') or {}).get('width', 'full')}) on {dev}")
    feats = compute_features(gen.asr, audio, count, models_dir=models_dir, device=str(dev), progress=progress)
    feats_t = torch.from_numpy(feats).to(dev)
    sources = pingpong_indices(count, n_src, start_frame, loop_back)
    weights = generation_weights(audio, count, SAMPLE_RATE)
    h, w = cv2_shape(layout.frame_path(0))

    bar = tqdm(total=count, desc=f"render {name}", unit="frame", disable=not progress)
    with media.VideoWriter(out_path, w, h, FPS, audio_path=audio_path, duration=count / FPS) as writer:
        sink = FrameSink(writer, depth=max(2 * batch_size, 32))
        try:
            done = 0
            for chunk in prefetch_frames(layout, boxes, sources, batch_size):
                k = np.arange(done, done + len(chunk))
                frames = [f for f, _c in chunk]  # fresh arrays from the decoder: pasted into in place
                if any(f.shape[:2] != (h, w) for f in frames):
                    raise SyncTalkError(f"{layout.frames_dir} holds frames of different sizes; "
                                        f"rerun preprocessing of {name}")
                todo = [j for j in range(len(chunk)) if weights[k[j]] > 0]
                if todo:
                    crops = np.stack([chunk[j][1] for j in todo])
                    generated = gen(crops, feats_t, k[todo])
                    sel_frames = [frames[j] for j in todo]
                    sel_boxes = [boxes[sources[k[j]]] for j in todo]
                    sel_w = [float(weights[k[j]]) for j in todo]
                    if dev.type == "cuda":
                        paste_back_torch(sel_frames, generated, sel_boxes, sel_w)
                    else:
                        for f, c, b, wt in zip(sel_frames, crops_to_uint8(generated), sel_boxes, sel_w):
                            paste_back(f, c, b, wt)
                for f in frames:
                    sink.put(f)
                done += len(chunk)
                bar.update(len(chunk))
        finally:
            sink.close()
            bar.close()
    seconds = time.perf_counter() - t0
    if progress:
        print(f"wrote {out_path} ({count} frames, {count / FPS:.2f} s) in {seconds:.1f} s ({count / seconds:.1f} fps)")
    return RenderResult(frames=count, seconds=seconds, fps=count / seconds if seconds > 0 else float("inf"),
                        output=out_path)


def cv2_shape(path: Path) -> tuple[int, int]:
    """(height, width) of an image file."""
    import cv2

    img = cv2.imread(str(path))
    if img is None:
        raise SyncTalkError(f"frame {path} is missing or unreadable")
    return img.shape[0], img.shape[1]


# ---------------------------------------------------------------- command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `synctalk infer` / scripts/inference_328.py."""
    from .audio.registry import ASR_MODELS

    p.add_argument("--name", required=True, help="person name: dataset/<name>/, checkpoint/<name>/")
    p.add_argument("--audio_path", required=True, help="the speech to render (any format ffmpeg reads)")
    p.add_argument("--checkpoint", default=None,
                   help="UNet checkpoint (default: checkpoint/<name>/checkpoint_best.pth, else the latest)")
    p.add_argument("--output", default=None, help="output MP4 (default result/<name>_<audio>_<checkpoint>.mp4)")
    p.add_argument("--start_frame", type=int, default=0, help="avatar frame the video starts from")
    p.add_argument("--loop_back", action="store_true", help="end on the frame the video started from")
    p.add_argument("--batch_size", type=int, default=16, help="frames per network batch")
    p.add_argument("--dataset_dir", default="dataset", type=Path)
    p.add_argument("--checkpoint_dir", default="checkpoint", type=Path)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 …")
    p.add_argument("--models_dir", default=None, type=Path, help="where audio model weights are looked for first")
    p.add_argument("--asr", default=None, choices=ASR_MODELS,
                   help="audio model (default: the checkpoint's; a different one is an error)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast on a CUDA GPU (faster)")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Entry point of `synctalk infer`."""
    render(args.name, args.audio_path, args.output, dataset_dir=args.dataset_dir,
           checkpoint_dir=args.checkpoint_dir, checkpoint=args.checkpoint, start_frame=args.start_frame,
           loop_back=args.loop_back, batch_size=args.batch_size, device=args.device, models_dir=args.models_dir,
           asr=args.asr, bf16=args.bf16, progress=not args.no_progress)
    return 0
