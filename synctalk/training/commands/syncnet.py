"""`synctalk train-syncnet`: train (or resume, or skip when done) the person's SyncNet, or reuse one."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping

from ...errors import SyncTalkError
from ..config import SyncNetConfig, add_config_arguments, explicit_options
from . import start_run

COMMAND = "train-syncnet"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `synctalk train-syncnet` (from SyncNetConfig)."""
    add_config_arguments(p, SyncNetConfig)


def run(args: argparse.Namespace) -> int:
    """Entry point of `synctalk train-syncnet`."""
    return run_options(explicit_options(args, SyncNetConfig))


def run_options(explicit: Mapping[str, Any]) -> int:
    """Run with the options typed on a command line (as add_config_arguments leaves them)."""
    if explicit.get("reuse"):
        return _reuse(explicit)
    return start_run(COMMAND, SyncNetConfig, explicit, _train)


def _train(cfg: SyncNetConfig, dist: Any) -> int:
    from ..loop import run_training
    from ..syncnet import SyncNetTask

    result = run_training(SyncNetTask, cfg, dist)
    if result.trained_epochs:
        dist.log(f"next: synctalk train-unet --name {cfg.person()[1]}")
    return 0


def _reuse(explicit: Mapping[str, Any]) -> int:
    """Record another SyncNet checkpoint as this person's (its audio features checked); trains nothing."""
    from ...data import resolve_asr
    from ...layout import dataset_layout
    from ..config import merge_config
    from ..syncnet import register_reused_syncnet

    cfg = merge_config(SyncNetConfig, explicit)
    base, name = cfg.person()
    layout = dataset_layout(base, name)
    if not layout.root.is_dir():
        raise SyncTalkError(f"dataset folder {layout.root} not found: preprocess {name} first")
    from ...device import resolve_device
    from ..unet import syncnet_gate

    asr = resolve_asr(layout, cfg.asr)
    sec = register_reused_syncnet(layout, cfg.reuse, asr, resolve_device(cfg.device))
    passes, reading = syncnet_gate(sec["best_metrics"])
    print(f"SyncNet step of {name} satisfied by {Path(cfg.reuse).resolve()} ({asr}); on {name}'s held-out tail "
          f"it reaches {reading}" + ("" if passes else f": too weak to judge {name}'s mouth, so `--syncnet auto` "
                                                    f"trains the UNet without it"), flush=True)
    return 0
