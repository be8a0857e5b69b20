"""The training command lines: `synctalk train-syncnet`, `synctalk train-unet`, and the seed's `train`.

Each command's flags come from its config dataclass (synctalk.training.config). What the commands
share lives here: checks of the options, the launch of N processes through torchrun (`--gpus N`),
and `start_run`, the one place a training run starts from a command line.

Several GPUs: `--gpus N` starts N processes through torchrun (one GPU each, DistributedDataParallel),
or start them yourself with `torchrun --nproc_per_node N -m synctalk.cli train-unet ...` (several
nodes: torchrun's --nnodes/--node_rank/--rdzv_* flags). --batchsize is per process.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ...errors import SyncTalkError
from ..config import CONFIG_FILE, RunConfig, argv_of, check_ranges, merge_config, saved_options

GRAPHS_ONE_GPU = "--cuda_graphs trains on one GPU: drop it for a run on several (--gpus, torchrun)"


def inside_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets its variables)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or ("LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ)


def torchrun_command(command: str, cls: type, explicit: Mapping[str, Any], nproc: int) -> list[str]:
    """The torchrun command line that runs `synctalk COMMAND` with these options on `nproc` local processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "synctalk.cli", command, *argv_of(explicit, cls, drop=("gpus",))]


def launch_torchrun(command: str, cls: type, explicit: Mapping[str, Any], nproc: int) -> int:
    """Start `nproc` training processes through torchrun and wait for them; returns torchrun's exit code."""
    import torch

    from ...device import resolve_device

    spec = explicit.get("device", "auto")
    device = resolve_device(spec)
    if device.type == "cuda":
        visible = torch.cuda.device_count()
        if nproc > visible:
            raise SyncTalkError(
                f"--gpus {nproc}, but torch sees {visible} GPU(s) "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
            )
    elif spec in (None, "", "auto"):
        raise SyncTalkError(f"--gpus {nproc}, but torch sees no GPU; pass --device cpu to run {nproc} CPU processes")
    cmd = torchrun_command(command, cls, explicit, nproc)
    env = dict(os.environ)
    env.setdefault("NCCL_NVLS_ENABLE", "0")  # never NVLink multicast (see Distributed.start)
    root = str(Path(__file__).resolve().parents[3])  # synctalk/ and unet_328/ live here
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


def check_options(cfg: RunConfig) -> None:
    """The option checks that need no dataset (before any process starts)."""
    cfg.person()
    check_ranges(cfg)
    if cfg.batch_size is not None and cfg.batch_size < 2:
        raise SyncTalkError(f"--batchsize must be at least 2 (BatchNorm), got {cfg.batch_size}")
    if cfg.cuda_graphs == "yes" and cfg.gpus > 1:
        raise SyncTalkError(GRAPHS_ONE_GPU)


def resolve_config(cls: type, explicit: Mapping[str, Any]) -> RunConfig:
    """The run's options: the command line over the run's saved config.json (unless --restart);
    --epochs, when neither gives it, from the person's training frames (`auto_epochs`)."""
    first = merge_config(cls, explicit)
    check_options(first)
    cfg = first
    if not first.restart:
        run_dir = first.run_dir()
        cfg = merge_config(cls, explicit, saved_options(run_dir), source=run_dir / CONFIG_FILE)
    if cfg.epochs is None:
        cfg.epochs, why = cls.auto_epochs(train_frames(cfg))
        if os.environ.get("RANK", "0") == "0":  # once, not from every process of a torchrun
            print(f"--epochs not given: {cfg.epochs} ({why})", flush=True)
    return cfg


def train_frames(cfg: RunConfig) -> int | None:
    """The person's training frames (all but the held-out tail), from the dataset's state file; None
    when it is not preprocessed yet (the run then stops with that error itself)."""
    from ...data.samples import split_indices
    from ...layout import dataset_layout
    from ...state import PREPROCESSING, TrainingState

    try:
        layout = dataset_layout(*cfg.person())
        if not layout.state_file.exists():
            return None
        count = TrainingState(layout.state_file).section(PREPROCESSING).get("frame_count")
        return len(split_indices(int(count), cfg.val_fraction)[0]) if count else None
    except (SyncTalkError, OSError, ValueError, TypeError):
        return None


LOCK_HELD_ENV = "SYNCTALK_RUN_LOCK_HELD"  # set for the processes of a run whose launcher holds its lock


def start_run(command: str, cls: type, explicit: Mapping[str, Any],
              train: Callable[[RunConfig, Any], int]) -> int:
    """Resolve the options, start torchrun for --gpus N, else run `train(cfg, dist)` in this process.

    The single place every training run starts from a command line. One writer per checkpoint
    folder: the launching process (or rank 0 of a torchrun the user started) holds its lock, and a
    second run of the same folder is refused with a message naming the first.
    """
    cfg = resolve_config(cls, explicit)
    if str(cfg.device).startswith("cpu"):
        from ...device import tune_cpu_allocator

        tune_cpu_allocator()  # reuse big activation buffers instead of page-faulting them in every step
    if cfg.quick:
        print(f"--quick: {cls.QUICK_NOTE}", flush=True)
    if cfg.gpus > 1 and not inside_torchrun():
        with _run_lock(cfg):
            os.environ[LOCK_HELD_ENV] = "1"  # the processes torchrun starts inherit it
            try:
                return launch_torchrun(command, cls, explicit, cfg.gpus)
            finally:
                os.environ.pop(LOCK_HELD_ENV, None)
    from ..runtime import Distributed

    dist = Distributed.from_env()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size))
    if cfg.gpus > 1 and cfg.gpus != local:
        dist.log(f"note: --gpus {cfg.gpus}, but torchrun started {local} processes on this node; using those")
    if cfg.cuda_graphs == "yes" and dist.enabled:
        raise SyncTalkError(GRAPHS_ONE_GPU)
    lock = _run_lock(cfg) if dist.is_main and not os.environ.get(LOCK_HELD_ENV) else contextlib.nullcontext()
    with lock:
        try:
            if dist.enabled:
                dist.start(cfg.device)  # one process group for the whole command (the loop reuses it)
            return train(cfg, dist)
        finally:
            dist.stop()


@contextlib.contextmanager
def _run_lock(cfg: RunConfig) -> Iterator[None]:
    """Hold the lock of the run's checkpoint folder (synctalk.locking.hold_lock); a folder made only
    to hold it is removed again when the run wrote nothing there (a refused run leaves no trace)."""
    from ...layout import CheckpointLayout
    from ...locking import hold_lock

    run_dir = Path(cfg.run_dir())
    made = not run_dir.exists()
    try:
        with hold_lock(CheckpointLayout.lock(run_dir), "training"):
            yield
    finally:
        if made:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only when empty
