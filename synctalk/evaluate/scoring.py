"""`synctalk eval`'s work: render through the infer path, measure the mouths, score.

Two modes, one render path (`synctalk.render.render_chunks`, the code `synctalk infer` runs):

* held-out tail (default): the tail of the person's own video that the UNet never trained on (the
  same split as training), rendered from its own feature rows on its own frames, once with the true
  audio and once with the audio one second (SHIFT_FRAMES) away as a control; scored against the
  real frames, PSNR/SSIM included (the frames correspond).
* cross-sentence (`reference_video`): the audio of another recording of the same person rendered on
  the avatar exactly as `synctalk infer` renders it (its features computed the same way, the same
  ping-pong walk and silence handling), scored against that recording's real mouth.

Mouth opening: inner-lip distance over face width (topology.mouth_aperture) from the landmarks of
a face detector + landmarker on whole frames. The lag profile correlates the generated opening
with the real one at −5…+5 frames; a peak at +N means the generated mouth moves N frames after the
real one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..constants import FPS, SAMPLE_RATE
from ..errors import SyncTalkError
from ..layout import dataset_layout
from ..state import PREPROCESSING
from .metrics import (laplacian_variance, mouth_patch, mouth_region, psnr, ratio, score_series, ssim)

SHIFT_FRAMES = 25  # the control: audio one second away
MIN_FRAMES = 5  # the fewest frames the temporal metrics mean anything on
HELD_OUT_REFERENCES = ("own", "train")  # the held-out mode's reference image: the frame's own crop, or a training frame's

METRIC_KEYS = ("sync_corr", "lag_peak", "lag_peak_corr", "sync_corr_shifted", "sync_margin", "lag_peak_vs_audio",
               "sync_corr_vs_audio", "psnr_mouth",
               "ssim_mouth", "jitter_ratio", "sharpness_ratio", "opening_range_ratio", "mean_opening_ratio",
               "peak_opening_ratio", "closure_ratio", "silence_opening_generated", "silence_opening_real",
               "silence_opening_gap", "silence_jitter_ratio")


@dataclass
class EvalResult:
    """Scores of one evaluation, and the per-frame series they came from."""

    name: str
    checkpoint: Path | None
    frames: list[int]
    metrics: dict[str, float | None]
    info: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)
    lag_profile: dict[int, float | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (NaN/inf become null)."""
        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {str(k): clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            if isinstance(v, np.generic):
                return clean(v.item())
            return v

        return clean({"name": self.name, "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                      "frames": self.frames, "metrics": dict(self.metrics), "lag_profile": self.lag_profile,
                      **self.info, "series": self.series})


class LandmarkMeter:
    """Mouth landmarks of whole frames: a face detector, then a landmarker, following one face per track."""

    def __init__(self, detector: Any, landmarker: Any):
        from ..faces.pipeline import FaceLandmarkPipeline

        self.detector, self.landmarker = detector, landmarker
        self.topology = landmarker.topology
        self.mouth_points = list(self.topology.mouth_outer) + list(self.topology.mouth_inner)
        self._tracks: dict[str, Any] = {}
        self._last: dict[str, np.ndarray] = {}

    def measure(self, frames: Sequence[np.ndarray], boxes: np.ndarray | None = None,
                track: str = "real") -> tuple[np.ndarray, np.ndarray]:
        """(landmarks (B, P, 2), face boxes (B, 4)); with `boxes` no detection (the same face, other pixels)."""
        from ..faces.pipeline import FaceLandmarkPipeline

        if boxes is None:
            pipe = self._tracks.setdefault(track, FaceLandmarkPipeline(self.detector, self.landmarker))
            boxes, found = pipe.detect_boxes(frames)
            boxes = np.array(boxes, np.float32)
            last = self._last.get(track)
            for i in range(len(boxes)):  # a frame without a face keeps the box before it
                if found[i]:
                    last = boxes[i]
                elif last is not None:
                    boxes[i] = last
            if last is None:
                raise SyncTalkError(f"no face found in {len(frames)} frames being scored ({track})")
            first = int(np.argmax(found))
            boxes[:first] = boxes[first]
            self._last[track] = last
        return self.landmarker(list(frames), boxes), boxes

    def openings(self, points: np.ndarray) -> np.ndarray:
        """Mouth opening per frame (inner-lip distance over face width)."""
        return self.topology.mouth_aperture(points)


def landmark_meter(landmarker: str, models_dir: str | Path | None, device: Any,
                   detector: str = "auto") -> LandmarkMeter:
    """A face detector (auto: SCRFD when its file is found, else dlib's) + the named landmarker, their
    weights checked before any rendering; says once which detector it uses and why."""
    from ..faces.factory import choose_detector, create_detector
    from ..faces.landmarks import create_landmarker

    choice = choose_detector(detector, models_dir)
    print(choice.describe(), flush=True)
    return LandmarkMeter(create_detector(choice, models_dir, device=str(device)),
                         create_landmarker(landmarker, models_dir, device=str(device)))


@dataclass
class _Series:
    """What the scoring loop gathers."""

    real: list = field(default_factory=list)
    gen: list = field(default_factory=list)
    shift: list = field(default_factory=list)
    psnr: list = field(default_factory=list)
    ssim: list = field(default_factory=list)
    sharp_gen: list = field(default_factory=list)
    sharp_real: list = field(default_factory=list)


def evaluate(name: str, *, dataset_dir: str | Path = "dataset", checkpoint_dir: str | Path = "checkpoint",
             checkpoint: str | Path | None = None, device: Any = "auto", models_dir: str | Path | None = None,
             batch_size: int = 16, val_fraction: float | None = None, shift: int = SHIFT_FRAMES,
             reference_video: str | Path | None = None, silence: bool = True, landmarker: str | None = None,
             start_frame: int = 0, progress: bool = True, generator: Any = None,
             meter: Any = None, detector: str = "auto", held_out_reference: str = "own") -> EvalResult:
    """Score `name`'s UNet: its held-out tail, or (with `reference_video`) another recording's speech.

    `held_out_reference` (held-out mode): "own" gives each frame its own crop as the reference image, as
    a render of the person's own video has it — so the UNet also sees the real mouth it is scored
    against; "train" gives it a frame of the training part instead (the frames just before the tail,
    in order), so it does not.

    `generator` (a render.Generator or anything with its call, device, asr and spec) replaces the
    checkpoint's UNet and `meter` (LandmarkMeter's measure/openings/mouth_points) the landmark
    measurement — for tests with known mouths.
    """
    import torch

    from ..device import resolve_device
    from ..render import Generator, load_boxes, load_generator, resolve_checkpoint
    from ..state import TrainingState

    if held_out_reference not in HELD_OUT_REFERENCES:  # before anything is loaded
        raise SyncTalkError(f"--held_out_reference must be one of {', '.join(HELD_OUT_REFERENCES)}, "
                            f"got {held_out_reference!r}")
    layout = dataset_layout(dataset_dir, name)
    boxes = load_boxes(layout)
    if reference_video is not None and not Path(reference_video).is_file():
        raise SyncTalkError(f"reference video not found: {reference_video}")
    pre = TrainingState(layout.state_file).section(PREPROCESSING) if layout.state_file.exists() else {}
    kind = landmarker or pre.get("landmarker") or "dlib"
    ckpt_path, ckpt = None, {}
    if generator is None:
        ckpt_path = resolve_checkpoint(checkpoint_dir, name, checkpoint)
        dev = resolve_device(device) if isinstance(device, str) or device is None else torch.device(device)
        if meter is None:
            meter = landmark_meter(kind, models_dir, dev, detector)  # fail before any rendering
        model, ckpt = load_generator(ckpt_path, dev, layout=layout)
        generator = Generator(model, ckpt, dev, pad_to=batch_size)
    elif meter is None:
        meter = landmark_meter(kind, models_dir, generator.device, detector)
    config = dict(ckpt.get("config") or {})
    info: dict[str, Any] = {
        "asr": generator.asr, "width": config.get("width"), "epoch": ckpt.get("epoch"), "shift_frames": int(shift),
        "landmarker": getattr(getattr(meter, "landmarker", None), "kind", None) or kind, "silence": bool(silence),
        "dataset_av_offset": pre.get("av_offset"), "training_av_offset": config.get("av_offset"),
    }
    if reference_video is None:
        vf = float(val_fraction if val_fraction is not None else config.get("val_fraction", 0.1))
        frames, series, speech, info_mode = _score_tail(layout, boxes, generator, meter, batch_size, vf, shift,
                                                        silence, progress, held_out_reference)
    else:
        frames, series, speech, info_mode = _score_reference(layout, boxes, generator, meter, batch_size,
                                                             Path(reference_video), shift, silence, start_frame,
                                                             models_dir, progress)
    info.update(info_mode)
    pts = {k: np.concatenate(getattr(series, k)) for k in ("real", "gen", "shift")}
    ap = {k: meter.openings(v) for k, v in pts.items()}
    mouth = list(meter.mouth_points)
    metrics, profile = score_series(ap["real"], ap["gen"], ap["shift"], pts["real"][:, mouth], pts["gen"][:, mouth],
                                    speech)
    finite_psnr = [p for p in series.psnr if math.isfinite(p)]
    metrics["psnr_mouth"] = (float(np.mean(finite_psnr)) if finite_psnr else float("inf")) if series.psnr else None
    metrics["ssim_mouth"] = float(np.mean(series.ssim)) if series.ssim else None
    metrics["sharpness_ratio"] = ratio(float(np.mean(series.sharp_gen)), float(np.mean(series.sharp_real)))
    # the real mouth lags its own audio by its recording's offset R (+R: lips after the sound), so the
    # generated mouth lags the audio by lag_peak + R, and lines up with the audio where the profile is at -R
    # (a recording whose offset drifts has its own offset over the scored frames: the median of its fit there)
    ref_offset = info.get("reference_av_offset") if reference_video is not None else info.get("dataset_av_offset")
    r = None
    if isinstance(ref_offset, dict) and "frames" in ref_offset and len(frames):
        from ..lipcheck import per_frame_offsets

        local = per_frame_offsets(ref_offset, int(np.max(frames)) + 1)[np.asarray(frames, dtype=np.int64)]
        r = int(np.median(local))
        info["scored_av_offset"] = r
    metrics["lag_peak_vs_audio"] = (int(metrics["lag_peak"]) + r) if r is not None and metrics["lag_peak"] is not None \
        else None
    metrics["sync_corr_vs_audio"] = profile.get(-r) if r is not None else None
    out_series = {"aperture_real": ap["real"].tolist(), "aperture_generated": ap["gen"].tolist(),
                  "aperture_shifted": ap["shift"].tolist(), "speech": [bool(s) for s in speech],
                  "psnr_mouth": series.psnr, "ssim_mouth": series.ssim}
    return EvalResult(name=name, checkpoint=ckpt_path, frames=[int(i) for i in frames], metrics=metrics,
                      info=info, series=out_series, lag_profile=profile)


def _shifted_rows(rows: np.ndarray, shift: int, n: int) -> np.ndarray:
    return (np.asarray(rows) - int(shift)) % n


def fit_length(audio: np.ndarray, count: int) -> np.ndarray:
    """The audio cut or padded with silence to exactly `count` frames."""
    n = count * (SAMPLE_RATE // FPS)
    return audio[:n] if audio.size >= n else np.concatenate([audio, np.zeros(n - audio.size, audio.dtype)])


def training_references(val: np.ndarray) -> np.ndarray:
    """Reference frames from the training part for a held-out tail: the len(val) frames just before it,
    in order (repeated from the start when the training part is shorter)."""
    first = int(val[0])
    if first < 1:
        raise SyncTalkError("no training frames before the held-out tail to take references from")
    start = max(0, first - len(val))
    return start + np.arange(len(val)) % (first - start)


def _score_tail(layout: Any, boxes: np.ndarray, gen: Any, meter: Any, batch_size: int, vf: float, shift: int,
                silence: bool, progress: bool,
                reference: str = "own") -> tuple[np.ndarray, _Series, np.ndarray, dict[str, Any]]:
    """The held-out tail, rendered from its own rows on its own frames (and with rows one second away);
    `reference` "train": each frame's reference image is a training frame's crop (training_references)."""
    import cv2
    from tqdm import tqdm

    from .. import media
    from ..data import load_features, split_indices
    from ..render import frame_plan, render_chunks, voice_activity
    from ..render.pipeline import silence_plan_inputs

    feats = load_features(layout, gen.asr)
    n = min(len(feats), len(boxes))
    _train, val = split_indices(n, vf if vf > 0 else 0.1)
    if len(val) < MIN_FRAMES:
        raise SyncTalkError(
            f"only {len(val)} held-out frames in {layout.name} ({n} frames, val_fraction {vf}): at least "
            f"{MIN_FRAMES} are needed; evaluate a longer video or pass a larger --val_fraction"
        )
    import torch

    feats_t = torch.from_numpy(np.ascontiguousarray(feats[:n])).to(gen.device)
    active = voice_activity(media.load_audio(layout.audio_wav, SAMPLE_RATE), n)
    candidates = None
    if silence:  # resting frames from the part the UNet trained on: a held-out frame would leak its mouth
        candidates = silence_plan_inputs(layout, gen, n)
        candidates = candidates[candidates < val[0]]
    rows_shift = _shifted_rows(val, shift, n)
    plan = frame_plan(val, val, active=active[val] if silence else None, candidates=candidates)
    plan_shift = frame_plan(val, rows_shift, active=active[rows_shift] if silence else None, candidates=candidates)
    if reference == "train":
        plan.references = plan_shift.references = training_references(val)
    s = _Series()
    bar = tqdm(total=len(val), desc=f"eval {layout.name}", unit="frame", disable=not progress)
    for true, ctrl in zip(render_chunks(gen, layout, boxes, plan, feats_t, feats_t, batch_size, want_crops=True),
                          render_chunks(gen, layout, boxes, plan_shift, feats_t, feats_t, batch_size)):
        real_frames = []
        for i in plan.sources[true.index]:
            img = cv2.imread(str(layout.frame_path(int(i))))
            if img is None:
                raise SyncTalkError(f"frame {layout.frame_path(int(i))} is missing or unreadable")
            real_frames.append(img)
        pts_real, fb = meter.measure(real_frames)
        # the same face box for all three: differences come from the mouth alone
        s.real.append(pts_real)
        s.gen.append(meter.measure(true.frames, fb)[0])
        s.shift.append(meter.measure(ctrl.frames, fb)[0])
        for g, r in zip(true.crops, true.real_crops):
            gm, rm = mouth_region(g), mouth_region(r)
            s.psnr.append(psnr(gm, rm))
            s.ssim.append(ssim(gm, rm))
            s.sharp_gen.append(laplacian_variance(gm))
            s.sharp_real.append(laplacian_variance(rm))
        bar.update(len(true.index))
    bar.close()
    info = {"mode": "held_out", "held_out": {"first": int(val[0]), "last": int(val[-1]), "count": int(len(val)),
                                             "of": int(n), "reference": reference}}
    return val, s, active[val], info


def _reference_frames(path: Path) -> Iterator[np.ndarray]:
    from .. import media

    info = media.probe(path)
    if not info.has_video:
        raise SyncTalkError(f"reference video {path} has no video track")
    resample = info.variable_fps or info.fps is None or abs(info.fps - FPS) > 1e-3
    return media.iter_frames(path, fps=FPS if resample else None)


def _score_reference(layout: Any, boxes: np.ndarray, gen: Any, meter: Any, batch_size: int, ref: Path, shift: int,
                     silence: bool, start_frame: int, models_dir: Any,
                     progress: bool) -> tuple[np.ndarray, _Series, np.ndarray, dict[str, Any]]:
    """Another recording's speech rendered as `synctalk infer` renders it, against its real mouth."""
    from tqdm import tqdm

    from .. import lipcheck
    from ..audio.features import frames_for_duration
    from ..render import load_speech, pingpong_indices, render_chunks, speech_features, voice_activity
    from ..render.pipeline import own_features, silence_plan_inputs, speech_plan

    audio = load_speech(ref)
    count = frames_for_duration(audio.size / SAMPLE_RATE, FPS)
    if count < MIN_FRAMES:
        raise SyncTalkError(f"reference video {ref} is too short to score ({count} frames)")
    n_src = len(boxes)
    feats_t = speech_features(gen.asr, audio, count, gen.device, models_dir, progress, layout)
    sources = pingpong_indices(count, n_src, start_frame)
    rows = np.arange(count)
    active = voice_activity(audio, count)
    rows_shift = _shifted_rows(rows, shift, count)
    candidates = silence_plan_inputs(layout, gen, n_src) if silence else None
    plan = speech_plan(layout, gen, audio, sources, rows, silence, candidates)
    # the control hears the speech `shift` frames later all through: its features and its pauses
    moved = np.roll(fit_length(audio, count), int(shift) * (SAMPLE_RATE // FPS))
    plan_shift = speech_plan(layout, gen, moved, sources, rows_shift, silence, candidates)
    rest_feats = own_features(layout, gen, n_src) if (plan.rest.any() or plan_shift.rest.any()) else None
    s = _Series()
    real_iter = _reference_frames(ref)
    used = 0
    bar = tqdm(total=count, desc=f"eval {layout.name} on {ref.name}", unit="frame", disable=not progress)
    for true, ctrl in zip(render_chunks(gen, layout, boxes, plan, feats_t, rest_feats, batch_size),
                          render_chunks(gen, layout, boxes, plan_shift, feats_t, rest_feats, batch_size)):
        real_frames = [f for _k, f in zip(true.index, real_iter)]
        b = len(real_frames)
        if b == 0:
            break
        pts_real, fb_real = meter.measure(real_frames, track="reference")
        pts_gen, fb_gen = meter.measure(true.frames[:b], track="avatar")
        s.real.append(pts_real)
        s.gen.append(pts_gen)
        s.shift.append(meter.measure(ctrl.frames[:b], fb_gen)[0])
        for g, r, bg, br in zip(true.frames[:b], real_frames, fb_gen, fb_real):
            s.sharp_gen.append(laplacian_variance(mouth_patch(g, bg)))
            s.sharp_real.append(laplacian_variance(mouth_patch(r, br)))
        used += b
        bar.update(b)
        if b < len(true.index):
            break
    bar.close()
    if used < MIN_FRAMES:
        raise SyncTalkError(f"reference video {ref} decoded to only {used} frames")
    real_pts = np.concatenate(s.real)
    lips = lipcheck.check_signals(meter.openings(real_pts), audio[:used * (SAMPLE_RATE // FPS)], FPS)
    info = {"mode": "reference", "reference": {"video": str(ref), "frames": int(used), "audio_frames": int(count)},
            "reference_av_offset": lips.get("av_offset")}
    return rows[:used], s, active[:used], info
