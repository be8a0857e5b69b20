"""Training: the per-person SyncNet critic and the UNet-328 generator, through one loop.

    config    what a run is asked to do (dataclasses → the flags of train-syncnet / train-unet; config.json)
    loop      the one training loop (resume, epochs, validation, checkpoints, state, TensorBoard) and Task
    syncnet   SyncNetTask and the SyncNet's own pieces (step, validation, reuse, loading)
    unet      UNetTask and the UNet's own pieces (losses, step, validation, previews)
    runtime   what both share at run time (DDP, precision, compile, optimizer, random states)
    checkpoint  the checkpoint files
    commands  the command lines: train-syncnet, train-unet and the seed's `train` / scripts/train_328.py

The run-time helpers are re-exported here lazily, so importing the package (for `load_run_config`,
or to build a parser) does not import torch.
"""

from __future__ import annotations

from typing import Any

_RUNTIME = ("Distributed", "autocast", "batches", "begin_step", "check_finite", "configure_backends",
            "load_optimizer_state", "make_adam", "make_scaler", "maybe_compile", "prepare_module",
            "restore_rng_state", "rng_state", "scaled_lr", "synchronize", "use_graphs")


def __getattr__(name: str) -> Any:
    if name in _RUNTIME:
        from . import runtime

        return getattr(runtime, name)
    if name == "load_run_config":
        from .config import load_run_config

        return load_run_config
    raise AttributeError(f"module 'synctalk.training' has no attribute {name!r}")
