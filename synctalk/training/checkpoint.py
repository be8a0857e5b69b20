"""Checkpoint files: one dict per file, written atomically, checked when read.

A checkpoint is {kind: "syncnet"|"unet", model, optimizer, scaler, epoch, asr, config, metrics,
best, rng, run_config}; `epoch` counts finished epochs. A run's folder holds checkpoint_latest.pth
(the resume point, the only file with the optimizer and random states, plus `step` when a run was
stopped mid-epoch and `discriminator` when the UNet trains with its mouth critic), checkpoint_best.pth
(by the run's validation metric) and `<epoch>.pth` (the newest few kept), both model-only, and
config.json (synctalk.training.config).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import SyncTalkError
from ..fileio import cleanup_temporaries, torch_save_atomic
from ..layout import CheckpointLayout

KINDS = ("syncnet", "unet")
_EPOCH_FILE = re.compile(r"^(\d+)\.pth$")


def epoch_payload(kind: str, model: Any, optimizer: Any, scaler: Any, epoch: int, asr: str, config: dict[str, Any],
                  metrics: dict[str, Any], best: dict[str, Any], rng: dict[str, Any]) -> dict[str, Any]:
    """The one checkpoint dict both trainers write after an epoch (the model unwrapped)."""
    return {"kind": kind, "model": module_state(model), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(), "epoch": epoch, "asr": asr, "config": config,
            "metrics": metrics, "best": best, "rng": rng}


# what only a resume needs: kept in checkpoint_latest.pth alone (best and <epoch>.pth hold the model)
RESUME_ONLY = ("optimizer", "scaler", "rng", "step", "discriminator")


def model_only(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload without the optimizer state and random states (about a third of a full file)."""
    return {k: v for k, v in payload.items() if k not in RESUME_ONLY}


def write_epoch(run_dir: Path, payload: dict[str, Any], *, final_epoch: int, save_interval: int, keep: int,
                improved: bool, latest: bool = True) -> list[str]:
    """After an epoch: latest (the full resume point) when `latest`, best when it improved and `<epoch>.pth`
    at the interval and at the end (both model-only); old epoch files pruned. Returns the epoch files kept
    (absolute paths, for the state file)."""
    epoch = int(payload["epoch"])
    slim = model_only(payload)
    if epoch % max(save_interval, 1) == 0 or epoch == final_epoch:
        save_checkpoint(CheckpointLayout.epoch(run_dir, epoch), slim)
    if improved:
        save_checkpoint(best_path(run_dir), slim)
    if latest:
        save_checkpoint(latest_path(run_dir), payload)
    prune_epoch_files(run_dir, keep)
    return [str(p.resolve()) for _e, p in epoch_files(run_dir)]


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a checkpoint atomically (a kill leaves the old file or the new one)."""
    if payload.get("kind") not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}")
    path = Path(path)
    torch_save_atomic(payload, path)
    return path


def load_checkpoint(path: str | Path, kind: str | None = None, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint and check that it is a synctalk checkpoint of `kind`."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise SyncTalkError(f"checkpoint not found: {path}")
    what = f"a {kind} checkpoint" if kind else "a synctalk checkpoint"
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # any unreadable file is "not a checkpoint", whatever the unpickler raised
        raise SyncTalkError(f"{path} is not {what} (it could not be read: {str(exc).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or "kind" not in ckpt or "model" not in ckpt:
        raise SyncTalkError(
            f"{path} is not {what}: it has no 'kind'/'model' entries (a bare state dict or another program's file)"
        )
    if kind is not None and ckpt["kind"] != kind:
        raise SyncTalkError(f"{path} is a {ckpt['kind']} checkpoint, not {what}")
    return ckpt


def check_asr(ckpt: dict[str, Any], asr: str, path: str | Path, fix: str = "") -> None:
    """Raise when a checkpoint was made for other audio features than `asr`."""
    have = ckpt.get("asr")
    if have != asr:
        raise SyncTalkError(
            f"{path} was trained on {have!r} audio features, but this run uses {asr!r}" + (f"; {fix}" if fix else "")
        )


def epoch_files(directory: str | Path) -> list[tuple[int, Path]]:
    """The `<epoch>.pth` files of a run folder, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _EPOCH_FILE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def prune_epoch_files(directory: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` `<epoch>.pth` files (latest/best are never touched)."""
    if keep <= 0:
        return []
    files = epoch_files(directory)
    removed = []
    for _epoch, p in files[:-keep]:
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def latest_path(directory: str | Path) -> Path:
    """checkpoint_latest.pth of a run folder."""
    return CheckpointLayout.latest(Path(directory))


def best_path(directory: str | Path) -> Path:
    """checkpoint_best.pth of a run folder."""
    return CheckpointLayout.best(Path(directory))


def find_resume(directory: str | Path, kind: str | None, warn: bool = True) -> dict[str, Any] | None:
    """The checkpoint to resume a run from: checkpoint_latest.pth, else the newest intact `<epoch>.pth`.

    A latest file that cannot be read (truncated by a full disk, corrupted) is passed over with a
    warning for the newest epoch file that can; when none can, the first error is raised.
    """
    directory = Path(directory)
    cleanup_temporaries(directory)  # a killed writer's leftovers
    candidates = [latest_path(directory)] + [p for _e, p in reversed(epoch_files(directory))]
    first_error: SyncTalkError | None = None
    for p in candidates:
        if not p.is_file():
            continue
        try:
            ckpt = load_checkpoint(p, kind)
        except SyncTalkError as exc:
            first_error = first_error or exc
            if warn:
                print(f"warning: {exc}; trying an older checkpoint of {directory}", flush=True)
            continue
        if first_error is not None and warn:
            lacks = "" if ckpt.get("optimizer") else " (model only: the optimizer starts afresh)"
            print(f"warning: resuming from {p} instead{lacks}", flush=True)
        ckpt["_path"] = str(p)
        return ckpt
    if first_error is not None:
        raise first_error
    return None


def clear_run(directory: str | Path) -> int:
    """Remove a run's checkpoints (for --restart); other files are left alone."""
    directory = Path(directory)
    n = 0
    for p in [latest_path(directory), best_path(directory)] + [p for _e, p in epoch_files(directory)]:
        if p.exists():
            p.unlink()
            n += 1
    return n


def restart_or_resume(run_dir: Path, kind: str, *, restart: bool, state: Any, section: str, dist: Any,
                      what: str) -> dict[str, Any] | None:
    """The checkpoint a run resumes from, or None for a fresh start.

    With --restart, rank 0 first removes the run's checkpoints and resets its section of the state
    file; every rank waits for that before any of them looks for a checkpoint.
    """
    if restart and dist.is_main:
        n = clear_run(run_dir)
        if n:
            print(f"--restart: removed {n} old {what} checkpoints from {run_dir}")
        state.reset(section)
    dist.barrier()
    return None if restart else find_resume(run_dir, kind)


def module_state(model: Any) -> dict[str, Any]:
    """The state dict of a module, unwrapped from torch.compile / DistributedDataParallel."""
    return unwrap(model).state_dict()


def unwrap(model: Any) -> Any:
    """The plain module inside torch.compile / DistributedDataParallel wrappers."""
    inner = getattr(model, "_orig_mod", model)
    if type(inner).__name__ == "DistributedDataParallel":
        inner = inner.module
    return getattr(inner, "_orig_mod", inner)
