"""Speed benchmark: prepare a person from a video, then measure each stage on this machine.

Stages (pick with --only):

* unet      UNet-328 training samples/s with the training losses (L1 + VGG19 conv3_3 perceptual +
            sync loss from a frozen SyncNet), timing the step of the task training runs
            (synctalk.training.unet.UNetTask.step): the plain fp32 path (batch 8, crops read from
            the memory-mapped cache) against the fast path (uint8 crop cache resident on the device,
            masking on the device, bf16 autocast, channels_last, optional torch.compile (--compile)
            and CUDA graphs (--cuda_graphs, one process), a large batch with a scaled learning rate,
            the loss read back only at the end); fused Adam on CUDA for both, as in training. Both then train from the same
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
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from .common import (DEFAULT_AUDIO, DEFAULT_MODELS, DEFAULT_STAGES, DEFAULT_VIDEO, PRESETS, PRIMARY, REPO,
                     STAGES, Context, Skip, free, load_data, prepare_person, say)
from .report import finish, machine_info, print_table

__all__ = ["DEFAULT_STAGES", "PRIMARY", "STAGES", "build_parser", "main", "print_table"]

# the stages live by role: training.py (unet, syncnet, gpus), inference.py (render, landmarks, forward)


def _stage_funcs() -> dict[str, Callable[[Context], tuple[dict, list[str]]]]:
    from . import inference, training

    return {"unet": training.bench_unet, "syncnet": training.bench_syncnet, "render": inference.bench_render,
            "landmarks": inference.bench_landmarks, "forward": inference.bench_forward, "gpus": training.bench_gpus}


# order of execution: SyncNet first (its weights become the UNet's critic), the UNet before the render
# (which renders with the UNet's short-trained weights)
ORDER = ("syncnet", "unet", "forward", "render", "landmarks", "gpus")


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
    say(args, f"synctalk speed benchmark ({args.size}) on {report['machine'].get('gpu') or device}; workdir {workdir}")

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
        finish(report, args)
        return 1
    if args.rank_worker:
        from .training import unet_rank_worker

        return unet_rank_worker(ctx)
    info.update(name=layout.name, frames=int(min(len(ctx.crops), len(ctx.features))), train_frames=len(ctx.train_idx),
                held_out_frames=len(ctx.val_idx))
    report["person"] = info
    say(args, f"person {layout.name}: {info['frames']} frames ({info['train_frames']} train / "
               f"{info['held_out_frames']} held out) in {layout.root}")

    failed = False
    for stage in ORDER:
        if stage not in only:
            continue
        say(args, f"── {stage}")
        t0 = time.perf_counter()
        rec: dict[str, Any]
        try:
            results, notes = _stage_funcs()[stage](ctx)
            rec = {"status": "ok", "results": results, "notes": notes}
        except (Skip, SyncTalkError, ImportError) as exc:
            rec = {"status": "skipped", "reason": str(exc), "results": {}, "notes": []}
            say(args, f"   skipped: {exc}")
        except Exception as exc:  # a broken stage is reported, and the others still run
            failed = True
            rec = {"status": "error", "reason": f"{type(exc).__name__}: {exc}", "results": {}, "notes": [],
                   "traceback": traceback.format_exc()}
            print(rec["traceback"], file=sys.stderr)
        rec["stage_seconds"] = round(time.perf_counter() - t0, 2)
        report["stages"][stage] = rec
        for n in rec.get("notes", []):
            say(args, f"   note: {n}")
        free(device)
    report["total_seconds"] = round(time.perf_counter() - t_start, 2)
    finish(report, args)
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


if __name__ == "__main__":  # python -m benchmarks.speed
    sys.exit(main())
