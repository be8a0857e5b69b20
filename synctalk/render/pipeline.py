"""Rendering: speech features + the avatar's frames → generated frames, one path for `infer` and `eval`.

Output frame k is shown at time k/25 s of the MP4, whose audio starts at 0; its mouth is generated
from feature row `rows[k]` — for new speech row k, whose window the audio registry centres on time
k/25 (the same `batch_windows` call training makes) — on the crop of avatar frame `sources[k]`. A
`FramePlan` says, per output frame, which avatar frame, which feature row and how much speech mouth
and resting mouth it gets; `render_chunks` turns a plan into finished frames. `synctalk infer`
(`render`) writes them to an MP4, `synctalk eval` scores them: both walk the same code, so what eval
measures is what infer makes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..constants import CROP_SIZE, FPS, SAMPLE_RATE
from ..errors import SyncTalkError
from ..layout import DatasetLayout, dataset_layout
from .frames import FrameSink, _read_frame, cv2_shape, load_boxes, pingpong_indices, prefetch_frames
from .generator import Generator, crops_to_uint8, inference_bf16, load_generator, resolve_checkpoint
from .paste import paste_back, paste_back_torch
from .silence import dataset_resting_frames, generation_weights, rest_sources, rest_weights, voice_activity


@dataclass(frozen=True)
class RenderResult:
    """What a render produced and how fast (end to end: audio in → MP4 out)."""

    frames: int
    seconds: float
    fps: float
    output: Path


@dataclass
class FramePlan:
    """Per output frame: avatar frame, feature row, weight of the speech mouth and of the resting mouth.

    speech + rest <= 1; the rest of the weight is the avatar's real frame. `rest_frames[k]` is the
    avatar frame whose crop and silent feature window make the resting mouth (-1 where rest is 0).
    `references[k]`, when given, is the avatar frame whose crop is the speech mouth's reference image
    (-1, or no array: the frame's own crop, as every render of new speech has it).
    """

    sources: np.ndarray
    rows: np.ndarray
    speech: np.ndarray
    rest: np.ndarray
    rest_frames: np.ndarray
    references: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.sources)


def frame_plan(sources: np.ndarray, rows: np.ndarray, *, active: np.ndarray | None = None,
               candidates: np.ndarray | None = None, edge_weights: np.ndarray | None = None) -> FramePlan:
    """A plan: with voice activity and resting candidates, pauses get the resting mouth; otherwise (no
    resting frame known, or silence handling off) the speech mouth everywhere, times `edge_weights`
    (the real frame where that is 0)."""
    sources = np.asarray(sources, np.int64)
    rows = np.asarray(rows, np.int64)
    count = len(sources)
    if len(rows) != count:
        raise ValueError(f"{count} source frames but {len(rows)} feature rows")
    speech = np.ones(count, np.float32) if edge_weights is None else np.asarray(edge_weights, np.float32)
    rest = np.zeros(count, np.float32)
    rest_frames = np.full(count, -1, np.int64)
    if active is not None and candidates is not None and len(candidates):
        rest = rest_weights(active)
        rest_frames = rest_sources(rest, sources, candidates)
        rest[rest_frames < 0] = 0.0
        speech = 1.0 - rest
    return FramePlan(sources=sources, rows=rows, speech=speech, rest=rest, rest_frames=rest_frames)


@dataclass
class RenderedChunk:
    """Consecutive finished output frames: numbers, full frames, final 328 crops and the avatar's crops."""

    index: np.ndarray
    frames: list[np.ndarray]
    crops: np.ndarray | None
    real_crops: np.ndarray


def render_chunks(gen: Generator, layout: DatasetLayout, boxes: np.ndarray, plan: FramePlan, features: Any,
                  rest_features: Any = None, batch_size: int = 16, want_crops: bool = False,
                  workers: int = 4) -> Iterator[RenderedChunk]:
    """Generate and paste back every frame of `plan`, `batch_size` at a time, in order.

    `features` holds the rows of `plan.rows` (a tensor on any device); `rest_features` the person's
    own features the resting windows come from (needed only when the plan has pauses).
    """
    import torch

    crop_cache: dict[int, np.ndarray] = {}

    def crop_of(i: int) -> np.ndarray:  # the crop of avatar frame i (a pause's resting frame, a reference)
        if i not in crop_cache:
            if len(crop_cache) > 64:  # keep memory bounded on long speech
                crop_cache.clear()
            crop_cache[i] = _read_frame(layout, boxes, i)[1]
        return crop_cache[i]

    done = 0
    for chunk in prefetch_frames(layout, boxes, plan.sources, batch_size, workers=workers):
        k = np.arange(done, done + len(chunk))
        done += len(chunk)
        frames = [f for f, _c in chunk]  # fresh arrays from the decoder: pasted into in place
        real = np.stack([c for _f, c in chunk])
        sp, rs = plan.speech[k], plan.rest[k]
        total = sp + rs
        todo = np.nonzero(total > 0)[0]
        mix = None
        if len(todo):
            mix = torch.zeros((len(k), 3, CROP_SIZE, CROP_SIZE), device=gen.device)
            s_idx = np.nonzero(sp > 0)[0]
            if len(s_idx):
                refs = None
                if plan.references is not None and (plan.references[k[s_idx]] >= 0).any():
                    refs = np.stack([crop_of(int(r)) if r >= 0 else real[j]
                                     for r, j in zip(plan.references[k[s_idx]], s_idx)])
                out = gen(real[s_idx], features, plan.rows[k[s_idx]], references=refs)
                mix[torch.as_tensor(s_idx, device=gen.device)] += out.float() * _col(sp[s_idx], gen.device)
            r_idx = np.nonzero(rs > 0)[0]
            if len(r_idx):
                if rest_features is None:
                    raise ValueError("the plan has pauses but no rest_features were given")
                src = plan.rest_frames[k[r_idx]]
                refs = np.stack([crop_of(int(i)) for i in src])
                out = gen(real[r_idx], rest_features, src, references=refs)
                mix[torch.as_tensor(r_idx, device=gen.device)] += out.float() * _col(rs[r_idx], gen.device)
            mix[torch.as_tensor(todo, device=gen.device)] /= _col(total[todo], gen.device)
            sel_frames = [frames[j] for j in todo]
            sel_boxes = [boxes[plan.sources[k[j]]] for j in todo]
            sel_w = [float(total[j]) for j in todo]
            if gen.device.type == "cuda":
                paste_back_torch(sel_frames, mix[torch.as_tensor(todo, device=gen.device)], sel_boxes, sel_w)
            else:
                for f, c, b, wt in zip(sel_frames, crops_to_uint8(mix[torch.as_tensor(todo)]), sel_boxes, sel_w):
                    paste_back(f, c, b, wt)
        crops = None
        if want_crops:
            crops = real.copy()
            if mix is not None:
                gen_u8 = crops_to_uint8(mix[torch.as_tensor(todo, device=gen.device)]).astype(np.float32)
                w = total[todo][:, None, None, None]
                crops[todo] = np.clip(real[todo] + (gen_u8 - real[todo]) * w + 0.5, 0, 255).astype(np.uint8)
        yield RenderedChunk(index=k, frames=frames, crops=crops, real_crops=real)


def _col(w: np.ndarray, device: Any) -> Any:
    import torch

    return torch.as_tensor(np.asarray(w, np.float32), device=device).view(-1, 1, 1, 1)


def speech_features(asr: str, audio: np.ndarray, count: int, device: Any, models_dir: str | Path | None = None,
                    progress: bool = True, layout: DatasetLayout | None = None) -> Any:
    """Feature rows of new speech on `device` (row k ↔ output frame k), as training's features were made
    (for whisper: by the model that made the person's, as preprocessing recorded it)."""
    import torch

    from ..audio.features import compute_features
    from ..state import PREPROCESSING, TrainingState

    whisper_model = None
    if asr == "whisper" and layout is not None and layout.state_file.exists():
        whisper_model = TrainingState(layout.state_file).section(PREPROCESSING).get("whisper_model")
    feats = compute_features(asr, audio, count, models_dir=models_dir, device=str(device), progress=progress,
                             whisper_model=whisper_model)
    return torch.from_numpy(feats).to(device)


def silence_plan_inputs(layout: DatasetLayout, gen: Generator, n_src: int) -> np.ndarray:
    """The avatar's resting frames for the generator's audio window (empty without landmarks)."""
    if not layout.landmark_path(n_src - 1).exists() or not layout.audio_wav.exists():
        return np.zeros(0, np.int64)
    return dataset_resting_frames(layout, n_src, gen.spec.left, gen.spec.window - gen.spec.left)


def speech_plan(layout: DatasetLayout, gen: Generator, audio: np.ndarray, sources: np.ndarray, rows: np.ndarray,
                silence: bool = True, candidates: np.ndarray | None = None) -> FramePlan:
    """The plan `synctalk infer` renders new speech with (rows[k] ↔ output frame k of `audio`):
    resting mouths in its pauses, or with `silence` off the real frames in its silent start and end."""
    count = len(sources)
    edges = generation_weights(audio, count, SAMPLE_RATE)
    if not silence:
        return frame_plan(sources, rows, edge_weights=edges)
    if candidates is None:
        candidates = silence_plan_inputs(layout, gen, len(load_boxes(layout)))
    return frame_plan(sources, rows, active=voice_activity(audio, count), candidates=candidates, edge_weights=edges)


def own_features(layout: DatasetLayout, gen: Generator, n: int) -> Any:
    """The person's own feature rows (for resting windows) on the generator's device."""
    import torch

    from ..data import load_features

    return torch.from_numpy(np.ascontiguousarray(load_features(layout, gen.asr)[:n])).to(gen.device)


def default_output(name: str, audio_path: str | Path, checkpoint: Path) -> Path:
    """result/<name>_<audio>_<checkpoint>.mp4."""
    return Path("result") / f"{name}_{Path(audio_path).stem}_{checkpoint.stem}.mp4"


def load_speech(audio_path: str | Path) -> np.ndarray:
    """16 kHz mono float32 samples of a speech file, checked."""
    from .. import media

    audio_path = Path(audio_path)
    if not audio_path.is_file():
        raise SyncTalkError(f"audio file not found: {audio_path}")
    audio = media.load_audio(audio_path, SAMPLE_RATE)  # unreadable / empty → SyncTalkError
    if not np.isfinite(audio).all():
        raise SyncTalkError(f"{audio_path} decodes to NaN or infinite samples")
    return audio


def render(name: str, audio_path: str | Path, output: str | Path | None = None, *,
           dataset_dir: str | Path = "dataset", checkpoint_dir: str | Path = "checkpoint",
           checkpoint: str | Path | None = None, start_frame: int = 0, loop_back: bool = False,
           batch_size: int = 16, device: Any = "auto", models_dir: str | Path | None = None,
           asr: str | None = None, amp: str = "auto", silence: bool = True, progress: bool = True,
           generator: Generator | None = None) -> RenderResult:
    """Render `audio_path` as speech of `name`; write an H.264 + AAC MP4 to `output`.

    With `silence` pauses of at least 0.3 s get the person's resting mouth (see render.silence);
    without it only silence at the very start and end shows the real frames. `amp`: auto (bf16
    autocast on a CUDA GPU, fp32 elsewhere), bf16 or none. `generator` replaces the checkpoint's UNet
    (anything with Generator's call, device and spec).
    """
    import torch
    from tqdm import tqdm

    from .. import media
    from ..audio.features import frames_for_duration
    from ..device import resolve_device

    t0 = time.perf_counter()
    if batch_size < 1:
        raise SyncTalkError(f"--batch_size must be at least 1, got {batch_size}")
    layout = dataset_layout(dataset_dir, name)
    ckpt_path = Path(checkpoint) if generator is not None and checkpoint else None
    if generator is None:
        ckpt_path = resolve_checkpoint(checkpoint_dir, name, checkpoint)
    boxes = load_boxes(layout)
    n_src = len(boxes)
    if not layout.frame_path(n_src - 1).exists():
        raise SyncTalkError(f"{layout.name}: {n_src} crop boxes but frame {layout.frame_path(n_src - 1)} is missing")
    if not 0 <= start_frame < n_src:
        raise SyncTalkError(f"--start_frame {start_frame} is outside the dataset's frames 0..{n_src - 1}")
    audio_path = Path(audio_path)
    audio = load_speech(audio_path)
    count = frames_for_duration(audio.size / SAMPLE_RATE, FPS)

    if generator is None:
        dev = resolve_device(device) if isinstance(device, str) or device is None else torch.device(device)
        model, ckpt = load_generator(ckpt_path, dev, asr=asr, layout=layout)
        gen = Generator(model, ckpt, dev, bf16=inference_bf16(amp, dev), pad_to=batch_size)
        what = (f"{ckpt_path} ({gen.asr}, {(ckpt.get('config') or {}).get('width', 'full')}"
                f"{', bf16' if gen.bf16 else ''})")
    else:
        gen, dev, what = generator, generator.device, f"a given generator ({generator.asr})"
    out_path = Path(output) if output else default_output(name, audio_path, ckpt_path or Path("generator"))
    from ..fileio import remove_stale_temps

    remove_stale_temps(out_path.parent)  # what a killed render left there (a live writer's file is kept)
    if progress:
        print(f"{name}: {audio.size / SAMPLE_RATE:.2f} s of speech → {count} frames with {what} on {dev}")
    feats_t = speech_features(gen.asr, audio, count, dev, models_dir, progress, layout)
    sources = pingpong_indices(count, n_src, start_frame, loop_back)
    rows = np.arange(count)
    plan = speech_plan(layout, gen, audio, sources, rows, silence)
    rest_feats = own_features(layout, gen, n_src) if plan.rest.any() else None
    h, w = cv2_shape(layout.frame_path(0))

    bar = tqdm(total=count, desc=f"render {name}", unit="frame", disable=not progress)
    with media.VideoWriter(out_path, w, h, FPS, audio_path=audio_path, duration=count / FPS) as writer:
        sink = FrameSink(writer, depth=max(2 * batch_size, 32))
        try:
            for chunk in render_chunks(gen, layout, boxes, plan, feats_t, rest_feats, batch_size):
                if any(f.shape[:2] != (h, w) for f in chunk.frames):
                    raise SyncTalkError(f"{layout.frames_dir} holds frames of different sizes; "
                                        f"rerun preprocessing of {name}")
                for f in chunk.frames:
                    sink.put(f)
                bar.update(len(chunk.frames))
        finally:
            sink.close()
            bar.close()
    seconds = time.perf_counter() - t0
    if progress:
        print(f"wrote {out_path} ({count} frames, {count / FPS:.2f} s) in {seconds:.1f} s ({count / seconds:.1f} fps)")
    return RenderResult(frames=count, seconds=seconds, fps=count / seconds if seconds > 0 else float("inf"),
                        output=out_path)
