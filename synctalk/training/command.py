"""`synctalk train` and scripts/train_328.py: the seed's flags, then one call into the loops.

    --train_syncnet            train (or resume, or skip when done) the person's SyncNet, then stop
    (no --train_syncnet)       train (or resume, or skip when done) the person's UNet-328
    --syncnet_checkpoint_path  satisfy the person's SyncNet step with an existing SyncNet file

A run resumes by itself from its checkpoint_latest.pth (as the seed did); --continue_training says
so explicitly, --restart starts over.

Several GPUs: `--gpus N` starts N processes through torchrun (one GPU each, DistributedDataParallel),
or start them yourself with `torchrun --nproc_per_node N scripts/train_328.py ...` (several nodes:
torchrun's --nnodes/--node_rank/--rdzv_* flags). --batchsize is per process; the effective batch is
N × batchsize, and --lr_scaling scales --lr by that global batch.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import SyncTalkError

GRAPHS_ONE_GPU = "--cuda_graphs trains on one GPU: drop it for a run on several (--gpus, torchrun)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `synctalk train` / scripts/train_328.py."""
    from ..audio.registry import ASR_MODELS

    g = p.add_argument_group("what to train")
    g.add_argument("--name", help="person name: dataset/<name>/, checkpoint/<name>/")
    g.add_argument("--dataset_dir", default=None,
                   help="folder holding dataset/<name>/ (default 'dataset'); without --name, the person's folder itself")
    g.add_argument("--checkpoint_dir", default="checkpoint", help="base checkpoint folder (default 'checkpoint')")
    g.add_argument("--save_dir", default=None, help="UNet checkpoint folder (default <checkpoint_dir>/<name>)")
    g.add_argument("--asr", default=None, choices=ASR_MODELS, help="audio features (default: the dataset's)")
    g.add_argument("--width", default=None, choices=("full", "mobile", "tiny"),
                   help="network width (default full, or the resumed run's)")
    g.add_argument("--train_syncnet", action="store_true", help="train the person's SyncNet (and stop there)")
    g.add_argument("--syncnet_checkpoint_path", default=None,
                   help="an existing SyncNet checkpoint that satisfies this person's SyncNet step (reuse)")
    g.add_argument("--use_syncnet", action="store_true",
                   help="UNet: add the sync loss from the person's SyncNet (default: when it is trained)")
    g.add_argument("--no_syncnet", action="store_true", help="UNet: train without the sync loss")
    g.add_argument("--syncnet_checkpoint", default=None, help="UNet: the SyncNet checkpoint for the sync loss")

    g = p.add_argument_group("how long and how fast")
    g.add_argument("--epochs", "--num_epochs", dest="epochs", type=int, default=100,
                   help="total epochs (a resumed run trains up to this many; default 100)")
    g.add_argument("--batchsize", "--batch_size", dest="batchsize", type=int, default=None,
                   help="batch size per process (default 8 for the UNet, 16 for the SyncNet); "
                        "with N GPUs the effective batch is N × batchsize")
    g.add_argument("--lr", type=float, default=0.001, help="learning rate (default 0.001)")
    g.add_argument("--syncnet_pairs_per_epoch", type=int, default=8192,
                   help="SyncNet: pairs drawn per epoch at least (short videos repeat frames; default 8192)")
    g.add_argument("--syncnet_hard_negatives", type=float, default=0.5,
                   help="SyncNet: share of negatives whose audio is 2-15 frames from the face (default 0.5)")
    g.add_argument("--syncnet_face_frames", type=int, default=None,
                   help="SyncNet: consecutive face crops it sees, odd (default 1; a resumed run keeps its own)")
    g.add_argument("--syncnet_audio_context", type=int, default=None,
                   help="SyncNet, log-mel only: 10 ms steps of sound around the frame it hears (0: the whole window)")
    g.add_argument("--syncnet_augment", action="store_true",
                   help="SyncNet: jitter the training pairs (shift/zoom/flip/colour, a masked mel band); slows the "
                        "first epochs, meant for videos of several minutes")
    g.add_argument("--lr_scaling", default="none", choices=("none", "linear", "sqrt"),
                   help="scale --lr for large batches: linear → lr × B/B0, sqrt → lr × sqrt(B/B0), where B is "
                        "the global batch (processes × batchsize) and B0 the default batch (8 UNet, 16 SyncNet)")
    g.add_argument("--continue_training", action="store_true", help="continue from checkpoint_latest.pth")
    g.add_argument("--restart", action="store_true", help="discard this run's checkpoints and start over")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 … (default auto)")
    g.add_argument("--gpu", default=None, help="accepted for compatibility: choose the GPU with CUDA_VISIBLE_DEVICES")
    g.add_argument("--gpus", type=int, default=1,
                   help="train on N GPUs (N processes started through torchrun, data-parallel; default 1); "
                        "with --device cpu, N CPU processes")
    g.add_argument("--sync_bn", action="store_true",
                   help="several GPUs: SyncBatchNorm (batch statistics over all GPUs) instead of rank 0's")
    g.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "none"),
                   help="mixed precision (auto: bf16 on a GPU, none on the CPU)")
    g.add_argument("--channels_last", action="store_true", help="NHWC memory format (faster convolutions on GPUs)")
    g.add_argument("--compile", action="store_true", help="torch.compile the networks")
    g.add_argument("--cuda_graphs", action="store_true",
                   help="with --compile (implied), on one GPU: replay each training step as recorded CUDA graphs "
                        "(removes the host's launch time, which bounds batches of 32 and less)")
    g.add_argument("--cache_on_device", default="auto", choices=("auto", "yes", "no"),
                   help="keep the uint8 crop cache on the GPU (auto: when it fits)")
    g.add_argument("--num_workers", type=int, default=4, help="threads that build the crop cache")
    g.add_argument("--log_every", type=int, default=25, help="steps between loss read-backs (progress bar)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no_progress", action="store_true", help="no progress bars")

    g = p.add_argument_group("losses, validation, outputs")
    g.add_argument("--perceptual", default="vgg19", choices=("vgg19", "none"),
                   help="perceptual loss (vgg19 needs its weights; none trains without it)")
    g.add_argument("--models_dir", default=None, help="where model weights (VGG19) are looked for first")
    g.add_argument("--l1_weight", type=float, default=1.0)
    g.add_argument("--perceptual_weight", type=float, default=0.01)
    g.add_argument("--sync_weight", type=float, default=10.0)
    g.add_argument("--mask", default=None,
                   help="mouth mask x0,y0,x1,y1 in the 320 crop, end exclusive (default 5,5,315,310)")
    g.add_argument("--val_fraction", type=float, default=0.1, help="held-out tail of the video (default 0.1)")
    g.add_argument("--save_interval", type=int, default=1, help="write <epoch>.pth every this many epochs")
    g.add_argument("--keep_checkpoints", type=int, default=3, help="how many <epoch>.pth files to keep")
    g.add_argument("--see_res", action="store_true", help="write a preview PNG per epoch (masked | predicted | real)")


def resolve_person(name: str | None, dataset_dir: str | None) -> tuple[Path, str]:
    """(dataset base folder, person name) from --name / --dataset_dir (either the base or the person's folder)."""
    from ..layout import validate_name

    if name:
        validate_name(name)
        base = Path(dataset_dir) if dataset_dir else Path("dataset")
        # the seed passed the person's own folder as --dataset_dir
        if not (base / name).is_dir() and base.name == name and base.is_dir():
            base = base.parent
        return base, name
    if dataset_dir:
        person = Path(dataset_dir)
        return person.parent, validate_name(person.resolve().name)
    raise SyncTalkError("--name is required (or --dataset_dir pointing at the person's dataset folder)")


def inside_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets its variables)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or ("LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ)


def forwarded_argv(args: argparse.Namespace, drop: tuple[str, ...] = ("gpus",)) -> list[str]:
    """The `synctalk train` flags that reproduce `args` (those that differ from their defaults)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    argv: list[str] = []
    for action in parser._actions:  # argparse keeps no public list of a parser's options
        if not action.option_strings or action.dest in drop or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if value == action.default:
            continue
        flag = next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])
        if action.nargs == 0:  # store_true
            argv.append(flag)
        else:
            argv += [flag, str(value)]
    return argv


def torchrun_command(args: argparse.Namespace, nproc: int) -> list[str]:
    """The torchrun command line that runs this training on `nproc` processes of this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "synctalk.cli", "train", *forwarded_argv(args)]


def launch_torchrun(args: argparse.Namespace, nproc: int) -> int:
    """Start `nproc` training processes through torchrun and wait for them; returns torchrun's exit code."""
    from ..device import resolve_device

    device = resolve_device(args.device)
    if device.type == "cuda":
        import torch

        visible = torch.cuda.device_count()
        if nproc > visible:
            raise SyncTalkError(
                f"--gpus {nproc}, but torch sees {visible} GPU(s) "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
            )
    elif args.device in (None, "", "auto"):
        raise SyncTalkError(f"--gpus {nproc}, but torch sees no GPU; pass --device cpu to run {nproc} CPU processes")
    cmd = torchrun_command(args, nproc)
    env = dict(os.environ)
    env.setdefault("NCCL_NVLS_ENABLE", "0")  # never NVLink multicast (see Distributed.start)
    root = str(Path(__file__).resolve().parents[2])  # synctalk/ and unet_328/ live here
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    print(f"starting {nproc} training processes: {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # the terminal's Ctrl-C reached torchrun and its workers too: let them stop, then make sure
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()
        raise


def run(args: argparse.Namespace) -> int:
    """Entry point of `synctalk train` (with --gpus N > 1 outside torchrun: starts N processes through it)."""
    from ..device import tune_cpu_allocator
    from . import Distributed

    if str(args.device).startswith("cpu"):
        tune_cpu_allocator()  # reuse big activation buffers instead of page-faulting them in every step
    base, name = resolve_person(args.name, args.dataset_dir)
    if args.epochs < 1:
        raise SyncTalkError(f"--epochs must be at least 1, got {args.epochs}")
    if args.batchsize is not None and args.batchsize < 2:
        raise SyncTalkError(f"--batchsize must be at least 2 (BatchNorm), got {args.batchsize}")
    if args.use_syncnet and args.no_syncnet:
        raise SyncTalkError("--use_syncnet and --no_syncnet contradict each other")
    gpus = getattr(args, "gpus", 1) or 1
    if gpus < 1:
        raise SyncTalkError(f"--gpus must be at least 1, got {gpus}")
    if args.cuda_graphs and gpus > 1:
        raise SyncTalkError(GRAPHS_ONE_GPU)
    if gpus > 1 and not inside_torchrun():
        return launch_torchrun(args, gpus)
    dist = Distributed.from_env()
    try:
        return _train(args, base, name, dist)
    finally:
        dist.stop()


def _train(args: argparse.Namespace, base: Path, name: str, dist: Any) -> int:
    """The training this process does (one of several ranks under torchrun, or the only one)."""
    from ..data import parse_mask, resolve_asr
    from ..layout import dataset_layout
    from . import RunOptions, scaled_lr
    from .syncnet import BASE_BATCH as SYNCNET_BATCH
    from .syncnet import SyncNetTrainConfig, register_reused_syncnet, train_syncnet
    from .unet import BASE_BATCH as UNET_BATCH
    from .unet import UNetTrainConfig, train_unet

    gpus = getattr(args, "gpus", 1) or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size))
    if gpus > 1 and gpus != local:
        dist.log(f"note: --gpus {gpus}, but torchrun started {local} processes on this node; using those")
    if dist.enabled:
        dist.start(args.device)  # one process group for the whole command (the loops reuse it)
    if args.cuda_graphs and dist.enabled:
        raise SyncTalkError(GRAPHS_ONE_GPU)
    run_opts = RunOptions(device=args.device, amp=args.amp, channels_last=args.channels_last,
                          compile=args.compile or args.cuda_graphs, cuda_graphs=args.cuda_graphs,
                          cache_on_device=args.cache_on_device, log_every=args.log_every,
                          progress=not args.no_progress, seed=args.seed, workers=args.num_workers,
                          sync_bn=getattr(args, "sync_bn", False), dist=dist)
    layout = dataset_layout(base, name)

    if args.syncnet_checkpoint_path:
        if not layout.root.is_dir():
            raise SyncTalkError(f"dataset folder {layout.root} not found: preprocess {name} first")
        asr = resolve_asr(layout, args.asr)
        if dist.is_main:
            register_reused_syncnet(layout, args.syncnet_checkpoint_path, asr)
        dist.barrier()  # the state file records the reuse before any rank reads it
        dist.log(f"SyncNet step of {name} satisfied by {Path(args.syncnet_checkpoint_path).resolve()} ({asr})")
        if args.train_syncnet:
            return 0

    # --lr_scaling works on the global batch: every process takes --batchsize samples per step
    if args.train_syncnet:
        batch = args.batchsize or SYNCNET_BATCH
        lr = scaled_lr(args.lr, batch * dist.world_size, SYNCNET_BATCH, args.lr_scaling)
        cfg = SyncNetTrainConfig(
            name=name, dataset_dir=base, checkpoint_dir=Path(args.checkpoint_dir), asr=args.asr, width=args.width,
            epochs=args.epochs, batch_size=batch, lr=lr,
            val_fraction=args.val_fraction, keep_checkpoints=args.keep_checkpoints,
            save_interval=args.save_interval, restart=args.restart, run=run_opts,
            min_pairs_per_epoch=args.syncnet_pairs_per_epoch,
            hard_negatives=args.syncnet_hard_negatives, augment=args.syncnet_augment,
            face_frames=args.syncnet_face_frames, audio_context=args.syncnet_audio_context,
        )
        result = train_syncnet(cfg)
        if result.trained_epochs:
            dist.log(f"next: python scripts/train_328.py --name {name} --use_syncnet")
        return 0

    batch = args.batchsize or UNET_BATCH
    use_syncnet = True if (args.use_syncnet or args.syncnet_checkpoint or args.syncnet_checkpoint_path) else (
        False if args.no_syncnet else None)
    cfg = UNetTrainConfig(
        name=name, dataset_dir=base, checkpoint_dir=Path(args.checkpoint_dir),
        save_dir=Path(args.save_dir) if args.save_dir else None, asr=args.asr, width=args.width,
        epochs=args.epochs, batch_size=batch,
        lr=scaled_lr(args.lr, batch * dist.world_size, UNET_BATCH, args.lr_scaling),
        use_syncnet=use_syncnet,
        syncnet_checkpoint=Path(args.syncnet_checkpoint) if args.syncnet_checkpoint else None,
        perceptual=args.perceptual, models_dir=Path(args.models_dir) if args.models_dir else None,
        l1_weight=args.l1_weight, perceptual_weight=args.perceptual_weight, sync_weight=args.sync_weight,
        mask=parse_mask(args.mask) if args.mask else None, val_fraction=args.val_fraction,
        keep_checkpoints=args.keep_checkpoints, save_interval=args.save_interval, see_res=args.see_res,
        continue_training=args.continue_training, restart=args.restart, run=run_opts,
    )
    train_unet(cfg)
    return 0
