"""Benchmark stages of training: UNet and SyncNet samples/s (plain vs fast), and several processes.

Every variant builds the task that `synctalk train-unet` / `train-syncnet` runs (synctalk.training.unet.
UNetTask, syncnet.SyncNetTask: the same losses, layout, compile and CUDA-graph set-up) from a `Speed`,
and times its `step` through synctalk.training.loop.time_steps: what is measured is what trains.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from synctalk.data import FrameData
from synctalk.training.checkpoint import unwrap
from synctalk.training.loop import Speed, time_steps
from synctalk.device import resolve_amp
from synctalk.training.runtime import Distributed, make_adam, scaled_lr
from synctalk.training.syncnet import SyncNetTask
from synctalk.training.unet import UNetTask, evaluate_unet
from unet_328 import SyncNet, build_unet

from . import common
from .common import REPO, Context, Skip


@dataclass(frozen=True)
class Variant:
    """One way of running a training step: a name, the speed switches, where the crops live."""

    name: str
    speed: Speed

    def describe(self) -> dict:
        """The switches, for the JSON."""
        s = self.speed
        return {"batch": s.batch_size, "amp": s.amp, "channels_last": s.channels_last,
                "cache_on_device": s.cache_on_device, "compile": s.compile, "cuda_graphs": s.cuda_graphs, "lr": s.lr}


def variants(ctx: Context, plain_batch: int, fast_batch: int, base_batch: int) -> list[Variant]:
    """plain: fp32, memmapped crops, no compile; fast: the GPU defaults of training (bf16, channels_last,
    crops on the device, compile/CUDA graphs when asked), a larger batch with a scaled learning rate."""
    args, dev = ctx.args, ctx.device
    cuda = dev.type == "cuda"
    graphs = bool(args.cuda_graphs) and cuda
    plain = Speed(device=str(dev), amp="none", channels_last=False, compile=False, cuda_graphs=False,
                  batch_size=plain_batch, lr=args.lr, cache_on_device=False)
    fast = Speed(device=str(dev), amp=resolve_amp(args.amp, dev), channels_last=True,
                 compile=bool(args.compile or args.cuda_graphs), cuda_graphs=graphs, batch_size=fast_batch,
                 lr=scaled_lr(args.lr, fast_batch, base_batch, args.lr_scaling), cache_on_device=True)
    return [Variant("plain", plain), Variant("fast", fast)]


def frame_data(ctx: Context, speed: Speed) -> FrameData:
    """The person's crops and features laid out for one variant."""
    return FrameData(ctx.crops, ctx.features, ctx.asr, device=ctx.device, on_device=bool(speed.cache_on_device),
                     channels_last=speed.channels_last)


def vgg_state(ctx: Context) -> tuple[dict, str]:
    """VGG19 weights for the perceptual loss: the real file when found, else a random initialisation."""
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


def unet_initial_weights(ctx: Context) -> tuple[dict, dict, str]:
    """The UNet's initial weights and the frozen SyncNet's (the syncnet stage's when it ran, else random)."""
    torch.manual_seed(ctx.args.seed)
    unet_init = build_unet(ctx.asr, ctx.preset.width).state_dict()
    if ctx.syncnet_state is not None:
        return unet_init, ctx.syncnet_state, f"frozen SyncNet for the sync loss: {ctx.syncnet_state_note}"
    torch.manual_seed(ctx.args.seed + 1)
    return unet_init, SyncNet(ctx.asr, ctx.preset.width).state_dict(), (
        "frozen SyncNet for the sync loss: randomly initialised (its weights do not change the speed; "
        "run the syncnet stage too to use briefly trained ones)")


def unet_task(ctx: Context, speed: Speed, data: FrameData, vgg: dict, unet_init: dict, syncnet_init: dict,
              dist: Distributed = Distributed()) -> UNetTask:
    """The UNet task of training with L1 + VGG19 + sync, built the variant's way."""
    from synctalk.losses import PerceptualLoss

    model = build_unet(ctx.asr, ctx.preset.width)
    model.load_state_dict(unet_init)
    critic = SyncNet(ctx.asr, ctx.preset.width)
    critic.load_state_dict(syncnet_init)
    return UNetTask(model, data, ctx.train_idx, ctx.val_idx, perceptual=PerceptualLoss(state_dict=vgg),
                    syncnet=critic, device=ctx.device, speed=speed, dist=dist, seed=ctx.args.seed,
                    run_numbers={"width": ctx.preset.width})


def profile_steps(run: Callable[[], Any], device: Any, top: int) -> list[dict]:
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


def timed_repeats(repeats: int, seed: int, run: Callable[[Any], dict]) -> tuple[list[dict], dict]:
    """`run(generator=g)` `repeats` times (g seeded seed, seed + 1, …): the runs, and their median
    samples/s with every repeat's, for a result row."""
    runs = [run(generator=torch.Generator().manual_seed(seed + r)) for r in range(repeats)]
    rates = [float(r["samples_per_s"]) for r in runs]
    return runs, {"samples_per_s": round(common.median(rates), 3), "repeats": [round(x, 3) for x in rates]}


def train_samples(task: UNetTask, steps: int, generator: torch.Generator) -> dict[str, float]:
    """`steps` training steps of the task (no warm-up left out); the loss is read back once, at the end."""
    task.train_mode()
    parts, seen = None, 0
    common.sync(task.device)
    t0 = time.perf_counter()
    for batch, b in task.random_batches(steps, generator):
        parts = task.step(batch)
        seen += b
    common.sync(task.device)
    last = float(parts[0]) if parts is not None else float("nan")
    return {"samples": seen, "steps": steps, "seconds": round(time.perf_counter() - t0, 3), "last_loss": last}


# ---------------------------------------------------------------- stage: UNet training


def bench_unet(ctx: Context) -> tuple[dict, list[str]]:
    """UNet training samples/s (plain vs fast) and held-out L1 after the same number of samples."""
    args, p, dev = ctx.args, ctx.preset, ctx.device
    notes: list[str] = []
    vgg, vgg_note = vgg_state(ctx)
    notes.append(vgg_note)
    unet_init, syncnet_init, syncnet_note = unet_initial_weights(ctx)
    notes.append(syncnet_note)
    steps = args.steps or p.steps
    repeats = args.repeats or p.repeats
    quality = args.quality_samples or p.quality_samples
    eval_data = None
    results: dict[str, dict] = {}
    for v in variants(ctx, p.unet_batch_plain, args.batch or p.unet_batch_fast, UNetTask.base_batch):
        s = v.speed
        common.say(ctx, f"[unet] {v.name}: batch {s.batch_size}, amp {s.amp}, channels_last {s.channels_last}, "
                        f"cache on device {s.cache_on_device}, compile {s.compile}, CUDA graphs {s.cuda_graphs}, "
                        f"lr {s.lr:.3g}")
        common.free(dev)
        common.set_backends(dev, fast=v.name != "plain")
        common.reset_peak(dev)
        data = frame_data(ctx, s)
        if eval_data is None:
            eval_data = data if not s.cache_on_device else frame_data(ctx, replace(s, cache_on_device=False,
                                                                                   channels_last=False))
        task = unet_task(ctx, s, data, vgg, unet_init, syncnet_init)
        runs, row = timed_repeats(repeats, args.seed + 100, functools.partial(time_steps, task, steps))
        row.update({"timed_steps": steps, **v.describe(), "train_loss": float(runs[-1].get("loss", float("nan")))})
        if args.profile and v.name == "fast":
            row["profile"] = profile_steps(functools.partial(
                time_steps, task, max(1, min(steps, 5)), torch.Generator().manual_seed(args.seed + 99)), dev,
                args.profile)
            notes.append("profile of the fast UNet step (kernels by device time on a GPU, operators by CPU time "
                         "otherwise): " + "; ".join(f"{r['op']} {r['share']:.0%}" for r in row["profile"][:8]))

        # the same number of training samples from the same initial weights, then the held-out score
        if ctx.val_idx is not None and len(ctx.val_idx):
            task.model.load_state_dict(unet_init)
            task.optimizer = make_adam(task.model.parameters(), s.lr, dev)
            q = train_samples(task, max(1, int(round(quality / s.batch_size))),
                              torch.Generator().manual_seed(args.seed + 7))
            m = evaluate_unet(task.model, eval_data, ctx.val_idx, ctx.train_idx, device=dev, amp="none",
                              batch_size=16, seed=args.seed)
            row.update({"quality_samples": q["samples"], "quality_steps": q["steps"],
                        "quality_train_seconds": q["seconds"], "quality_last_loss": q["last_loss"],
                        "val_l1": m.get("val_l1"), "val_psnr": m.get("val_psnr")})
            if v.name == "fast":
                ctx.unet_state = {k: t.detach().cpu().clone() for k, t in unwrap(task.model).state_dict().items()}
                ctx.unet_state_note = f"UNet weights after {row['quality_samples']} training samples of the fast variant"
        row["peak_gpu_mib"] = common.peak_mib(dev)
        results[v.name] = row
        del task, data
    if ctx.val_idx is not None and len(ctx.val_idx) and eval_data is not None:
        model = build_unet(ctx.asr, p.width)
        model.load_state_dict(unet_init)
        m0 = evaluate_unet(model.to(dev), eval_data, ctx.val_idx, ctx.train_idx, device=dev, amp="none",
                           batch_size=16, seed=args.seed)
        for row in results.values():
            row["val_l1_init"] = m0.get("val_l1")
        notes.append(f"held-out L1 on the last {len(ctx.val_idx)} frames after the same number of training samples "
                     f"from the same initial weights (fp32 evaluation); before training: "
                     f"{m0.get('val_l1', float('nan')):.4f}")
    if "plain" in results and "fast" in results and results["plain"]["samples_per_s"] > 0:
        results["fast"]["speedup"] = round(results["fast"]["samples_per_s"] / results["plain"]["samples_per_s"], 2)
    common.set_backends(dev, fast=False)
    return results, notes


# ---------------------------------------------------------------- stage: SyncNet training


def bench_syncnet(ctx: Context) -> tuple[dict, list[str]]:
    """SyncNet training samples/s, plain vs fast path."""
    args, p, dev = ctx.args, ctx.preset, ctx.device
    steps = args.steps or p.steps
    repeats = args.repeats or p.repeats
    torch.manual_seed(args.seed + 1)
    init = SyncNet(ctx.asr, p.width).state_dict()
    results: dict[str, dict] = {}
    for v in variants(ctx, p.syncnet_batch_plain, args.syncnet_batch or p.syncnet_batch_fast, SyncNetTask.base_batch):
        s = v.speed
        common.say(ctx, f"[syncnet] {v.name}: batch {s.batch_size}, amp {s.amp}, channels_last {s.channels_last}, "
                        f"cache on device {s.cache_on_device}, compile {s.compile}, CUDA graphs {s.cuda_graphs}")
        common.free(dev)
        common.set_backends(dev, fast=v.name != "plain")
        common.reset_peak(dev)
        model = SyncNet(ctx.asr, p.width)
        model.load_state_dict(init)
        task = SyncNetTask(model, frame_data(ctx, s), ctx.train_idx, ctx.val_idx, device=dev, speed=s,
                           seed=args.seed)
        runs, row = timed_repeats(repeats, args.seed + 200, functools.partial(time_steps, task, steps))
        loss = float(runs[-1].get("loss", float("nan")))
        results[v.name] = {**row, "timed_steps": steps, **v.describe(), "train_loss": loss,
                           "peak_gpu_mib": common.peak_mib(dev)}
        if v.name == "fast" and math.isfinite(loss):
            # every timed step trained it: hand it to the UNet stage as its frozen critic
            trained = (steps + 1) * repeats * s.batch_size
            ctx.syncnet_state = {k: t.detach().cpu().clone() for k, t in unwrap(task.model).state_dict().items()}
            ctx.syncnet_state_note = f"the SyncNet stage's fast variant after ~{trained} training samples"
        del task, model
    if results.get("plain", {}).get("samples_per_s", 0) > 0 and "fast" in results:
        results["fast"]["speedup"] = round(results["fast"]["samples_per_s"] / results["plain"]["samples_per_s"], 2)
    common.set_backends(dev, fast=False)
    return results, []


# ---------------------------------------------------------------- stage: UNet training on several processes


def unet_rank_worker(ctx: Context) -> int:
    """One torchrun process of the `gpus` stage: the fast UNet step under DistributedDataParallel.

    Every rank times the same number of steps of its own random frames; rank 0 writes the summed
    rate (and the slowest rank's time) to --rank_out.
    """
    from pathlib import Path

    args, p = ctx.args, ctx.preset
    dist = Distributed.from_env()
    dev = dist.start(args.device)
    ctx.device = dev
    try:
        common.set_backends(dev, fast=True)
        fast = variants(ctx, p.unet_batch_plain, args.batch or p.unet_batch_fast, UNetTask.base_batch)[1].speed
        on_gpu = dev.type == "cuda"  # the CPU (gloo) run keeps the plain memory layout
        s = replace(fast, device=str(dev), channels_last=on_gpu, cache_on_device=on_gpu, cuda_graphs=False,
                    lr=scaled_lr(args.lr, fast.batch_size * dist.world_size, UNetTask.base_batch, args.lr_scaling))
        vgg, _ = vgg_state(ctx)
        unet_init, syncnet_init, _ = unet_initial_weights(ctx)
        task = unet_task(ctx, s, frame_data(ctx, s), vgg, unet_init, syncnet_init, dist=dist)
        common.reset_peak(dev)
        steps = args.steps or p.steps

        def timed(generator: Any) -> dict:
            out = time_steps(task, steps, generator)
            return dist.reduce_metrics({"samples_per_s": float(out["samples_per_s"]), "seconds": float(out["seconds"])})

        runs, row = timed_repeats(args.repeats or p.repeats, args.seed + 100 + 1000 * dist.rank, timed)
        peak = common.peak_mib(dev)
        if dist.is_main:
            from synctalk.fileio import write_json_atomic

            write_json_atomic(Path(args.rank_out), {
                "processes": dist.world_size, **row, "seconds": [round(r["seconds"], 3) for r in runs],
                "timed_steps": steps, "batch_per_process": s.batch_size, "global_batch": s.batch_size * dist.world_size,
                "amp": s.amp, "channels_last": s.channels_last, "compile": s.compile, "lr": s.lr,
                "peak_gpu_mib": peak,  # rank 0's
                "backend": ("nccl" if on_gpu else "gloo") if dist.enabled else None})
        dist.barrier()
    finally:
        dist.stop()
    return 0


def bench_gpus(ctx: Context) -> tuple[dict, list[str]]:
    """The fast UNet path on 1 process and on --gpus N processes launched by torchrun; the scaling."""
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
        common.say(ctx, f"[gpus] {k} process(es): {' '.join(cmd[2:6])} …")
        proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
            raise RuntimeError(f"the {k}-process run failed (exit {proc.returncode}):\n" + "\n".join(tail))
        results[f"{k} process" + ("es" if k > 1 else "")] = json.loads(out.read_text())
    one, many = results.get("1 process"), results.get(f"{n} processes")
    if one and many and one["samples_per_s"] > 0:
        many["scaling"] = round(many["samples_per_s"] / one["samples_per_s"], 3)
    return results, notes
