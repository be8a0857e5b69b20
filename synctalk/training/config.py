"""What a training run is asked to do: one dataclass per command, flags generated from their fields.

`RunConfig` holds the options every run has (where, how long, how fast); `SyncNetConfig` and
`UNetConfig` add their network's own. Each field's metadata carries its help text (and flag
spelling), so `synctalk train-syncnet --help` and `train-unet --help` are generated from these
classes and list only their own flags.

A run writes its resolved options to `config.json` beside its checkpoints when it starts
(`write_run_config`); the checkpoint holds the same dict under "run_config". A resumed run takes
every option not given again on the command line from there (`merge_config`), and an option that
fixes what the network or its data is (`frozen`) may not change: one clear error names it.

This module imports no torch (the CLI builds the parsers from it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Mapping

from ..errors import SyncTalkError
from ..layout import checkpoint_layout, validate_name

CONFIG_FILE = "config.json"
AUTO_YES_NO = ("auto", "yes", "no")


def opt(default: Any, help: str, *, flags: tuple[str, ...] = (), choices: tuple[str, ...] | None = None,
        type: Any = None, frozen: bool = False, negate: str | None = None, switch: bool = False,
        low: float | None = None, high: float | None = None, open_low: bool = False) -> Any:
    """A config field with its command-line form.

    `flags`: the spellings (default --<field name>); `frozen`: a resumed run must keep it; `negate`:
    a bool field that defaults to True and is switched off by this flag; `switch`: an auto/yes/no
    field that a bare flag sets to yes (`--channels_last` = `--channels_last yes`); `low`/`high`: the
    range a number must lie in (check_ranges), `open_low`: strictly above `low`.
    """
    meta = {"help": help, "flags": flags, "choices": choices, "type": type, "frozen": frozen, "negate": negate,
            "switch": switch, "low": low, "high": high, "open_low": open_low}
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    """Options every training run has: the person, the folders, how long, how fast, what is kept."""

    QUICK: ClassVar[dict[str, Any]] = {}
    QUICK_NOTE: ClassVar[str] = ""

    name: str | None = opt(None, "person name: dataset/<name>/, checkpoint/<name>/")
    dataset_dir: str | None = opt(None, "folder holding dataset/<name>/ (default 'dataset'); without --name, "
                                        "the person's folder itself")
    checkpoint_dir: str = opt("checkpoint", "base checkpoint folder")
    asr: str | None = opt(None, "audio features (default: the dataset's, or the resumed run's)", frozen=True)
    width: str | None = opt(None, "network width (default full, or the resumed run's)",
                            choices=("full", "mobile", "tiny"), frozen=True)
    av_offset: str = opt("auto", "the video's audio/lip offset in frames, positive when the lips move after the "
                                 "sound; frame i then learns from audio window i - N (auto: the offset preprocessing "
                                 "measured, 0 when none)", frozen=True)
    epochs: int | None = opt(None, "total epochs (a resumed run trains up to this many; default: SyncNet 50, UNet "
                                   "as many as show it about 170,000 training frames, 10 to 200: 26 for five minutes "
                                   "of video)", flags=("--epochs", "--num_epochs"), type=int, low=1)
    batch_size: int | None = opt(None, "batch size per process (auto: 32 UNet / 128 SyncNet on a GPU, 8 / 16 on "
                                       "the CPU); with N GPUs the effective batch is N × batchsize",
                                 flags=("--batchsize", "--batch_size"), type=int)
    lr: float = opt(1e-3, "learning rate", low=0, open_low=True)
    lr_scaling: str = opt("none", "scale --lr for large batches: linear → lr × B/B0, sqrt → lr × sqrt(B/B0), B the "
                                  "global batch, B0 the batch the default lr is meant for (8 UNet, 16 SyncNet)",
                          choices=("none", "linear", "sqrt"))
    lr_schedule: str = opt("constant", "learning rate over the epochs: constant, or cosine (from --lr down to "
                                       "a tenth of it at the last epoch)", choices=("constant", "cosine"))
    val_fraction: float = opt(0.1, "held-out tail of the video", low=0, high=0.9)
    quick: bool = opt(False, "a short trial run on a CPU: tiny width, few epochs, small epochs (printed at start)")
    device: str = opt("auto", "auto, cpu, cuda, cuda:1 …")
    gpus: int = opt(1, "train on N GPUs (N processes through torchrun, data-parallel); with --device cpu, N CPU "
                       "processes", low=1)
    sync_bn: bool = opt(False, "several GPUs: SyncBatchNorm (statistics over all GPUs) instead of rank 0's")
    amp: str = opt("auto", "mixed precision (auto: bf16 on a GPU, none on the CPU)",
                   choices=("auto", "bf16", "fp16", "none"))
    channels_last: str = opt("auto", "NHWC memory format (auto: yes on a GPU)", choices=AUTO_YES_NO, switch=True)
    compile: str = opt("auto", "torch.compile the networks (auto: with CUDA graphs on one GPU)", choices=AUTO_YES_NO,
                       switch=True)
    cuda_graphs: str = opt("auto", "on one GPU: replay each compiled training step as recorded CUDA graphs (implies "
                                   "--compile; auto: yes on one GPU)", choices=AUTO_YES_NO, switch=True)
    cache_on_device: str = opt("auto", "keep the uint8 crop cache on the GPU (auto: when it fits)",
                               choices=AUTO_YES_NO)
    num_workers: int = opt(4, "threads that build the crop cache")
    log_every: int = opt(25, "steps between loss read-backs (progress bar)", low=1)
    seed: int = opt(0, "random seed")
    progress: bool = opt(True, "progress bars", negate="--no_progress")
    save_interval: int = opt(1, "write <epoch>.pth every this many epochs", low=1)
    keep_checkpoints: int = opt(3, "how many <epoch>.pth files to keep (model only; the latest holds the optimizer)", low=1)
    continue_training: bool = opt(False, "continue from checkpoint_latest.pth with the run's saved options (a run "
                                         "resumes by itself too)")
    restart: bool = opt(False, "discard this run's checkpoints and start over")

    def person(self) -> tuple[Path, str]:
        """(dataset base folder, person name) from --name / --dataset_dir (the base or the person's folder)."""
        return resolve_person(self.name, self.dataset_dir)

    def run_dir(self) -> Path:
        """The folder of this run's checkpoints and config.json."""
        raise NotImplementedError

    @classmethod
    def auto_epochs(cls, train_frames: int | None) -> tuple[int, str]:
        """--epochs when none is given, for a person with `train_frames` training frames (None: unknown),
        and why, in words."""
        raise NotImplementedError


@dataclass
class SyncNetConfig(RunConfig):
    """`synctalk train-syncnet`: the person's audio–mouth critic."""

    # --quick: a few small epochs of a tiny critic, to try the whole app on a CPU in minutes
    QUICK: ClassVar[dict[str, Any]] = {"width": "tiny", "epochs": 1, "pairs_per_epoch": 128}
    QUICK_NOTE: ClassVar[str] = ("a tiny SyncNet, 1 epoch of at least 128 pairs (a trial, not a usable critic: "
                                 "the UNet then trains without the sync loss)")

    # a SyncNet epoch takes 1-2 s on a GPU: an 84 MB epoch file after each would be most of the writing
    save_interval: int = opt(10, "write <epoch>.pth every this many epochs (and after the last)", low=1)
    reuse: str | None = opt(None, "satisfy this person's SyncNet step with an existing SyncNet checkpoint (its "
                                  "audio features must match) instead of training one")
    pairs_per_epoch: int | None = opt(None, "pairs drawn per epoch at least (short videos repeat frames; auto: 8192 "
                                            "on a GPU, 1024 on the CPU; 0: one pass over the frames)", type=int, low=0)
    objective: str = opt("contrast", "contrast: each face picks its own audio among the 15 frames around it "
                                     "(plus BCE on far pairs); pairs: balanced in-sync/off-sync pairs, BCE only",
                         choices=("contrast", "pairs"))
    hard_negatives: float = opt(0.5, "pairs objective: share of negatives whose audio is 2-15 frames from the face", low=0, high=1)
    face_frames: int | None = opt(None, "consecutive face crops it sees, odd (default 1)", type=int, frozen=True, low=1)
    audio_context: int | None = opt(None, "log-mel only: 10 ms steps of sound around the frame it hears (0: the "
                                          "whole window)", type=int, frozen=True)
    augment: bool = opt(False, "jitter the training pairs (shift/zoom/flip/colour, a masked mel band); slows the "
                               "first epochs, meant for videos of several minutes")

    def run_dir(self) -> Path:
        """checkpoint/<name>/syncnet."""
        return checkpoint_layout(self.checkpoint_dir, self.person()[1]).syncnet_dir

    # an epoch draws a fixed number of pairs whatever the video's length; every measured run (30-60
    # epochs on grid_s1_5min) found its best held-out epoch within its first 54
    AUTO_EPOCHS: ClassVar[int] = 50

    @classmethod
    def auto_epochs(cls, train_frames: int | None) -> tuple[int, str]:
        """A fixed 50: a SyncNet epoch is at least --pairs_per_epoch pairs, however long the video."""
        return cls.AUTO_EPOCHS, "the SyncNet's default; its epochs draw a fixed number of pairs"


@dataclass
class UNetConfig(RunConfig):
    """`synctalk train-unet`: the UNet-328 that redraws the mouth from the audio."""

    QUICK: ClassVar[dict[str, Any]] = {"width": "tiny", "epochs": 2, "perceptual": "none", "adversarial_weight": 0.0}
    QUICK_NOTE: ClassVar[str] = ("a tiny UNet, 2 epochs, L1 only (a trial: the mouth stays blurry); on a CPU an "
                                 "epoch takes about a second per training frame")

    # the UNet's rate falls over the run by default: measured on grid_s1_5min (two seeds), the same sync as a
    # constant rate, 0.1-0.2 dB more mouth PSNR and a slightly sharper mouth
    lr_schedule: str = opt("cosine", "learning rate over the epochs: cosine (from --lr down to a tenth of it at the "
                                     "last epoch), or constant", choices=("constant", "cosine"))
    save_dir: str | None = opt(None, "UNet checkpoint folder (default <checkpoint_dir>/<name>)")
    syncnet: str = opt("auto", "the critic of the sync loss: auto (the person's own SyncNet when it passes the "
                               "quality gate), on (the person's own, required), off, or PATH (another SyncNet "
                               "checkpoint; its audio features must match)")
    perceptual: str = opt("auto", "perceptual loss: vgg19 (needs its weights), none, or auto (vgg19 when its "
                                  "weights are found)", choices=("auto", "vgg19", "none"))
    models_dir: str | None = opt(None, "where model weights (VGG19) are looked for first")
    l1_weight: float = opt(1.0, "weight of the L1 loss", low=0)
    perceptual_weight: float = opt(0.01, "weight of the perceptual loss", low=0)
    sync_weight: float = opt(0.03, "weight of the sync loss (keep it small: the critic's gradient must not drown "
                                   "L1)", low=0)
    sync_mode: str = opt("absolute", "what the sync loss asks: absolute (the critic's BCE of the prediction being in "
                                     "sync) or relative (only to be as in sync as the real frame, as the critic scores "
                                     "it: nothing where the prediction already matches it)",
                         choices=("absolute", "relative"))
    sync_start_epoch: int | None = opt(None, "first epoch with the sync loss (default: after a fifth of --epochs, "
                                             "as the mouth critic: the critic then judges a drawn mouth, not a blur)",
                                       type=int, low=1)
    mask: str | None = opt(None, "mouth mask x0,y0,x1,y1 in the 320 crop, end exclusive (default 5,5,315,310)",
                           frozen=True)
    see_res: bool = opt(False, "write a preview PNG per epoch (masked | predicted | real) to <run>/previews/")
    # -- the adversarial stage (synctalk.training.adversarial): on by default, 0 turns it off
    adversarial_weight: float = opt(0.02, "weight of the mouth critic's hinge loss in the UNet's loss (0: off, no "
                                          "critic built: L1 alone)", low=0)
    # measured on grid_s1_5min (two seeds against three runs without it): held-out sync 0.867 / 0.872 against
    # 0.848-0.852, the same mouth PSNR; on the unseen sentences (one run) at the top of their range or inside it
    feature_matching_weight: float | None = opt(None, "weight of feature matching: the L1 distance between the "
                                                      "mouth critic's hidden activations of the prediction and of "
                                                      "the real frame (a perceptual loss learnt from the person's "
                                                      "mouth; default 1 with the mouth critic, 0 with "
                                                      "--adversarial_weight 0; 0: off)", type=float, low=0)
    adversarial_start_epoch: int | None = opt(None, "first epoch with the critic (the epochs before it train on L1 "
                                                    "alone; default: after a fifth of --epochs, epoch 6 of 26)",
                                              type=int, low=1)
    disc_lr: float = opt(2e-4, "learning rate of the mouth critic (Adam, betas 0.5/0.999; not scaled by "
                               "--lr_scaling)", low=0, open_low=True)
    disc_width: str = opt("auto", "width of the mouth critic (auto: mobile for a full or mobile UNet, tiny for tiny)",
                          choices=("auto", "full", "mobile", "tiny"))
    disc_box: str | None = opt(None, "the critic's mouth box x0,y0,x1,y1 in the 320 crop, end exclusive (default "
                                     "32,48,288,240: the lower face of the preprocessing crop)")

    def run_dir(self) -> Path:
        """--save_dir, else checkpoint/<name>."""
        return Path(self.save_dir) if self.save_dir else checkpoint_layout(self.checkpoint_dir, self.person()[1]).unet_dir

    # an epoch is one pass over the training frames, so the default follows the video's length: about
    # 170,000 frames shown (grid_s1_5min's held-out PSNR levelled off after 8-13 epochs of 6,706
    # frames, and 25 epochs learnt sync), bounded for very short and very long videos
    EPOCH_FRAMES: ClassVar[int] = 170_000
    EPOCH_RANGE: ClassVar[tuple[int, int]] = (10, 200)

    @classmethod
    def auto_epochs(cls, train_frames: int | None) -> tuple[int, str]:
        """ceil(170,000 / training frames), within 10..200 (100 when the frame count is unknown)."""
        if not train_frames:
            return 100, "the frame count is not known yet"
        lo, hi = cls.EPOCH_RANGE
        n = min(hi, max(lo, -(-cls.EPOCH_FRAMES // int(train_frames))))
        return n, f"{int(train_frames):,} training frames × {n} = {int(train_frames) * n:,} frames shown"


def check_ranges(cfg: Any) -> None:
    """Every number of `cfg` inside the range its field declares (opt's low/high); one clear error names
    the flag. An option left at None (auto) is not checked."""
    for f in fields(cfg):
        low, high = f.metadata.get("low"), f.metadata.get("high")
        value = getattr(cfg, f.name)
        if (low is None and high is None) or value is None or isinstance(value, bool):
            continue
        flag = flag_names(f)[0]
        if isinstance(value, float) and not math.isfinite(value):
            raise SyncTalkError(f"{flag} must be a finite number, got {value}")
        if low is not None and f.metadata.get("open_low"):
            if not value > low:
                raise SyncTalkError(f"{flag} must be above {low:g}, got {value:g}")
        elif low is not None and not value >= low:
            raise SyncTalkError(f"{flag} must be at least {low:g}, got {value:g}")
        if high is not None and not value <= high:
            raise SyncTalkError(f"{flag} must be at most {high:g}, got {value:g}")


def resolve_person(name: str | None, dataset_dir: str | Path | None) -> tuple[Path, str]:
    """(dataset base folder, person name) from --name / --dataset_dir (either the base or the person's folder)."""
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


# ---------------------------------------------------------------- flags from fields


def flag_names(f: dataclasses.Field) -> tuple[str, ...]:
    """The command-line spellings of a field."""
    if f.metadata.get("negate"):
        return (f.metadata["negate"],)
    return tuple(f.metadata.get("flags") or ()) or (f"--{f.name}",)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of `cls`, grouped own / shared; a flag not given leaves the namespace without it.

    Defaults are argparse.SUPPRESS so that a run can tell an option typed on the command line from a
    default: a resumed run takes the untyped ones from its saved config.json. Abbreviated flags are
    refused (a prefix of a flag of the other command must not be taken for one of this command's).
    """
    parser.allow_abbrev = False
    own = {f.name for f in fields(cls)} - {f.name for f in fields(RunConfig)}
    title = (cls.__doc__ or cls.__name__).split(":")[0].strip("`")
    groups = {True: parser.add_argument_group(f"{title} options"), False: parser.add_argument_group("run options")}
    for f in fields(cls):
        add_field_argument(groups[f.name in own], f)


def add_field_argument(group: Any, f: dataclasses.Field, flags: tuple[str, ...] | None = None,
                       dest: str | None = None) -> None:
    """The flag of one config field (default SUPPRESS; bools are switches; help from the field's metadata)."""
    meta = f.metadata
    help_text = meta["help"] + ("" if f.default is None or isinstance(f.default, bool) else f" (default {f.default})")
    kw: dict[str, Any] = {"dest": dest or f.name, "default": argparse.SUPPRESS, "help": help_text}
    flags = flags or flag_names(f)
    if meta.get("negate"):
        group.add_argument(*flags, action="store_false", **kw)
    elif isinstance(f.default, bool):
        group.add_argument(*flags, action="store_true", **kw)
    else:
        if meta.get("choices"):
            kw["choices"] = meta["choices"]
        if meta.get("switch"):
            kw.update(nargs="?", const="yes")
        kw["type"] = meta.get("type") or (type(f.default) if f.default is not None else str)
        group.add_argument(*flags, **kw)


def config_field(cls: type, name: str) -> dataclasses.Field:
    """The dataclass field `name` of `cls`."""
    return next(f for f in fields(cls) if f.name == name)


def explicit_options(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options typed on the command line (the namespace of add_config_arguments)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def argv_of(options: Mapping[str, Any], cls: type, drop: tuple[str, ...] = ()) -> list[str]:
    """The command-line flags that reproduce `options` (e.g. for the torchrun workers)."""
    argv: list[str] = []
    for f in fields(cls):
        if f.name not in options or f.name in drop:
            continue
        value, flag = options[f.name], flag_names(f)[0]
        if f.metadata.get("negate"):
            if value is False:
                argv.append(flag)
        elif isinstance(f.default, bool):
            if value:
                argv.append(flag)
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def defaults(cls: type) -> dict[str, Any]:
    """Every field's default."""
    return {f.name: f.default for f in fields(cls)}


def frozen_keys(cls: type) -> tuple[str, ...]:
    """The options a resumed run must keep (they fix the network or what it learns from)."""
    return tuple(f.name for f in fields(cls) if f.metadata.get("frozen"))


def merge_config(cls: type, explicit: Mapping[str, Any], saved: Mapping[str, Any] | None = None,
                 source: str | Path | None = None) -> Any:
    """defaults ← the run's saved options ← the command line; a changed frozen option is an error.

    Only what the command line gave overrides a saved option; `saved` keys of other versions are ignored.
    """
    values = defaults(cls)
    names = set(values)
    if explicit.get("quick", (saved or {}).get("quick", False)):
        values.update(cls.QUICK)  # the preset's sizes, under whatever was saved or typed
    if saved:
        for key in frozen_keys(cls):
            typed = explicit.get(key)
            if typed is not None and typed != "auto" and saved.get(key) is not None \
                    and _norm(typed) != _norm(saved[key]):
                flag = flag_names(config_field(cls, key))[0]
                raise SyncTalkError(
                    f"{source or 'the saved run config'} was trained with {key} {saved[key]!r}, but {flag} "
                    f"{explicit[key]!r} was given: drop {flag} to continue this run, or pass --restart (or another "
                    f"checkpoint folder) to start a new one"
                )
        values.update({k: v for k, v in saved.items() if k in names})
    values.update({k: v for k, v in explicit.items() if k in names})
    for key in frozen_keys(cls):  # "auto" typed again on a resume means "as the run was"
        if values.get(key) == "auto" and saved and saved.get(key) not in (None, "auto"):
            values[key] = saved[key]
    # what says where and what to do this time always comes from the command line
    for key in ("continue_training", "restart", "gpus", "device", "progress"):
        values[key] = explicit.get(key, defaults(cls)[key])
    return cls(**values)


def _norm(value: Any) -> Any:
    """Compare "5,5,315,310" with [5, 5, 315, 310], 3 with "3"."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(int(v)) for v in value)
    return str(value).replace(" ", "")


# ---------------------------------------------------------------- config.json


def write_run_config(run_dir: str | Path, config: Mapping[str, Any]) -> Path:
    """config.json beside the run's checkpoints (atomic)."""
    from ..fileio import write_json_atomic

    path = Path(run_dir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, dict(config))
    return path


def load_run_config(run_dir_or_checkpoint: str | Path) -> dict[str, Any]:
    """A run's resolved options: its config.json, or the "run_config" inside a checkpoint file.

    Accepts the run folder, its config.json, or any of its checkpoints; {} for a run of an older
    version (no config.json, a checkpoint without run_config). For `synctalk infer`/`eval`.
    """
    path = Path(run_dir_or_checkpoint)
    if path.is_dir():
        path = path / CONFIG_FILE
    if not path.exists():
        return {}
    if path.suffix == ".json":
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SyncTalkError(f"{path} is not a readable run config ({exc}); delete it to start the run over "
                                f"with --restart") from None
        if not isinstance(data, dict):
            raise SyncTalkError(f"{path} is not a run config (expected a JSON object)")
        return data
    from .checkpoint import load_checkpoint

    return dict(load_checkpoint(path).get("run_config") or {})


def saved_options(run_dir: str | Path) -> dict[str, Any]:
    """The options of a run to resume: config.json's "options", else those of its latest checkpoint."""
    cfg = load_run_config(run_dir)
    if cfg:
        return dict(cfg.get("options") or {})
    from .checkpoint import find_resume

    try:
        ckpt = find_resume(run_dir, None, warn=False)
    except SyncTalkError:
        return {}
    if ckpt is None:
        return {}
    if ckpt.get("run_config"):
        return dict(ckpt["run_config"].get("options") or {})
    # a checkpoint of an older version: its network config holds the options that cannot change
    net = ckpt.get("config") or {}
    old = {k: net[k] for k in ("width", "mask", "face_frames", "audio_context") if k in net}
    if ckpt.get("asr"):
        old["asr"] = ckpt["asr"]
    return old
