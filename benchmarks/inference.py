"""Benchmark stages of inference: end-to-end render, face landmarks, UNet forward."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from synctalk.constants import SAMPLE_RATE

from . import common
from .common import Context, Skip

# ---------------------------------------------------------------- stage: render


def _unet_checkpoint(ctx: Context) -> tuple[Path, str]:
    """A UNet checkpoint of the person in the training module's format (short-trained or random weights)."""
    import torch

    from synctalk.data import DEFAULT_MASK
    from synctalk.layout import checkpoint_layout
    from synctalk.training.checkpoint import save_checkpoint
    from unet_328 import build_unet

    if ctx.unet_state is not None:
        state, note = ctx.unet_state, ctx.unet_state_note
    else:
        torch.manual_seed(ctx.args.seed)
        state, note = build_unet(ctx.asr, ctx.preset.width).state_dict(), "UNet randomly initialised"
    ck = checkpoint_layout(ctx.workdir / "checkpoint", ctx.layout.name)
    path = ck.best(ck.unet_dir)
    config = {"asr": ctx.asr, "width": ctx.preset.width, "mask": list(DEFAULT_MASK),
              "val_fraction": ctx.args.val_fraction, "batch_size": ctx.preset.unet_batch_fast}
    save_checkpoint(path, {"kind": "unet", "model": state, "optimizer": {}, "epoch": 0, "asr": ctx.asr,
                           "config": config, "metrics": {}, "best": {}})
    return path, note


def bench_render(ctx: Context) -> tuple[dict, list[str]]:
    """End-to-end render fps: an audio file in, a finished MP4 out."""
    from synctalk import media
    from synctalk.render import render

    args, dev = ctx.args, ctx.device
    if common.ffmpeg_path() is None:
        raise Skip("no ffmpeg (the imageio-ffmpeg package): rendering reads audio and writes MP4 through it")
    audio_path = Path(args.audio).expanduser()
    notes = []
    if not audio_path.is_file():
        if not ctx.layout.audio_wav.is_file():
            raise Skip(f"audio file not found: {audio_path} (pass --audio PATH)")
        notes.append(f"{audio_path} not found: rendering the person's own speech ({ctx.layout.audio_wav}) instead")
        audio_path = ctx.layout.audio_wav
    seconds = args.render_seconds or ctx.preset.render_seconds
    ckpt, note = _unet_checkpoint(ctx)
    notes.append(note + f" → {ckpt}")
    speech = media.load_audio(audio_path, SAMPLE_RATE)
    wav = common.write_wav(ctx.workdir / "audio" / f"speech_{seconds:g}s.wav", common.loop_to(speech, seconds))
    notes.append(f"{audio_path.name} ({speech.size / SAMPLE_RATE:.1f} s) looped/cut to {seconds:g} s")
    bf16 = dev.type == "cuda" and not args.render_fp32
    common.set_backends(dev, fast=False)  # as `synctalk infer` runs: PyTorch's defaults
    kwargs = dict(dataset_dir=ctx.layout.root.parent, checkpoint=ckpt, batch_size=args.render_batch, device=dev,
                  models_dir=ctx.models_dir, asr=ctx.asr, amp="bf16" if bf16 else "none",
                  progress=args.progress)
    if dev.type == "cuda":  # CUDA context, cuDNN plans and ffmpeg start-up are not what a long render costs
        warm = common.write_wav(ctx.workdir / "audio" / "warmup_2s.wav", common.loop_to(speech, 2.0))
        render(ctx.layout.name, warm, ctx.workdir / "render" / "warmup.mp4", **kwargs)
    common.free(dev)
    common.reset_peak(dev)
    out = ctx.workdir / "render" / f"render_{seconds:g}s.mp4"
    common.sync(dev)
    t0 = time.perf_counter()
    res = render(ctx.layout.name, wav, out, **kwargs)
    common.sync(dev)
    dt = time.perf_counter() - t0
    if not out.is_file() or out.stat().st_size == 0:
        raise RuntimeError(f"render wrote no video to {out}")
    return {"end_to_end": {"fps": round(res.frames / dt, 3), "frames": res.frames, "seconds": round(dt, 3),
                           "audio_seconds": seconds, "realtime_factor": round(res.frames / dt / 25.0, 3),
                           "batch": args.render_batch, "bf16": bf16, "output_mib": round(out.stat().st_size / 2**20, 2),
                           "peak_gpu_mib": common.peak_mib(dev)}}, notes


# ---------------------------------------------------------------- stage: landmarks


def _random_pfld(path: Path, seed: int) -> Path:
    """A randomly initialised PFLD_GhostOne saved in the original checkpoint format ({"pfld_backbone": ...})."""
    import torch

    from pfld.model import build_pfld
    from synctalk.fileio import torch_save_atomic

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch_save_atomic({"pfld_backbone": build_pfld().state_dict(), "epoch": 0}, path)
    return path


def _placeholder_mean_face(path: Path, points: int = 110) -> Path:
    """A mean face file in the real format (x y pairs, crop-normalised): points on an ellipse."""
    from synctalk.fileio import write_text_atomic

    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    xy = np.stack([0.5 + 0.3 * np.cos(t), 0.55 + 0.35 * np.sin(t)], axis=1).reshape(-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, " ".join(f"{v:.6f}" for v in xy) + "\n")
    return path


def _time_pipeline(pipeline: Any, frames: list, batch: int, device: Any) -> dict:
    pipeline.process(frames[: min(2, len(frames))])  # warm-up: session and kernel start-up
    pipeline.reset()
    found = 0
    common.sync(device)
    t0 = time.perf_counter()
    for s in range(0, len(frames), batch):
        _lms, ok = pipeline.process(frames[s:s + batch])
        found += int(ok.sum())
    common.sync(device)
    dt = time.perf_counter() - t0
    return {"fps": round(len(frames) / dt, 3), "frames": len(frames), "faces_found": found, "seconds": round(dt, 3)}


def bench_landmarks(ctx: Context) -> tuple[dict, list[str]]:
    """Face detection + landmarks frames/s: SCRFD + PFLD and SCRFD + dlib (decoded frames in memory)."""
    import cv2

    from synctalk.errors import SyncTalkError
    from synctalk.faces.detector import FaceDetector
    from synctalk.faces.landmarks import create_landmarker
    from synctalk.faces.pipeline import FaceLandmarkPipeline
    from synctalk.preprocess import DETECT_EVERY, default_detect_workers
    from synctalk.weights import find_model_file

    args, dev = ctx.args, ctx.device
    notes: list[str] = []
    scrfd = find_model_file("scrfd", ctx.models_dir)
    if scrfd is None:
        raise Skip("scrfd_2.5g_kps.onnx not found (pass --models_dir): the face detector is needed for landmarks")
    n_avail = len(ctx.crops) if ctx.crops is not None else len(np.load(ctx.layout.crop_boxes, mmap_mode="r"))
    n = min(args.landmark_frames or ctx.preset.landmark_frames, n_avail)
    frames = []
    for i in range(n):
        img = cv2.imread(str(ctx.layout.frame_path(i)))
        if img is None:
            raise Skip(f"frame {ctx.layout.frame_path(i)} is missing: the landmark stage reads the dataset's frames")
        frames.append(img)
    detector = FaceDetector(scrfd, device=str(dev))
    workers = default_detect_workers()  # the same parallel detector sessions preprocessing uses
    providers = list(getattr(detector, "providers", []))
    notes.append(f"SCRFD on onnxruntime providers {providers}; {n} frames of {frames[0].shape[1]}x{frames[0].shape[0]} "
                 f"decoded beforehand (JPEG decoding not timed)")
    results: dict[str, dict] = {}

    pfld_ckpt = find_model_file("pfld", ctx.models_dir)
    mean_face = find_model_file("pfld_mean_face", ctx.models_dir)
    pfld_weights = "real"
    if pfld_ckpt is None:
        pfld_ckpt = _random_pfld(ctx.workdir / "models" / "checkpoint_epoch_335.pth.tar", args.seed)
        pfld_weights = "random"
        notes.append(f"PFLD checkpoint not found: randomly initialised PFLD_GhostOne saved in the original format "
                     f"at {pfld_ckpt} (same speed, meaningless points)")
    if mean_face is None:
        mean_face = _placeholder_mean_face(ctx.workdir / "models" / "pfld_mean_face.txt")
        notes.append("PFLD mean face not found: a placeholder in the same format")
    common.free(dev)
    common.reset_peak(dev)
    pfld = create_landmarker("pfld", ctx.models_dir, device=str(dev), checkpoint_path=pfld_ckpt,
                             mean_face_path=mean_face)
    for every, key in ((DETECT_EVERY, "scrfd+pfld"), (1, "scrfd+pfld, detect every frame")):
        row = _time_pipeline(FaceLandmarkPipeline(detector, pfld, workers=workers, detect_every=every), frames,
                             args.landmark_batch, dev)
        row.update({"landmark_device": str(getattr(pfld, "device", dev)), "weights": pfld_weights,
                    "detect_every": every, "peak_gpu_mib": common.peak_mib(dev)})
        results[key] = row
    notes.append(f"preprocessing detects faces on every {DETECT_EVERY}th frame and interpolates the boxes "
                 f"(--detect_every); the second PFLD row detects on every frame")
    del pfld

    try:
        dlib_lm = create_landmarker("dlib")
    except (SyncTalkError, ImportError) as exc:
        notes.append(f"SCRFD + dlib skipped: {exc}")
    else:
        row = _time_pipeline(FaceLandmarkPipeline(detector, dlib_lm, workers=workers, detect_every=DETECT_EVERY),
                             frames, args.landmark_batch, dev)
        row.update({"landmark_device": "cpu", "weights": "real", "detect_every": DETECT_EVERY})
        results["scrfd+dlib"] = row
    return results, notes


# ---------------------------------------------------------------- stage: UNet forward


def bench_forward(ctx: Context) -> tuple[dict, list[str]]:
    """UNet forward-only frames/s at two batch sizes: plain fp32 and the render's form."""
    import contextlib

    import torch

    from synctalk.audio.registry import get_spec
    from unet_328 import build_unet

    args, p, dev = ctx.args, ctx.preset, ctx.device
    spec = get_spec(ctx.asr)
    iters = args.forward_iters or p.forward_iters
    repeats = args.repeats or p.repeats
    torch.manual_seed(args.seed)
    init = build_unet(ctx.asr, p.width).state_dict()
    bf16 = dev.type == "cuda"
    try:
        from synctalk.render import fuse_conv_bn
    except ImportError:  # an older render module: the fast form without BN folding
        fuse_conv_bn = None
    notes = ["'plain': fp32, channels-first; 'render': " + ("BatchNorm folded, " if fuse_conv_bn else "")
             + "channels_last" + (", bf16 autocast" if bf16 else ", fp32") + " (what synctalk.render runs)"]
    results: dict[str, dict] = {}
    for form in ("plain", "render"):
        common.free(dev)
        common.set_backends(dev, fast=False)  # as `synctalk infer` runs: PyTorch's defaults
        model = build_unet(ctx.asr, p.width)
        model.load_state_dict(init)
        model = model.eval().to(dev)
        cl = form == "render"
        if cl:
            if fuse_conv_bn is not None:
                model = fuse_conv_bn(model)
            model = model.to(memory_format=torch.channels_last)
        for batch in (args.forward_batches or p.forward_batches):
            common.reset_peak(dev)
            x = torch.rand(batch, 6, 320, 320, device=dev)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            a = torch.randn(batch, *spec.tensor_shape, device=dev)
            ctx_amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if (cl and bf16) else contextlib.nullcontext
            rates = []
            with torch.inference_mode():
                for _ in range(2 if dev.type == "cuda" else 1):  # warm-up (cuDNN plans, allocator)
                    with ctx_amp():
                        model(x, a)
                for _ in range(repeats):
                    common.sync(dev)
                    t0 = time.perf_counter()
                    for _ in range(iters):
                        with ctx_amp():
                            model(x, a)
                    common.sync(dev)
                    rates.append(batch * iters / (time.perf_counter() - t0))
            results[f"{form} b{batch}"] = {"fps": round(common.median(rates), 3), "batch": batch, "iters": iters,
                                           "repeats": [round(r, 3) for r in rates], "peak_gpu_mib": common.peak_mib(dev)}
            del x, a
        del model
    return results, notes


