"""Speed benchmark: prepare a person from a video, then measure each stage on this machine.

Stages (pick with --only):

* unet      UNet-328 training samples/s with the training losses (L1 + VGG19 conv3_3 perceptual +
            sync loss from a frozen SyncNet): the plain fp32 loop (batch 8, crops read from the
            memory-mapped cache) against the fast path (uint8 crop cache resident on the device,
            masking on the device, bf16 autocast, channels_last, fused Adam, optional torch.compile
            (--compile) and CUDA graphs (--cuda_graphs, one process), a large batch with a scaled
            learning rate, the loss read back only at the end). Both then train from the same
            initial weights for the same number of samples and are scored on the held-out tail
            (L1), so speed is not bought with quality.
* syncnet   SyncNet training samples/s, plain and fast path.
* render    end-to-end render fps: an audio file in, a finished H.264 + AAC MP4 out (audio features,
            network, paste-back and encoding included), through synctalk.render.render.
* landmarks face detection + landmark frames/s on the video's frames: SCRFD + PFLD and SCRFD + dlib.
* forward   UNet forward-only frames/s at two batch sizes (plain fp32 and the render's fast form).
* gpus      the fast UNet training path on 1 and on --gpus N processes (torchrun, DistributedDataParallel
            as in `synctalk train --gpus N`; NCCL on GPUs, gloo on the CPU): samples/s summed over the
            processes, and the scaling N-process rate / 1-process rate. Runs only when asked with --only.

Peak GPU memory (torch.cuda.max_memory_allocated) is reported for every measured variant. Timed
regions are bracketed by torch.cuda.synchronize(); warm-up steps are excluded; where a measurement is
cheap the median of a few repeats is reported.

Networks whose weights are not needed for speed are randomly initialised (VGG19 when no weights
file is found, the frozen SyncNet, PFLD when its checkpoint is missing); the JSON says which.

    python -m benchmarks.speed --size full --json results/speed.json
    python -m benchmarks.speed --size small --device cpu          # the quick CPU check
    python -m benchmarks.speed --size full --dataset dataset/sun --only syncnet,unet --cuda_graphs --batch 32
    python -m benchmarks.speed --size full --dataset dataset/sun --only gpus --gpus 2 --compile
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STAGES = ("unet", "syncnet", "render", "landmarks", "forward", "gpus")
DEFAULT_STAGES = ("unet", "syncnet", "render", "landmarks", "forward")  # "gpus" runs when named
DEFAULT_VIDEO = REPO.parent / "shared" / "fixtures" / "video" / "sun.mp4"
DEFAULT_AUDIO = REPO.parent / "shared" / "fixtures" / "audio_talk_hb.wav"
DEFAULT_MODELS = REPO.parent / "shared" / "models"
SAMPLE_RATE = 16000
# the main rate of each stage's variants: (metric key, unit)
PRIMARY = {"unet": ("samples_per_s", "samples/s"), "syncnet": ("samples_per_s", "samples/s"),
           "render": ("fps", "frames/s"), "landmarks": ("fps", "frames/s"), "forward": ("fps", "frames/s"),
           "gpus": ("samples_per_s", "samples/s")}


@dataclass(frozen=True)
class Preset:
    """Sizes of one benchmark size (small: a quick check that every path runs; full: real sizes)."""

    width: str
    unet_batch_plain: int
    unet_batch_fast: int
    syncnet_batch_plain: int
    syncnet_batch_fast: int
    steps: int  # timed steps per repeat
    repeats: int
    quality_samples: int  # training samples each variant sees before the held-out comparison
    render_seconds: float
    landmark_frames: int
    forward_batches: tuple[int, int]
    forward_iters: int
    video_seconds: float  # 0: the whole video


PRESETS = {
    "small": Preset(width="tiny", unet_batch_plain=2, unet_batch_fast=4, syncnet_batch_plain=4, syncnet_batch_fast=8,
                    steps=1, repeats=1, quality_samples=4, render_seconds=1.0, landmark_frames=4,
                    forward_batches=(1, 4), forward_iters=1, video_seconds=2.0),
    "full": Preset(width="full", unet_batch_plain=8, unet_batch_fast=64, syncnet_batch_plain=16,
                   syncnet_batch_fast=128, steps=30, repeats=3, quality_samples=8192, render_seconds=60.0,
                   landmark_frames=200, forward_batches=(1, 32), forward_iters=20, video_seconds=0.0),
}


class Skip(Exception):
    """A stage cannot run on this machine (a missing binary, package or file); the message says why."""


@dataclass
class Context:
    """What every stage needs: options, the device, the prepared person and its data."""

    args: argparse.Namespace
    preset: Preset
    device: Any
    layout: Any
    asr: str
    workdir: Path
    models_dir: Path | None
    crops: Any = None
    features: Any = None
    train_idx: Any = None
    val_idx: Any = None
    unet_state: dict | None = None  # short-trained UNet weights (fast variant), reused by the render stage
    unet_state_note: str = ""
    syncnet_state: dict | None = None  # SyncNet weights after the SyncNet stage, the UNet's frozen critic
    syncnet_state_note: str = ""


# ---------------------------------------------------------------- small helpers


def _say(ctx_or_args: Any, msg: str) -> None:
    args = getattr(ctx_or_args, "args", ctx_or_args)
    if not getattr(args, "quiet", False):
        print(msg, flush=True)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: Any) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _free(device: Any) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _set_backends(device: Any, fast: bool) -> None:
    """PyTorch's defaults for the plain variants; cuDNN autotuning and TF32 for the fast ones."""
    import torch

    if device.type != "cuda":
        return
    if fast:
        from synctalk import training

        configure = getattr(training, "configure_backends", None)
        if configure is not None:
            configure(device)
            return
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = True  # PyTorch's default for convolutions


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _ffmpeg() -> str | None:
    """The ffmpeg binary synctalk.media uses, or None when it is not there."""
    try:
        from synctalk import media

        exe = media.ffmpeg_exe()
    except Exception:  # imageio-ffmpeg missing, or its binary not found: both mean "no ffmpeg"
        return None
    return exe if exe and Path(exe).exists() else None


def _person_name(stem: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).strip("._-") or "person"
    return name if name[0].isalnum() else f"p{name}"


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """16-bit PCM mono WAV (standard library only), written atomically."""
    import wave

    from synctalk.fileio import atomic_path

    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".wav") as tmp:
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sample_rate)
            w.writeframes(pcm.tobytes())
    return path


def _loop_to(audio: np.ndarray, seconds: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The audio repeated (or cut) to exactly `seconds`."""
    n = max(1, int(round(seconds * sample_rate)))
    reps = int(math.ceil(n / max(audio.size, 1)))
    return np.tile(audio, reps)[:n].astype(np.float32)


# ---------------------------------------------------------------- the person


def _trim_video(src: Path, dst: Path, seconds: float) -> Path:
    """The first `seconds` of a video (re-encoded, so the cut is frame-exact), written atomically."""
    from synctalk.errors import SyncTalkError
    from synctalk.fileio import atomic_path

    exe = _ffmpeg()
    if exe is None:
        raise SyncTalkError("ffmpeg (imageio-ffmpeg) is needed to cut the video: pip install imageio-ffmpeg, "
                            "or pass --dataset with an already preprocessed person")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst, suffix=".mp4") as tmp:
        proc = subprocess.run([exe, "-y", "-loglevel", "error", "-i", str(src), "-t", f"{seconds:.3f}",
                               "-c:v", "libx264", "-preset", "veryfast", "-crf", "16", "-pix_fmt", "yuv420p",
                               "-c:a", "aac", "-f", "mp4", str(tmp)], capture_output=True, text=True, errors="replace")
        if proc.returncode != 0:
            raise SyncTalkError(f"could not cut {src} to {seconds:g} s: {proc.stderr.strip()[-300:]}")
    return dst


def prepare_person(args: argparse.Namespace, preset: Preset, workdir: Path, models_dir: Path | None) -> tuple[Any, dict]:
    """The person to benchmark: --dataset as given, else the video preprocessed into workdir/dataset."""
    from synctalk.errors import SyncTalkError
    from synctalk.layout import dataset_layout

    if args.dataset:
        root = Path(args.dataset).expanduser()
        if not root.is_dir():
            raise SyncTalkError(f"--dataset {root} is not a folder (give the person's folder, dataset/<name>)")
        layout = dataset_layout(root.parent, root.name)
        if not layout.crop_boxes.exists() and not layout.crop_cache.exists():
            raise SyncTalkError(f"{root} has neither crop_boxes.npy nor a crop cache: preprocess it first")
        if not layout.features(args.asr).exists():
            if not layout.audio_wav.exists() or _ffmpeg() is None:
                raise SyncTalkError(f"{root} has no {layout.features(args.asr).name}: preprocess it with --asr_model "
                                    f"{args.asr}")
            from synctalk import media
            from synctalk.audio.features import compute_features
            from synctalk.fileio import save_npy_atomic

            n = len(np.load(layout.crop_boxes, mmap_mode="r"))
            feats = compute_features(args.asr, media.load_audio(layout.audio_wav), n, models_dir=models_dir,
                                     progress=args.progress)
            save_npy_atomic(layout.features(args.asr), feats)
        return layout, {"source": str(root), "preprocessed_here": False}

    from synctalk.preprocess import PreprocessOptions, preprocess_video

    video = Path(args.video).expanduser()
    if not video.is_file():
        raise SyncTalkError(f"video not found: {video} (pass --video PATH, or --dataset DIR)")
    name = _person_name(video.stem)
    seconds = preset.video_seconds if args.video_seconds is None else args.video_seconds
    src = video
    if seconds and seconds > 0:
        name = _person_name(f"{name}_first{seconds:g}s")
        src = workdir / "input" / f"{name}.mp4"
        if not src.exists():
            _trim_video(video, src, seconds)
    opts = PreprocessOptions(video_path=src, name=name, dataset_dir=workdir / "dataset", asr_model=args.asr,
                             landmarker=args.landmarker, models_dir=models_dir, device=args.device,
                             progress=args.progress)
    t0 = time.perf_counter()
    result = preprocess_video(opts)
    dt = time.perf_counter() - t0
    info = {"source": str(video), "cut_to_seconds": seconds or None, "preprocessed_here": True,
            "landmarker": args.landmarker, "preprocess_seconds": round(dt, 2),
            "preprocess_did": list(result.done_now), "preprocess_skipped": list(result.skipped)}
    return result.layout, info


def load_data(ctx: Context) -> None:
    """The crop cache (memmap), audio features and the held-out split of the person."""
    from synctalk.data import load_crop_cache, load_features, split_indices

    ctx.crops = load_crop_cache(ctx.layout, progress=ctx.args.progress)
    ctx.features = load_features(ctx.layout, ctx.asr)
    n = min(len(ctx.crops), len(ctx.features))
    ctx.train_idx, ctx.val_idx = split_indices(n, ctx.args.val_fraction)


# ---------------------------------------------------------------- shared model pieces


def _vgg_state(ctx: Context) -> tuple[dict, str]:
    """VGG19 weights for the perceptual loss: the real file when found, else a random initialisation."""
    import torch

    from synctalk.losses import VGG19Features
    from synctalk.weights import find_model_file

    path = find_model_file("vgg19", ctx.models_dir)
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        return state, f"VGG19 weights from {path}"
    torch.manual_seed(ctx.args.seed + 11)
    return VGG19Features().state_dict(), ("VGG19 randomly initialised (no vgg19-dcbb9e9d.pth found): "
                                          "the speed does not depend on the weights' values")


@dataclass(frozen=True)
class Variant:
    """One way of running a training loop."""

    name: str
    batch: int
    amp: str
    channels_last: bool
    on_device: bool
    fused_adam: bool
    compile: bool
    lr: float
    graphs: bool = False  # CUDA graphs of the compiled networks (maybe_compile)

    def describe(self) -> dict:
        """The switches, for the JSON."""
        return {"batch": self.batch, "amp": self.amp, "channels_last": self.channels_last,
                "cache_on_device": self.on_device, "fused_adam": self.fused_adam, "compile": self.compile,
                "cuda_graphs": self.graphs, "lr": self.lr}


def _variants(ctx: Context, plain_batch: int, fast_batch: int, base_batch: int) -> list[Variant]:
    from synctalk.training import resolve_amp, scaled_lr

    args = ctx.args
    fast_amp = resolve_amp(args.amp, ctx.device)
    return [
        Variant("plain", plain_batch, "none", False, False, False, False, args.lr),
        Variant("fast", fast_batch, fast_amp, True, True, ctx.device.type == "cuda",
                bool(args.compile or args.cuda_graphs), scaled_lr(args.lr, fast_batch, base_batch, args.lr_scaling),
                bool(args.cuda_graphs) and ctx.device.type == "cuda"),
    ]


def _optimizer(model: Any, v: Variant, device: Any) -> Any:
    import torch

    from synctalk.training import make_adam

    if v.fused_adam:
        return make_adam(model.parameters(), v.lr, device)
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=v.lr)


def _frame_data(ctx: Context, v: Variant) -> Any:
    from synctalk.data import FrameData

    return FrameData(ctx.crops, ctx.features, ctx.asr, device=ctx.device, on_device=v.on_device,
                     channels_last=v.channels_last)


# ---------------------------------------------------------------- stage: UNet training


def _train_unet_samples(model: Any, optimizer: Any, data: Any, losses: Any, batch: int, steps: int, pool: Any,
                        seed: int, device: Any, amp: str, graphs: bool = False) -> dict[str, float]:
    """`steps` optimisation steps of `batch` random training frames (sampled as train_unet_steps does);
    the loss is read back once, at the end."""
    import torch

    from synctalk.data import DEFAULT_MASK
    from synctalk.training import make_scaler
    from synctalk.training.unet import random_batches, unet_step

    g = torch.Generator().manual_seed(seed)
    scaler = make_scaler(device, amp)
    model.train()
    parts = None
    seen = 0
    draws = random_batches(pool, batch, losses.group, g, steps, device)
    _sync(device)
    t0 = time.perf_counter()
    for idx, ref in draws:
        b = data.unet_batch(idx, ref, DEFAULT_MASK)
        parts = unet_step(model, optimizer, scaler, b, losses, device, amp, graphs)
        seen += len(idx)
    _sync(device)
    dt = time.perf_counter() - t0
    last = [float(x) for x in parts.tolist()] if parts is not None else [float("nan")]
    return {"samples": seen, "steps": steps, "seconds": round(dt, 3), "last_loss": last[0]}


def _profile_steps(run: Callable[[], Any], device: Any, top: int) -> list[dict]:
    """What took the most time in `run()`: CUDA kernels by device time on a GPU, operators by CPU time otherwise."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        run()
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]
    if cuda:  # the kernels themselves: an operator's row would count its kernels' time a second time
        from torch.autograd import DeviceType

        events = [e for e in events if getattr(e, "device_type", None) == DeviceType.CUDA]

    def own(e: Any) -> float:  # self time in microseconds, on the device that did the work
        if cuda:
            return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)))
        return float(e.self_cpu_time_total)

    total = sum(own(e) for e in events) or 1.0
    rows = sorted(events, key=own, reverse=True)[:top]
    return [{"op": e.key, "ms": round(own(e) / 1000.0, 3), "share": round(own(e) / total, 4), "calls": int(e.count)}
            for e in rows]


def _timed_repeats(repeats: int, seed: int, run: Callable[[Any], dict]) -> tuple[list[dict], dict]:
    """`run(generator=g)` `repeats` times (g seeded seed, seed + 1, …): the runs, and their median
    samples/s with every repeat's, for a result row."""
    import torch

    runs = [run(generator=torch.Generator().manual_seed(seed + r)) for r in range(repeats)]
    rates = [float(r["samples_per_s"]) for r in runs]
    return runs, {"samples_per_s": round(_median(rates), 3), "repeats": [round(x, 3) for x in rates]}


def _unet_initial_weights(ctx: Context) -> tuple[dict, dict, str]:
    """The UNet's initial weights and the frozen SyncNet's (the syncnet stage's when it ran, else random)."""
    import torch

    from unet_328 import SyncNet, build_unet

    torch.manual_seed(ctx.args.seed)
    unet_init = build_unet(ctx.asr, ctx.preset.width).state_dict()
    if ctx.syncnet_state is not None:
        return unet_init, ctx.syncnet_state, f"frozen SyncNet for the sync loss: {ctx.syncnet_state_note}"
    torch.manual_seed(ctx.args.seed + 1)
    return unet_init, SyncNet(ctx.asr, ctx.preset.width).state_dict(), (
        "frozen SyncNet for the sync loss: randomly initialised (its weights do not change the speed; "
        "run the syncnet stage too to use briefly trained ones)")


def _unet_parts(ctx: Context, v: Variant, vgg_state: dict, unet_init: dict, syncnet_init: dict,
                wrap: Callable[[Any], Any] | None = None) -> tuple[Any, Any, Any, Any]:
    """A UNet training set-up run the variant's way: (model, step_model, optimizer, losses).

    `wrap` goes around the model before torch.compile (DistributedDataParallel in the gpus stage).
    """
    from synctalk.losses import PerceptualLoss
    from synctalk.training import maybe_compile, prepare_module
    from synctalk.training.unet import UNetLosses
    from unet_328 import SyncNet, build_unet

    dev = ctx.device
    perceptual = prepare_module(PerceptualLoss(state_dict=vgg_state), dev, v.channels_last)
    syncnet = SyncNet(ctx.asr, ctx.preset.width)
    syncnet.load_state_dict(syncnet_init)
    syncnet = maybe_compile(prepare_module(syncnet.requires_grad_(False).eval(), dev, v.channels_last), v.compile,
                            v.graphs)
    losses = UNetLosses(1.0, maybe_compile(perceptual, v.compile, v.graphs), 0.01, syncnet, 10.0)
    model = build_unet(ctx.asr, ctx.preset.width)
    model.load_state_dict(unet_init)
    model = prepare_module(model, dev, v.channels_last)
    step_model = maybe_compile(wrap(model) if wrap else model, v.compile, v.graphs)
    return model, step_model, _optimizer(model, v, dev), losses


def bench_unet(ctx: Context) -> tuple[dict, list[str]]:
    """UNet training samples/s (plain vs fast) and held-out L1 after the same number of samples."""
    import functools

    import torch

    from synctalk.training.checkpoint import unwrap
    from synctalk.training.unet import BASE_BATCH, evaluate_unet, train_unet_steps
    from unet_328 import build_unet

    args, p, dev = ctx.args, ctx.preset, ctx.device
    notes: list[str] = []
    vgg_state, vgg_note = _vgg_state(ctx)
    notes.append(vgg_note)
    unet_init, syncnet_init, syncnet_note = _unet_initial_weights(ctx)
    notes.append(syncnet_note)
    pool = torch.as_tensor(ctx.train_idx, dtype=torch.long)
    steps = args.steps or p.steps
    repeats = args.repeats or p.repeats
    quality = args.quality_samples or p.quality_samples
    variants = _variants(ctx, p.unet_batch_plain, args.batch or p.unet_batch_fast, BASE_BATCH)
    eval_data = None
    results: dict[str, dict] = {}
    for v in variants:
        _say(ctx, f"[unet] {v.name}: batch {v.batch}, amp {v.amp}, channels_last {v.channels_last}, "
                  f"cache on device {v.on_device}, fused Adam {v.fused_adam}, compile {v.compile}, "
                  f"CUDA graphs {v.graphs}, lr {v.lr:.3g}")
        _free(dev)
        _set_backends(dev, fast=v.name != "plain")
        _reset_peak(dev)
        data = _frame_data(ctx, v)
        if eval_data is None:
            eval_data = data if not v.on_device else _frame_data(ctx, replace(v, on_device=False, channels_last=False))
        model, step_model, optimizer, losses = _unet_parts(ctx, v, vgg_state, unet_init, syncnet_init)
        runs, row = _timed_repeats(repeats, args.seed + 100, functools.partial(
            train_unet_steps, step_model, optimizer, data, steps, v.batch, losses=losses, device=dev, amp=v.amp,
            frames=ctx.train_idx, graphs=v.graphs))
        row.update({"timed_steps": steps, **v.describe(), "train_loss": float(runs[-1].get("loss", float("nan")))})
        if args.profile and v.name == "fast":
            row["profile"] = _profile_steps(functools.partial(
                train_unet_steps, step_model, optimizer, data, max(1, min(steps, 5)), v.batch, losses=losses,
                device=dev, amp=v.amp, generator=torch.Generator().manual_seed(args.seed + 99),
                frames=ctx.train_idx, graphs=v.graphs), dev, args.profile)
            notes.append("profile of the fast UNet step (kernels by device time on a GPU, operators by CPU time otherwise): "
                         + "; ".join(f"{r['op']} {r['share']:.0%}" for r in row["profile"][:8]))

        # the same number of training samples from the same initial weights, then the held-out score
        if ctx.val_idx is not None and len(ctx.val_idx):
            unwrap(model).load_state_dict(unet_init)
            optimizer = _optimizer(model, v, dev)
            q_steps = max(1, int(round(quality / v.batch)))
            q = _train_unet_samples(step_model, optimizer, data, losses, v.batch, q_steps, pool, args.seed + 7, dev,
                                    v.amp, v.graphs)
            m = evaluate_unet(unwrap(model), eval_data, ctx.val_idx, ctx.train_idx, device=dev, amp="none",
                              batch_size=16, seed=args.seed)
            row.update({"quality_samples": q["samples"], "quality_steps": q["steps"],
                        "quality_train_seconds": q["seconds"], "quality_last_loss": q["last_loss"],
                        "val_l1": m.get("val_l1"), "val_psnr": m.get("val_psnr")})
            if v.name == "fast":
                ctx.unet_state = {k: t.detach().cpu().clone() for k, t in unwrap(model).state_dict().items()}
                ctx.unet_state_note = f"UNet weights after {q['samples']} training samples of the fast variant"
        row["peak_gpu_mib"] = _peak_mib(dev)
        results[v.name] = row
        del model, step_model, optimizer, losses, data
    if ctx.val_idx is not None and len(ctx.val_idx) and eval_data is not None:
        model = build_unet(ctx.asr, p.width)
        model.load_state_dict(unet_init)
        m0 = evaluate_unet(model.to(dev), eval_data, ctx.val_idx, ctx.train_idx, device=dev, amp="none",
                           batch_size=16, seed=args.seed)
        for row in results.values():
            row["val_l1_init"] = m0.get("val_l1")
        notes.append(f"held-out L1 on the last {len(ctx.val_idx)} frames after the same number of training samples "
                     f"from the same initial weights (fp32 evaluation); before training: {m0.get('val_l1', float('nan')):.4f}")
    if "plain" in results and "fast" in results and results["plain"]["samples_per_s"] > 0:
        results["fast"]["speedup"] = round(results["fast"]["samples_per_s"] / results["plain"]["samples_per_s"], 2)
    _set_backends(dev, fast=False)
    return results, notes


# ---------------------------------------------------------------- stage: SyncNet training


def bench_syncnet(ctx: Context) -> tuple[dict, list[str]]:
    """SyncNet training samples/s, plain vs fast path."""
    import functools

    import torch

    from synctalk.training import maybe_compile, prepare_module
    from synctalk.training.checkpoint import unwrap
    from synctalk.training.syncnet import BASE_BATCH, train_syncnet_steps
    from unet_328 import SyncNet

    args, p, dev = ctx.args, ctx.preset, ctx.device
    steps = args.steps or p.steps
    repeats = args.repeats or p.repeats
    torch.manual_seed(args.seed + 1)
    init = SyncNet(ctx.asr, p.width).state_dict()
    results: dict[str, dict] = {}
    for v in _variants(ctx, p.syncnet_batch_plain, args.syncnet_batch or p.syncnet_batch_fast, BASE_BATCH):
        _say(ctx, f"[syncnet] {v.name}: batch {v.batch}, amp {v.amp}, channels_last {v.channels_last}, "
                  f"cache on device {v.on_device}, compile {v.compile}, CUDA graphs {v.graphs}")
        _free(dev)
        _set_backends(dev, fast=v.name != "plain")
        _reset_peak(dev)
        data = _frame_data(ctx, v)
        model = SyncNet(ctx.asr, p.width)
        model.load_state_dict(init)
        model = prepare_module(model, dev, v.channels_last)
        step_model = maybe_compile(model, v.compile, v.graphs)
        optimizer = _optimizer(model, v, dev)
        runs, row = _timed_repeats(repeats, args.seed + 200, functools.partial(
            train_syncnet_steps, step_model, optimizer, data, steps, v.batch, device=dev, amp=v.amp,
            frames=ctx.train_idx, graphs=v.graphs))
        loss = float(runs[-1].get("loss", float("nan")))
        results[v.name] = {**row, "timed_steps": steps, **v.describe(), "train_loss": loss,
                           "peak_gpu_mib": _peak_mib(dev)}
        if v.name == "fast" and math.isfinite(loss):
            # every timed step trained it: hand it to the UNet stage as its frozen critic
            trained = (steps + 1) * repeats * v.batch
            ctx.syncnet_state = {k: t.detach().cpu().clone() for k, t in unwrap(model).state_dict().items()}
            ctx.syncnet_state_note = f"the SyncNet stage's fast variant after ~{trained} training samples"
        del model, step_model, optimizer, data
    if results.get("plain", {}).get("samples_per_s", 0) > 0 and "fast" in results:
        results["fast"]["speedup"] = round(results["fast"]["samples_per_s"] / results["plain"]["samples_per_s"], 2)
    _set_backends(dev, fast=False)
    return results, []


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
    if _ffmpeg() is None:
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
    wav = _write_wav(ctx.workdir / "audio" / f"speech_{seconds:g}s.wav", _loop_to(speech, seconds))
    notes.append(f"{audio_path.name} ({speech.size / SAMPLE_RATE:.1f} s) looped/cut to {seconds:g} s")
    bf16 = dev.type == "cuda" and not args.render_fp32
    _set_backends(dev, fast=False)  # as `synctalk infer` runs: PyTorch's defaults
    kwargs = dict(dataset_dir=ctx.layout.root.parent, checkpoint=ckpt, batch_size=args.render_batch, device=dev,
                  models_dir=ctx.models_dir, asr=ctx.asr, bf16=bf16, progress=args.progress)
    if dev.type == "cuda":  # CUDA context, cuDNN plans and ffmpeg start-up are not what a long render costs
        warm = _write_wav(ctx.workdir / "audio" / "warmup_2s.wav", _loop_to(speech, 2.0))
        render(ctx.layout.name, warm, ctx.workdir / "render" / "warmup.mp4", **kwargs)
    _free(dev)
    _reset_peak(dev)
    out = ctx.workdir / "render" / f"render_{seconds:g}s.mp4"
    _sync(dev)
    t0 = time.perf_counter()
    res = render(ctx.layout.name, wav, out, **kwargs)
    _sync(dev)
    dt = time.perf_counter() - t0
    if not out.is_file() or out.stat().st_size == 0:
        raise RuntimeError(f"render wrote no video to {out}")
    return {"end_to_end": {"fps": round(res.frames / dt, 3), "frames": res.frames, "seconds": round(dt, 3),
                           "audio_seconds": seconds, "realtime_factor": round(res.frames / dt / 25.0, 3),
                           "batch": args.render_batch, "bf16": bf16, "output_mib": round(out.stat().st_size / 2**20, 2),
                           "peak_gpu_mib": _peak_mib(dev)}}, notes


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
    _sync(device)
    t0 = time.perf_counter()
    for s in range(0, len(frames), batch):
        _lms, ok = pipeline.process(frames[s:s + batch])
        found += int(ok.sum())
    _sync(device)
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
    _free(dev)
    _reset_peak(dev)
    pfld = create_landmarker("pfld", ctx.models_dir, device=str(dev), checkpoint_path=pfld_ckpt,
                             mean_face_path=mean_face)
    for every, key in ((DETECT_EVERY, "scrfd+pfld"), (1, "scrfd+pfld, detect every frame")):
        row = _time_pipeline(FaceLandmarkPipeline(detector, pfld, workers=workers, detect_every=every), frames,
                             args.landmark_batch, dev)
        row.update({"landmark_device": str(getattr(pfld, "device", dev)), "weights": pfld_weights,
                    "detect_every": every, "peak_gpu_mib": _peak_mib(dev)})
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
        _free(dev)
        _set_backends(dev, fast=False)  # as `synctalk infer` runs: PyTorch's defaults
        model = build_unet(ctx.asr, p.width)
        model.load_state_dict(init)
        model = model.eval().to(dev)
        cl = form == "render"
        if cl:
            if fuse_conv_bn is not None:
                model = fuse_conv_bn(model)
            model = model.to(memory_format=torch.channels_last)
        for batch in (args.forward_batches or p.forward_batches):
            _reset_peak(dev)
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
                    _sync(dev)
                    t0 = time.perf_counter()
                    for _ in range(iters):
                        with ctx_amp():
                            model(x, a)
                    _sync(dev)
                    rates.append(batch * iters / (time.perf_counter() - t0))
            results[f"{form} b{batch}"] = {"fps": round(_median(rates), 3), "batch": batch, "iters": iters,
                                           "repeats": [round(r, 3) for r in rates], "peak_gpu_mib": _peak_mib(dev)}
            del x, a
        del model
    return results, notes


# ---------------------------------------------------------------- stage: UNet training on several processes


def _unet_rank_worker(ctx: Context) -> int:
    """One torchrun process of the `gpus` stage: the fast UNet step under DistributedDataParallel.

    Every rank times the same number of steps of its own random frames; rank 0 writes the summed
    rate (and the slowest rank's time) to --rank_out.
    """
    from synctalk.training import Distributed, scaled_lr
    from synctalk.training.unet import BASE_BATCH, train_unet_steps

    args, p = ctx.args, ctx.preset
    dist = Distributed.from_env()
    dev = dist.start(args.device)
    ctx.device = dev
    try:
        _set_backends(dev, fast=True)
        fast = _variants(ctx, p.unet_batch_plain, args.batch or p.unet_batch_fast, BASE_BATCH)[1]
        on_gpu = dev.type == "cuda"  # the CPU (gloo) run keeps the plain memory layout
        v = replace(fast, channels_last=on_gpu, on_device=on_gpu, graphs=False,  # graphs: one process only
                    lr=scaled_lr(args.lr, fast.batch * dist.world_size, BASE_BATCH, args.lr_scaling))
        data = _frame_data(ctx, v)
        vgg_state, _ = _vgg_state(ctx)
        unet_init, syncnet_init, _ = _unet_initial_weights(ctx)
        _, step_model, optimizer, losses = _unet_parts(ctx, v, vgg_state, unet_init, syncnet_init,
                                                       wrap=lambda m: dist.wrap(m, dev))
        _reset_peak(dev)
        steps = args.steps or p.steps

        def timed(generator: Any) -> dict:
            out = train_unet_steps(step_model, optimizer, data, steps, v.batch, losses=losses, device=dev, amp=v.amp,
                                   generator=generator, frames=ctx.train_idx)
            return dist.reduce_metrics({"samples_per_s": float(out["samples_per_s"]), "seconds": float(out["seconds"])})

        runs, row = _timed_repeats(args.repeats or p.repeats, args.seed + 100 + 1000 * dist.rank, timed)
        peak = _peak_mib(dev)
        if dist.is_main:
            from synctalk.fileio import write_json_atomic

            write_json_atomic(Path(args.rank_out), {
                "processes": dist.world_size, **row, "seconds": [round(r["seconds"], 3) for r in runs],
                "timed_steps": steps, "batch_per_process": v.batch, "global_batch": v.batch * dist.world_size,
                "amp": v.amp, "channels_last": v.channels_last, "compile": v.compile, "lr": v.lr,
                "peak_gpu_mib": peak,  # rank 0's
                "backend": ("nccl" if on_gpu else "gloo") if dist.enabled else None})
        dist.barrier()
    finally:
        dist.stop()
    return 0


def bench_gpus(ctx: Context) -> tuple[dict, list[str]]:
    """The fast UNet path on 1 process and on --gpus N processes launched by torchrun; the scaling."""
    import os

    import torch

    args = ctx.args
    n = int(args.gpus)
    if n < 2:
        raise Skip("give --gpus N (N >= 2) to measure training on several processes")
    if ctx.device.type == "cuda":
        visible = torch.cuda.device_count()
        if visible < n:
            raise Skip(f"--gpus {n} but torch sees {visible} GPU(s)")
    elif ctx.device.type != "cpu":
        raise Skip(f"several processes need CUDA GPUs or the CPU, not {ctx.device.type}")
    results: dict[str, dict] = {}
    notes = ["samples/s summed over the processes; each process runs the fast path with the same per-process "
             "batch (DistributedDataParallel, BatchNorm statistics per process as in `synctalk train --gpus N`)"]
    env = dict(os.environ)
    env.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off (see the README's multi-GPU section)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH", "")) if x)
    for k in sorted({1, n}):
        out = ctx.workdir / f"gpus_{k}.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={k}",
               "-m", "benchmarks.speed", "--rank_worker", "--rank_out", str(out), "--dataset", str(ctx.layout.root),
               "--size", args.size, "--device", "cuda" if ctx.device.type == "cuda" else "cpu", "--asr", ctx.asr,
               "--lr", str(args.lr), "--lr_scaling", args.lr_scaling, "--amp", args.amp, "--seed", str(args.seed),
               "--val_fraction", str(args.val_fraction), "--no_progress", "--quiet"]
        for flag, value in (("--batch", args.batch), ("--steps", args.steps), ("--repeats", args.repeats),
                            ("--models_dir", args.models_dir), ("--threads", args.threads)):
            if value is not None:
                cmd += [flag, str(value)]
        if args.compile or args.cuda_graphs:  # --cuda_graphs implies --compile; the graphs stay in one process
            cmd.append("--compile")
        _say(ctx, f"[gpus] {k} process(es): {' '.join(cmd[2:6])} …")
        proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
            raise RuntimeError(f"the {k}-process run failed (exit {proc.returncode}):\n" + "\n".join(tail))
        results[f"{k} process" + ("es" if k > 1 else "")] = json.loads(out.read_text())
    one, many = results.get("1 process"), results.get(f"{n} processes")
    if one and many and one["samples_per_s"] > 0:
        many["scaling"] = round(many["samples_per_s"] / one["samples_per_s"], 3)
    return results, notes


STAGE_FUNCS: dict[str, Callable[[Context], tuple[dict, list[str]]]] = {
    "unet": bench_unet, "syncnet": bench_syncnet, "render": bench_render, "landmarks": bench_landmarks,
    "forward": bench_forward, "gpus": bench_gpus,
}
# order of execution: SyncNet first (its weights become the UNet's critic), the UNet before the render
# (which renders with the UNet's short-trained weights)
ORDER = ("syncnet", "unet", "forward", "render", "landmarks", "gpus")


# ---------------------------------------------------------------- report


def machine_info(device: Any) -> dict:
    """What the numbers were measured on."""
    import os

    import torch

    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "platform": platform.platform()}
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        info.update(gpu=prop.name, gpu_memory_gib=round(prop.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    bf16_supported=torch.cuda.is_bf16_supported())
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime_providers"] = None
    info["ffmpeg"] = _ffmpeg() is not None
    return info


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.4g}" if abs(v) >= 0.01 else f"{v:.2e}"
    return str(v)


def print_table(report: dict) -> None:
    """A compact table of every stage's variants (rich when available, plain text otherwise)."""
    rows = []
    for stage, rec in report["stages"].items():
        key, unit = PRIMARY[stage]
        if rec["status"] != "ok":
            rows.append((stage, rec["status"], "–", "", "–", (rec.get("reason") or "")[:80]))
            continue
        for variant, m in rec["results"].items():
            extra = []
            for k in ("batch", "amp", "speedup", "val_l1", "quality_samples", "frames", "weights", "landmark_device",
                      "detect_every", "global_batch", "scaling"):
                if k in m and m[k] is not None:
                    extra.append(f"{k} {_fmt(m[k])}")
            rows.append((stage, variant, _fmt(m.get(key)), unit, _fmt(m.get("peak_gpu_mib")), ", ".join(extra)))
    title = f"synctalk speed — {report['machine'].get('gpu') or report['machine']['device']} ({report['size']})"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        for r in rows:
            print("  ".join(str(c) for c in r))
        return
    table = Table(title=title)
    for col, justify in (("stage", "left"), ("variant", "left"), ("rate", "right"), ("unit", "left"),
                         ("peak GPU MiB", "right"), ("details", "left")):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(*r)
    Console(width=160).print(table)


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", default=str(DEFAULT_VIDEO), help="the talking video to prepare the person from")
    p.add_argument("--audio", default=str(DEFAULT_AUDIO), help="speech for the render stage (looped/cut)")
    p.add_argument("--dataset", default=None,
                   help="an already preprocessed person folder (dataset/<name>): skips preprocessing")
    p.add_argument("--workdir", default=str(REPO / "results" / "benchmark"),
                   help="where the prepared person, checkpoints and renders go")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 …")
    p.add_argument("--size", default="full", choices=sorted(PRESETS), help="small: a quick check; full: real sizes")
    p.add_argument("--only", default=",".join(DEFAULT_STAGES),
                   help=f"comma-separated stages of {', '.join(STAGES)} (default: all but gpus)")
    p.add_argument("--gpus", type=int, default=2, help="processes of the gpus stage (default 2)")
    p.add_argument("--rank_worker", action="store_true", help=argparse.SUPPRESS)  # one torchrun process of "gpus"
    p.add_argument("--rank_out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=None, help="timed training steps per repeat")
    p.add_argument("--repeats", type=int, default=None, help="repeats of each timed measurement (median reported)")
    p.add_argument("--batch", type=int, default=None, help="UNet batch of the fast path (full: 64)")
    p.add_argument("--syncnet_batch", type=int, default=None, help="SyncNet batch of the fast path (full: 128)")
    p.add_argument("--quality_samples", type=int, default=None,
                   help="training samples each UNet variant sees before the held-out L1 (full: 8192)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate at the plain batch")
    p.add_argument("--lr_scaling", default="sqrt", choices=("none", "linear", "sqrt"),
                   help="how the fast path's larger batch scales the learning rate (default sqrt)")
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "none"),
                   help="precision of the fast path (auto: bf16 on a GPU, none on the CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the fast path's networks")
    p.add_argument("--cuda_graphs", action="store_true",
                   help="the fast path replays CUDA graphs of its compiled networks "
                        "(implies --compile; not in the gpus stage)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="unet stage: profile a few fast-path steps and report the N kernels with the most device time")
    p.add_argument("--models_dir", default=None,
                   help=f"where model weights are looked for first (default {DEFAULT_MODELS} when it exists)")
    p.add_argument("--asr", default="mel", help="audio features (default mel: needs no weights)")
    p.add_argument("--landmarker", default="dlib", choices=("dlib", "pfld"), help="landmarks for preparing the dataset")
    p.add_argument("--prepare_only", action="store_true",
                   help="only preprocess the video (to copy the person folder to another machine), then stop")
    p.add_argument("--video_seconds", type=float, default=None,
                   help="prepare only the first N seconds of the video (small: 2, full: all)")
    p.add_argument("--val_fraction", type=float, default=0.1, help="held-out tail for the quality check")
    p.add_argument("--render_seconds", type=float, default=None, help="seconds of speech to render (full: 60)")
    p.add_argument("--render_batch", type=int, default=16, help="render network batch (the app's default 16)")
    p.add_argument("--render_fp32", action="store_true", help="render without bf16 on a GPU")
    p.add_argument("--landmark_frames", type=int, default=None, help="frames for the landmark stage (full: 200)")
    p.add_argument("--landmark_batch", type=int, default=32, help="frames per landmark batch")
    p.add_argument("--forward_batches", type=lambda s: tuple(int(x) for x in s.split(",")), default=None,
                   help="batch sizes of the forward stage, e.g. 1,32")
    p.add_argument("--forward_iters", type=int, default=None, help="forward passes per repeat")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    p.add_argument("--no_progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("--quiet", action="store_true", help="only the final table")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns 0 when every stage asked for ran or was skipped with a reason, else 1."""
    args = build_parser().parse_args(argv)
    from synctalk.device import resolve_device
    from synctalk.errors import SyncTalkError

    preset = PRESETS[args.size]
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in STAGES]
    if unknown:
        print(f"error: unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir).expanduser()
    workdir.mkdir(parents=True, exist_ok=True)
    models_dir = Path(args.models_dir) if args.models_dir else (DEFAULT_MODELS if DEFAULT_MODELS.is_dir() else None)
    t_start = time.perf_counter()
    if args.threads:
        import torch

        torch.set_num_threads(max(1, args.threads))
    try:
        device = resolve_device(args.device)
    except SyncTalkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"size": args.size, "machine": machine_info(device),
                              "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()},
                              "preset": preset.__dict__, "stages": {}, "notes": []}
    _say(args, f"synctalk speed benchmark ({args.size}) on {report['machine'].get('gpu') or device}; workdir {workdir}")

    try:
        from synctalk.audio.registry import get_spec

        get_spec(args.asr)
        layout, info = prepare_person(args, preset, workdir, models_dir)
        if args.prepare_only:
            return _prepared_only(layout, args)
        ctx = Context(args=args, preset=preset, device=device, layout=layout, asr=args.asr, workdir=workdir,
                      models_dir=models_dir)
        load_data(ctx)
    except SyncTalkError as exc:
        print(f"error: could not prepare the person: {exc}", file=sys.stderr)
        report["error"] = str(exc)
        _finish(report, args)
        return 1
    if args.rank_worker:
        return _unet_rank_worker(ctx)
    info.update(name=layout.name, frames=int(min(len(ctx.crops), len(ctx.features))), train_frames=len(ctx.train_idx),
                held_out_frames=len(ctx.val_idx))
    report["person"] = info
    _say(args, f"person {layout.name}: {info['frames']} frames ({info['train_frames']} train / "
               f"{info['held_out_frames']} held out) in {layout.root}")

    failed = False
    for stage in ORDER:
        if stage not in only:
            continue
        _say(args, f"── {stage}")
        t0 = time.perf_counter()
        rec: dict[str, Any]
        try:
            results, notes = STAGE_FUNCS[stage](ctx)
            rec = {"status": "ok", "results": results, "notes": notes}
        except (Skip, SyncTalkError, ImportError) as exc:
            rec = {"status": "skipped", "reason": str(exc), "results": {}, "notes": []}
            _say(args, f"   skipped: {exc}")
        except Exception as exc:  # a broken stage is reported, and the others still run
            failed = True
            rec = {"status": "error", "reason": f"{type(exc).__name__}: {exc}", "results": {}, "notes": [],
                   "traceback": traceback.format_exc()}
            print(rec["traceback"], file=sys.stderr)
        rec["stage_seconds"] = round(time.perf_counter() - t0, 2)
        report["stages"][stage] = rec
        for n in rec.get("notes", []):
            _say(args, f"   note: {n}")
        _free(device)
    report["total_seconds"] = round(time.perf_counter() - t_start, 2)
    _finish(report, args)
    return 1 if failed else 0


def _prepared_only(layout: Any, args: argparse.Namespace) -> int:
    """--prepare_only: drop the crop cache (rebuilt from the frames when needed) and say how big the folder is."""
    cache = layout.crop_cache
    if cache.exists():
        size = cache.stat().st_size
        cache.unlink()
        print(f"removed the crop cache {cache.name} ({size / 2**20:.0f} MiB): it is rebuilt from the frames on first use")
    total = sum(f.stat().st_size for f in layout.root.rglob("*") if f.is_file())
    print(f"prepared {layout.root} ({total / 2**20:.1f} MiB); benchmark it with --dataset {layout.root}")
    return 0


def _finish(report: dict, args: argparse.Namespace) -> None:
    """Print the JSON and then the table; write the JSON file when asked."""
    if not args.quiet:
        print(json.dumps(report, indent=1, default=str))
    if args.json:
        from synctalk.fileio import write_json_atomic

        path = Path(args.json).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, report)
        _say(args, f"results → {path}")
    if report.get("stages"):
        print_table(report)


if __name__ == "__main__":
    if str(REPO) not in sys.path:  # run as a file: make the repository's packages importable
        sys.path.insert(0, str(REPO))
    sys.exit(main())
