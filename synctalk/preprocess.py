"""Preprocessing: one video → dataset/<name>/ (frames, landmarks, crop boxes, audio, features, crop cache).

Each part is recorded in the state file when it finishes, so a rerun skips it; the parts that
write many files (frames, landmarks) skip the files already written, so a killed run resumes
where it stopped. Every file is written atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import media
from .audio.registry import ASR_MODELS, FPS, SAMPLE_RATE, get_spec
from .errors import SyncTalkError
from .faces.lms import load_all_landmarks, read_landmarks, write_landmarks  # noqa: F401  (public here too)
from .faces.factory import DETECTOR_KINDS
from .fileio import atomic_path, remove_stale_temps, save_npy_atomic, write_bytes_atomic, write_json_atomic
from .layout import DatasetLayout, dataset_layout
from .locking import hold_lock
from .state import PREPROCESSING, TrainingState

LANDMARKERS = ("pfld", "dlib")
MAX_NO_FACE_FRACTION = 0.5
MIN_SECONDS = 2.0  # shorter clips hold too few mouth shapes to learn from, and no held-out tail
JPEG_QUALITY = 95


# Measured on sun.mp4 (SCRFD + dlib, 160 frames): against detecting every frame, every 4th frame moves
# the landmarks by 0.11 px on average (99th percentile 1.4 px, dlib rounds to whole pixels) and
# every 8th by 0.19 px, while the step runs 2.7x / 4.7x faster on a 2-core CPU.
DETECT_EVERY = 4


@dataclass
class PreprocessOptions:
    """Everything one preprocessing run needs."""

    video_path: Path
    name: str
    dataset_dir: Path = Path("dataset")
    asr_model: str = "mel"  # the defaults need no download
    landmarker: str = "dlib"
    detector: str = "auto"  # auto: SCRFD when its file is in a models folder, else dlib's HOG detector
    fps: int = FPS
    models_dir: Path | None = None
    whisper_model: str | None = None  # --asr_model whisper: a Hugging Face id or a model folder
    device: str = "auto"
    skip_frames: bool = False
    skip_landmarks: bool = False
    skip_audio: bool = False
    batch_size: int = 32
    detect_workers: int = 0  # 0: one per two CPU cores, at most 8
    detect_every: int = DETECT_EVERY  # run the face detector on every Nth frame, interpolate the boxes between
    crop_cache: bool = True
    progress: bool = True


@dataclass
class PreprocessResult:
    """What a run did, for the batch table and the tests."""

    name: str
    layout: DatasetLayout
    frame_count: int = 0
    no_face_frames: int = 0
    done_now: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    lip_activity: dict = field(default_factory=dict)  # synctalk.lipcheck: can lip sync be learnt from it?


def _check_options(opts: PreprocessOptions) -> DatasetLayout:
    layout = dataset_layout(opts.dataset_dir, opts.name)
    get_spec(opts.asr_model)  # unknown asr → SyncTalkError
    if opts.landmarker not in LANDMARKERS:
        raise SyncTalkError(f"unknown landmarker {opts.landmarker!r}: choose one of {', '.join(LANDMARKERS)}")
    if opts.fps <= 0:
        raise SyncTalkError(f"--fps must be positive, got {opts.fps}")
    if opts.detect_every < 1:
        raise SyncTalkError(f"--detect_every must be at least 1, got {opts.detect_every}")
    if opts.batch_size < 1:
        raise SyncTalkError(f"--batch_size must be at least 1, got {opts.batch_size}")
    if opts.detect_workers < 0:
        raise SyncTalkError(f"--detect_workers must be 0 (automatic) or more, got {opts.detect_workers}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(opts.device)):
        raise SyncTalkError(f"--device must be auto, cpu, cuda or cuda:N, got {opts.device!r}")
    dataset_dir = Path(opts.dataset_dir)
    for folder in (dataset_dir, *dataset_dir.absolute().parents):  # the nearest that exists must be a folder
        if folder.exists():
            if folder.is_dir():
                break
            if folder == dataset_dir:
                raise SyncTalkError(f"--dataset_dir {dataset_dir} is a file, not a folder")
            raise SyncTalkError(f"--dataset_dir {dataset_dir}: {folder} is a file, not a folder")
    if layout.root.exists() and not layout.root.is_dir():
        raise SyncTalkError(f"{layout.root} is a file, not a folder: move it away or choose another --name")
    return layout


def _check_weights(opts: PreprocessOptions, need_faces: bool, need_features: bool) -> None:
    """Fail before any work when a weights file the run needs is missing."""
    from .faces.factory import choose_detector, describe_landmarker
    from .weights import resolve_model_file

    if need_faces:
        print(choose_detector(opts.detector, opts.models_dir).describe(), flush=True)
        print(describe_landmarker(opts.landmarker, opts.models_dir), flush=True)
        if opts.landmarker == "pfld":
            resolve_model_file("pfld", opts.models_dir)
            resolve_model_file("pfld_mean_face", opts.models_dir)
    if need_features:
        from .audio.features import check_weights

        check_weights(opts.asr_model, opts.models_dir, whisper_model=opts.whisper_model)
        print(f"audio features: {opts.asr_model}", flush=True)


def _probe_source(opts: PreprocessOptions) -> media.MediaInfo:
    """Check the video before anything is written: it has both tracks and is long enough to learn from."""
    src = Path(opts.video_path)
    info = media.probe(src)
    if not info.has_video:
        raise SyncTalkError(f"{src} has no video track")
    if not info.has_audio:
        raise SyncTalkError(f"{src} has no audio track: the avatar learns from the person's speech")
    frames = info.frame_count_at(opts.fps)
    if frames < MIN_SECONDS * opts.fps:
        raise SyncTalkError(f"{src} is {info.duration:.2f} s long ({frames} frames at {opts.fps} fps): too short to "
                            f"learn from; record at least {MIN_SECONDS:g} s (a few minutes of speech is best)")
    return info


def _source_video(opts: PreprocessOptions, info: media.MediaInfo, layout: DatasetLayout, state: TrainingState,
                  result: PreprocessResult) -> Path:
    """Keep the video as dataset/<name>/<name>.mp4 and return the 25 fps file frames come from."""
    src = Path(opts.video_path)
    layout.root.mkdir(parents=True, exist_ok=True)
    if src.resolve() != layout.video.resolve():
        if not layout.video.exists() or layout.video.stat().st_size != src.stat().st_size:
            with atomic_path(layout.video, suffix=".mp4") as tmp:
                shutil.copyfile(src, tmp)
            result.done_now.append("copy video")
    needs_conversion = info.variable_fps or info.fps is None or abs(info.fps - opts.fps) > 1e-3
    source = layout.video
    if needs_conversion:
        source = layout.fps_converted_video
        if not source.exists():
            media.convert_to_fps(layout.video, source, opts.fps)
            result.done_now.append(f"convert {info.fps} fps → {opts.fps} fps")
    state.set_top(fps=opts.fps, source_fps=info.fps, source_variable_fps=info.variable_fps,
                  duration=info.duration, source_video=str(src.absolute()))
    return source


def _extract_frames(opts: PreprocessOptions, layout: DatasetLayout, source: Path, state: TrainingState,
                    result: PreprocessResult) -> int:
    import cv2
    from tqdm import tqdm

    sec = state.section("preprocessing")
    if sec.get("frames_done") and sec.get("frame_count") and layout.frame_path(sec["frame_count"] - 1).exists():
        result.skipped.append("frames")
        return int(sec["frame_count"])
    layout.frames_dir.mkdir(parents=True, exist_ok=True)
    expected = media.probe(source).frame_count_at(opts.fps)
    written = 0
    count = 0
    bar = tqdm(total=expected, desc="frames", unit="frame", disable=not opts.progress)
    for i, frame in enumerate(media.iter_frames(source)):
        path = layout.frame_path(i)
        if not path.exists():
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise SyncTalkError(f"could not encode frame {i} of {source}")
            write_bytes_atomic(path, buf.tobytes())
            written += 1
        count = i + 1
        bar.update(1)
    bar.close()
    if count == 0:
        raise SyncTalkError(f"{opts.video_path} decoded to no frames")
    for stale in sorted(layout.frames_dir.glob("[0-9]*.jpg")):  # frame files only, never a temporary one
        if stale.stem.isdigit() and int(stale.stem) >= count:
            stale.unlink()
    state.update("preprocessing", frames_done=True, frame_count=count, completed=False)
    result.done_now.append(f"frames ({written} written)")
    return count


def _audio_kept(prev: dict, layout: DatasetLayout) -> bool:
    """Whether the aud.wav there is kept (not extracted again), and with it the features made from it."""
    return bool(prev.get("audio_done")) and layout.audio_wav.exists()


def _extract_audio(opts: PreprocessOptions, layout: DatasetLayout, state: TrainingState, result: PreprocessResult) -> None:
    if _audio_kept(state.section("preprocessing"), layout):
        result.skipped.append("audio")
        return
    media.extract_audio_wav(layout.video, layout.audio_wav, SAMPLE_RATE)
    # features made from an earlier aud.wav no longer match it: each is made again when asked for
    state.update("preprocessing", audio_done=True, sample_rate=SAMPLE_RATE, feature_files={}, asr_models=[])
    result.done_now.append("audio")


def default_detect_workers() -> int:
    """Parallel face-detector sessions: one per two usable CPU cores, at most 8."""
    from .device import usable_cpus

    return max(1, min(8, usable_cpus() // 2))


def _missing_file(layout: DatasetLayout) -> Path:
    return layout.landmarks_dir / "no_face_frames.json"


def _read_no_face(path: Path) -> list[int]:
    """The frames found without a face so far (none when the file does not exist)."""
    if not path.exists():
        return []
    try:
        frames = json.loads(path.read_text(encoding="utf-8"))["frames"]
        if isinstance(frames, list) and all(isinstance(i, int) for i in frames):
            return frames
    except (ValueError, KeyError, TypeError):
        pass
    raise SyncTalkError(f"{path} is damaged (expected {{\"frames\": [frame numbers]}}): delete it and the "
                        f"landmarks folder beside it, then rerun preprocessing")


def _npy_rows(path: Path) -> int:
    """Rows of a .npy file, or -1 when it is missing or unreadable (then it is made again)."""
    try:
        return int(np.load(path, mmap_mode="r").shape[0])
    except (ValueError, OSError, IndexError):
        return -1


def _extract_landmarks(opts: PreprocessOptions, layout: DatasetLayout, count: int, state: TrainingState,
                       result: PreprocessResult) -> None:
    import cv2
    from tqdm import tqdm

    from .device import resolve_device
    from .faces.factory import create_detector
    from .faces.landmarks import create_landmarker
    from .faces.pipeline import FaceLandmarkPipeline

    sec = state.section("preprocessing")
    if sec.get("landmarks_done") and sec.get("landmarker") == opts.landmarker and layout.landmark_path(count - 1).exists():
        result.skipped.append("landmarks")
        result.no_face_frames = int(sec.get("no_face_frames", 0))
        return
    if sec.get("landmarker") not in (None, opts.landmarker):
        # another topology: the old files are of no use
        shutil.rmtree(layout.landmarks_dir, ignore_errors=True)
        state.update("preprocessing", landmarks_done=False, crop_boxes_done=False, crop_cache_done=False)
    layout.landmarks_dir.mkdir(parents=True, exist_ok=True)
    state.update("preprocessing", landmarker=opts.landmarker)
    state.set_top(landmarker=opts.landmarker)

    missing_path = _missing_file(layout)
    no_face = _read_no_face(missing_path)
    todo = [i for i in range(count) if not layout.landmark_path(i).exists()]
    device = resolve_device(opts.device)
    if todo:
        detector = create_detector(opts.detector, opts.models_dir, device=str(device))
        state.update("preprocessing", detector=detector.kind)  # which one found the faces, for the record
        landmarker = create_landmarker(opts.landmarker, opts.models_dir, device=str(device))
        workers = opts.detect_workers or default_detect_workers()
        pipeline = FaceLandmarkPipeline(detector, landmarker, workers=workers, detect_every=opts.detect_every)
        reader = ThreadPoolExecutor(max(2, workers))

        def read_batch(idx: list[int]) -> list[Any]:
            return list(reader.map(lambda i: cv2.imread(str(layout.frame_path(i))), idx))

        batches = [todo[s:s + opts.batch_size] for s in range(0, len(todo), opts.batch_size)]
        # the next batch is decoded while the current one runs through the networks
        next_frames = reader.submit(read_batch, batches[0])
        prev = read_landmarks(layout.landmark_path(todo[0] - 1)) if todo[0] > 0 else None
        pending: list[int] = []  # leading frames with no face wait for the first face found
        bar = tqdm(total=count, initial=count - len(todo), desc=f"landmarks ({opts.landmarker})", unit="frame",
                   disable=not opts.progress)
        for b, idx in enumerate(batches):
            frames = next_frames.result()
            if b + 1 < len(batches):
                next_frames = reader.submit(read_batch, batches[b + 1])
            for i, f in zip(idx, frames):
                if f is None:
                    # the frames step writes only missing files: remove the bad one and let the rerun redo it
                    layout.frame_path(i).unlink(missing_ok=True)
                    state.update(PREPROCESSING, frames_done=False)
                    raise SyncTalkError(f"frame {layout.frame_path(i)} was unreadable and is removed; rerun the same "
                                        f"command to extract it again")
            lms, found = pipeline.process(frames)
            batch_missing = []
            for i, pts, ok in zip(idx, lms, found):
                if ok:
                    prev = pts
                    for j in pending:
                        write_landmarks(layout.landmark_path(j), pts)
                    pending = []
                    write_landmarks(layout.landmark_path(i), pts)
                else:
                    batch_missing.append(i)
                    if prev is None:
                        pending.append(i)
                    else:
                        write_landmarks(layout.landmark_path(i), prev)
            if batch_missing:
                no_face = sorted(set(no_face) | set(batch_missing))
                write_json_atomic(missing_path, {"frames": no_face})
            bar.update(len(idx))
        bar.close()
        reader.shutdown()
        if pending:
            raise SyncTalkError(f"no face found in any frame of {opts.video_path} ({count} frames)")
    if len(no_face) > MAX_NO_FACE_FRACTION * count:
        raise SyncTalkError(
            f"no face found in {len(no_face)} of {count} frames of {opts.video_path}: "
            "the video must show one face, looking at the camera, in most frames"
        )
    if no_face:
        print(f"note: {len(no_face)} of {count} frames had no face; they reuse the previous frame's landmarks")
    result.no_face_frames = len(no_face)
    n_points = read_landmarks(layout.landmark_path(0)).shape[0]
    state.update("preprocessing", landmarks_done=True, landmark_count=count, no_face_frames=len(no_face),
                 landmark_points=n_points, crop_boxes_done=False, crop_cache_done=False)
    result.done_now.append(f"landmarks ({len(todo)} frames, {len(no_face)} without a face)")


def _crop_boxes(opts: PreprocessOptions, layout: DatasetLayout, count: int, state: TrainingState,
                result: PreprocessResult) -> None:
    import cv2

    from .faces.crop import crop_boxes_from_landmarks, smooth_boxes
    from .faces.topology import topology_for_points

    sec = state.section("preprocessing")
    if sec.get("crop_boxes_done") and _npy_rows(layout.crop_boxes) == count:
        result.skipped.append("crop boxes")
        return
    lms = load_all_landmarks(layout, count)
    topology = topology_for_points(lms.shape[1])
    h, w = cv2.imread(str(layout.frame_path(0))).shape[:2]
    raw = crop_boxes_from_landmarks(lms, topology, (h, w))
    smooth = smooth_boxes(raw, frame_hw=(h, w))
    save_npy_atomic(layout.raw_crop_boxes, raw.astype(np.int32))
    save_npy_atomic(layout.crop_boxes, smooth.astype(np.int32))
    state.update("preprocessing", crop_boxes_done=True, topology=topology.name, frame_size=[w, h],
                 crop_cache_done=False)
    result.done_now.append("crop boxes")


def _whisper_source(opts: PreprocessOptions) -> str:
    """The whisper model that made the features (absolute folder or hub id), for infer to use again."""
    from .audio.whisper import locate

    return locate(opts.whisper_model, opts.models_dir).where


def _features(opts: PreprocessOptions, layout: DatasetLayout, count: int, state: TrainingState,
              result: PreprocessResult) -> None:
    from .audio.features import compute_features
    from .device import resolve_device

    spec = get_spec(opts.asr_model)
    sec = state.section("preprocessing")
    made = dict(sec.get("feature_files") or {})
    path = layout.features(opts.asr_model)
    same_model = opts.asr_model != "whisper" or sec.get("whisper_model") == _whisper_source(opts)
    if opts.asr_model in made and path.exists() and same_model:  # another whisper model: made again
        if _npy_rows(path) == count:
            result.skipped.append(f"features ({opts.asr_model})")
            return
    audio = media.load_audio(layout.audio_wav, SAMPLE_RATE)
    feats = compute_features(opts.asr_model, audio, count, models_dir=opts.models_dir,
                             device=str(resolve_device(opts.device)), progress=opts.progress,
                             whisper_model=opts.whisper_model)
    spec = spec.for_rows(feats.shape[1:], f"{opts.asr_model} features")  # whisper: its model's width
    if feats.shape != (count, *spec.frame_shape):
        raise SyncTalkError(f"{opts.asr_model} features came out {feats.shape}, expected {(count, *spec.frame_shape)}")
    save_npy_atomic(path, feats.astype(np.float32))
    made[opts.asr_model] = path.name
    state.update("preprocessing", feature_files=made, asr_models=sorted(made),
                 **({"whisper_model": _whisper_source(opts)} if opts.asr_model == "whisper" else {}))
    result.done_now.append(f"features ({opts.asr_model})")


def _crop_cache(opts: PreprocessOptions, layout: DatasetLayout, state: TrainingState, result: PreprocessResult) -> None:
    from .data import build_crop_cache

    if state.section("preprocessing").get("crop_cache_done") and layout.crop_cache.exists():
        result.skipped.append("crop cache")
        return
    build_crop_cache(layout, progress=opts.progress)
    state.update("preprocessing", crop_cache_done=True, crop_cache=layout.crop_cache.name)
    result.done_now.append("crop cache")


def _lip_activity(opts: PreprocessOptions, layout: DatasetLayout, count: int, state: TrainingState,
                  result: PreprocessResult) -> None:
    """Measure (once per landmarks/audio) whether the lips move with the speech; warn when they do not."""
    from . import lipcheck

    sec = state.section("preprocessing")
    if not (sec.get("landmarks_done") and sec.get("audio_done") and layout.audio_wav.exists()):
        return
    fresh = {"landmarks", "audio"} & set(result.done_now)
    if sec.get("lip_activity") and "av_offset" in sec and not fresh:
        result.lip_activity = dict(sec["lip_activity"])
        return
    result.lip_activity = lipcheck.check_dataset(layout, count, opts.fps)
    # the video's own A/V offset (+N: lips N frames after the sound), read by training's --av_offset auto
    av_offset = result.lip_activity.pop("av_offset", None)
    state.update("preprocessing", lip_activity=result.lip_activity, av_offset=av_offset)
    text = lipcheck.warning_text(opts.name, result.lip_activity, opts.video_path)
    if text:
        print(text, flush=True)


def sweep_temporaries(layout: DatasetLayout) -> int:
    """Remove what killed writers left in the dataset (root: video copy, crop cache, features; frames;
    landmarks); return how many files. Run under the preprocessing lock."""
    removed = sum(len(remove_stale_temps(d)) for d in (layout.root, layout.frames_dir, layout.landmarks_dir))
    if removed:
        print(f"note: removed {removed} temporary file{'s' * (removed != 1)} an interrupted run left in {layout.root}",
              flush=True)
    return removed


def preprocess_video(opts: PreprocessOptions) -> PreprocessResult:
    """Run (or finish) preprocessing of one video; return what was done and skipped.

    One run per dataset name at a time: a second one meets the lock and stops with a message
    naming the first.
    """
    t0 = time.time()
    layout = _check_options(opts)
    video = Path(opts.video_path)
    if not video.is_file():
        raise SyncTalkError(f"video not found: {video}")
    state = TrainingState(layout.state_file)
    prev = state.section("preprocessing")
    need_faces = not opts.skip_landmarks and not (prev.get("landmarks_done") and prev.get("landmarker") == opts.landmarker)
    # a new aud.wav drops every feature made from the old one, so its weights are checked too
    made = (prev.get("feature_files") or {}) if _audio_kept(prev, layout) else {}
    need_features = not opts.skip_audio and opts.asr_model not in made
    _check_weights(opts, need_faces, need_features)
    info = _probe_source(opts)

    created = not layout.root.exists()
    try:
        with hold_lock(layout.preprocess_lock, f"preprocessing of {opts.name!r}"):
            sweep_temporaries(layout)
            return _preprocess_locked(opts, info, layout, state, t0)
    except BaseException:
        # a run that failed before writing anything leaves no empty dataset folder behind
        if created and layout.root.is_dir() and not any(layout.root.iterdir()):
            with contextlib.suppress(OSError):
                layout.root.rmdir()
        raise


def _preprocess_locked(opts: PreprocessOptions, info: media.MediaInfo, layout: DatasetLayout, state: TrainingState,
                       t0: float) -> PreprocessResult:
    prev = state.section("preprocessing")  # read again: the run before ours may have finished meanwhile
    result = PreprocessResult(name=opts.name, layout=layout)
    source = _source_video(opts, info, layout, state, result)
    if opts.skip_frames:
        count = int(prev.get("frame_count") or len(list(layout.frames_dir.glob("[0-9]*.jpg"))))
        if count == 0:
            raise SyncTalkError(f"--skip_frames given but {layout.frames_dir} holds no frames")
        result.skipped.append("frames (--skip_frames)")
        if not prev.get("frames_done"):
            state.update("preprocessing", frames_done=True, frame_count=count)
    else:
        count = _extract_frames(opts, layout, source, state, result)
    result.frame_count = count
    if opts.skip_audio:
        result.skipped.append("audio (--skip_audio)")
    else:
        _extract_audio(opts, layout, state, result)
    if opts.skip_landmarks:
        result.skipped.append("landmarks (--skip_landmarks)")
    else:
        _extract_landmarks(opts, layout, count, state, result)
        _crop_boxes(opts, layout, count, state, result)
    if not opts.skip_audio:
        _features(opts, layout, count, state, result)
    if opts.crop_cache and layout.crop_boxes.exists():
        _crop_cache(opts, layout, state, result)

    _lip_activity(opts, layout, count, state, result)

    sec = state.section("preprocessing")
    done = bool(sec.get("frames_done") and sec.get("audio_done") and sec.get("landmarks_done")
                and sec.get("crop_boxes_done") and sec.get("feature_files"))
    state.update("preprocessing", completed=done, frame_count=count,
                 landmark_count=int(sec.get("landmark_count", 0)))
    state.set_top(landmarker=sec.get("landmarker", opts.landmarker), asr_model=opts.asr_model)
    result.seconds = time.time() - t0
    return result


# ---------------------------------------------------------------- command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `synctalk preprocess` / scripts/preprocess_data.py (the seed's names)."""
    p.add_argument("--video_path", required=True, help="the person's talking video")
    p.add_argument("--name", required=True, help="person name: dataset/<name>/")
    p.add_argument("--asr_model", "--asr", dest="asr_model", default="mel", choices=ASR_MODELS,
                   help="audio features to compute (default mel, which needs no weights; ave, hubert and "
                        "wenet need `synctalk models download NAME` once)")
    p.add_argument("--whisper_model", default=None,
                   help="--asr_model whisper: Hugging Face id or model folder (transformers or CTranslate2/"
                        "faster-whisper); default <models dir>/whisper/, else openai/whisper-tiny")
    p.add_argument("--dataset_dir", default="dataset", type=Path)
    p.add_argument("--fps", default=FPS, type=int, help="target frame rate (default 25)")
    p.add_argument("--landmarker", default="dlib", choices=LANDMARKERS,
                   help="dlib (68 points, installed with the package; default) or pfld (110, downloaded)")
    p.add_argument("--detector", default="auto", choices=DETECTOR_KINDS,
                   help="face detector: scrfd (downloaded), dlib (installed), auto (default: scrfd when its "
                        "file is found, else dlib)")
    p.add_argument("--models_dir", type=Path, default=None, help="where model weights are looked for first")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 …")
    p.add_argument("--batch_size", type=int, default=32, help="frames per landmark batch")
    p.add_argument("--detect_workers", type=int, default=0,
                   help="face-detector sessions run in parallel (default: one per two CPU cores, at most 8)")
    p.add_argument("--detect_every", type=int, default=DETECT_EVERY,
                   help=f"run the face detector on every Nth frame and interpolate the boxes between "
                        f"(default {DETECT_EVERY}; 1: every frame)")
    p.add_argument("--skip_frames", action="store_true", help="do not extract frames (they are there)")
    p.add_argument("--skip_landmarks", action="store_true", help="do not detect landmarks")
    p.add_argument("--skip_audio", action="store_true", help="do not extract audio or features")
    p.add_argument("--no_crop_cache", action="store_true", help="do not build the training crop cache now")


def options_from_args(args: argparse.Namespace) -> PreprocessOptions:
    """PreprocessOptions from parsed flags."""
    return PreprocessOptions(video_path=Path(args.video_path), name=args.name, dataset_dir=Path(args.dataset_dir),
                             asr_model=args.asr_model, landmarker=args.landmarker, detector=args.detector, fps=args.fps,
                             models_dir=args.models_dir, whisper_model=args.whisper_model, device=args.device,
                             skip_frames=args.skip_frames,
                             skip_landmarks=args.skip_landmarks, skip_audio=args.skip_audio,
                             batch_size=args.batch_size, detect_workers=args.detect_workers,
                             detect_every=args.detect_every,
                             crop_cache=not args.no_crop_cache)


def run(args: argparse.Namespace) -> int:
    """Entry point of `synctalk preprocess`."""
    result = preprocess_video(options_from_args(args))
    done = ", ".join(result.done_now) or "nothing (all done before)"
    print(f"{result.name}: {result.frame_count} frames; did {done}; {result.seconds:.1f} s → {result.layout.root}")
    return 0
