"""`synctalk train` and scripts/train_328.py: the seed's flags, mapped onto train-syncnet / train-unet.

    --train_syncnet            → train-syncnet (and stop there)
    --syncnet_checkpoint_path  → train-syncnet --reuse PATH, then (without --train_syncnet) train-unet --syncnet PATH
    (neither)                  → train-unet
    --use_syncnet → --syncnet on    --no_syncnet → --syncnet off    --syncnet_checkpoint PATH → --syncnet PATH
    --syncnet_pairs_per_epoch, _hard_negatives, _face_frames, _audio_context, _augment → train-syncnet's flags
    --syncnet_width → train-syncnet --width (the SyncNet's own width; --width sets both networks')

As the seed did, one command line serves both steps (training_328.sh passes the same extra flags to
each): a flag of the other network is left out of the step it does not belong to.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from ...errors import SyncTalkError
from ..config import RunConfig, SyncNetConfig, UNetConfig, add_config_arguments, add_field_argument, config_field

# the seed's spelling of the SyncNet's own flags
SYNCNET_FLAGS = {"pairs_per_epoch": "--syncnet_pairs_per_epoch", "hard_negatives": "--syncnet_hard_negatives",
                 "face_frames": "--syncnet_face_frames", "audio_context": "--syncnet_audio_context",
                 "augment": "--syncnet_augment", "width": "--syncnet_width"}
SEED_SWITCHES = ("train_syncnet", "use_syncnet", "no_syncnet")
SEED_PATHS = ("syncnet_checkpoint_path", "syncnet_checkpoint")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The seed's flags: the shared and UNet flags, the SyncNet's under their seed names, the four critic flags."""
    add_config_arguments(p, UNetConfig)
    g = p.add_argument_group("the seed's flags (synctalk train-syncnet / train-unet are the commands they map to)")
    for name, flag in SYNCNET_FLAGS.items():
        add_field_argument(g, config_field(SyncNetConfig, name), flags=(flag,), dest=f"syncnet__{name}")
    sup = argparse.SUPPRESS
    g.add_argument("--train_syncnet", action="store_true", default=sup, help="train the person's SyncNet (and stop)")
    g.add_argument("--syncnet_checkpoint_path", default=sup,
                   help="an existing SyncNet checkpoint that satisfies this person's SyncNet step (reuse)")
    g.add_argument("--use_syncnet", action="store_true", default=sup,
                   help="UNet: the sync loss from the person's SyncNet, gate or not (= --syncnet on)")
    g.add_argument("--no_syncnet", action="store_true", default=sup, help="UNet: no sync loss (= --syncnet off)")
    g.add_argument("--syncnet_checkpoint", default=sup, help="UNet: this SyncNet for the sync loss (= --syncnet PATH)")


def plan(given: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The commands (name, typed options) that the seed's flags `given` stand for, in order."""
    shared = {f.name for f in fields(RunConfig)}
    unet_own = {f.name for f in fields(UNetConfig)} - shared
    common = {k: v for k, v in given.items() if k in shared}
    steps: list[tuple[str, dict[str, Any]]] = []
    reuse = given.get("syncnet_checkpoint_path")
    if given.get("train_syncnet") or reuse:
        sn = dict(common, **{k: given[f"syncnet__{k}"] for k in SYNCNET_FLAGS if f"syncnet__{k}" in given})
        if reuse:
            sn["reuse"] = reuse
        steps.append(("train-syncnet", sn))
        if given.get("train_syncnet"):
            return steps
    un = dict(common, **{k: v for k, v in given.items() if k in unet_own})
    if given.get("use_syncnet") and given.get("no_syncnet"):
        raise SyncTalkError("--use_syncnet and --no_syncnet contradict each other")
    if given.get("no_syncnet"):
        if given.get("syncnet_checkpoint"):
            raise SyncTalkError("--syncnet_checkpoint given together with --no_syncnet: choose one")
        un["syncnet"] = "off"
    elif given.get("syncnet_checkpoint") or reuse:
        un["syncnet"] = given.get("syncnet_checkpoint") or reuse
    elif given.get("use_syncnet"):
        un["syncnet"] = "on"
    steps.append(("train-unet", un))
    return steps


def run(args: argparse.Namespace) -> int:
    """Entry point of `synctalk train`: each planned command in turn (stops at the first that fails)."""
    from . import syncnet, unet

    modules = {"train-syncnet": syncnet, "train-unet": unet}
    given = {k: v for k, v in vars(args).items() if k != "command"}
    for command, options in plan(given):
        rc = modules[command].run_options(options)
        if rc:
            return rc
    return 0
