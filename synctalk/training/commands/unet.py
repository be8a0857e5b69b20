"""`synctalk train-unet`: train (or resume, or skip when done) the person's UNet-328."""

from __future__ import annotations

import argparse
from typing import Any, Mapping

from ..config import UNetConfig, add_config_arguments, explicit_options
from . import start_run

COMMAND = "train-unet"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `synctalk train-unet` (from UNetConfig)."""
    add_config_arguments(p, UNetConfig)


def run(args: argparse.Namespace) -> int:
    """Entry point of `synctalk train-unet`."""
    return run_options(explicit_options(args, UNetConfig))


def run_options(explicit: Mapping[str, Any]) -> int:
    """Run with the options typed on a command line (as add_config_arguments leaves them)."""
    return start_run(COMMAND, UNetConfig, explicit, _train)


def _train(cfg: UNetConfig, dist: Any) -> int:
    from ..loop import run_training
    from ..unet import UNetTask

    run_training(UNetTask, cfg, dist)
    return 0
