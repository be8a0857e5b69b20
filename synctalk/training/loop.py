"""The one training loop: resume, epochs, validation on rank 0, best/latest, state mirror, DDP.

A network comes as a `Task` (syncnet.SyncNetTask, unet.UNetTask) that supplies `build` (data,
network, losses), `epoch_batches` / `step` (one optimisation step on one batch) and `evaluate`
(held-out metrics). `run_training` is the whole run, read top to bottom:

    cfg, resume  = the run's options (config.json merged with the command line) and checkpoint
    task         = Task.build(...)                      # data, model, optimizer, compiled step
    for epoch in range(start + 1, cfg.epochs + 1):
        metrics  = train_epoch(task, epoch)             # task.step on every batch
        metrics |= task.evaluate()                      # rank 0
        checkpoint latest (+ best, + <epoch>.pth), state file, config.json, TensorBoard

The benchmark times the same `task.step` through `time_steps`.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm import tqdm

from ..data import FrameData, check_preprocessed, resolve_asr
from ..errors import SyncTalkError
from ..fileio import remove_stale_temps
from ..layout import DatasetLayout, dataset_layout
from ..device import resolve_amp
from ..state import PREPROCESSING, TrainingState
from .checkpoint import best_path, epoch_payload, latest_path, restart_or_resume, save_checkpoint, write_epoch
from .config import CONFIG_FILE, RunConfig, frozen_keys, write_run_config
from .runtime import (Distributed, check_finite, configure_backends, keep_compile_cache, load_optimizer_state,
                      make_adam, make_scaler, maybe_compile, prepare_module, restore_rng_state, rng_state,
                      synchronize)

GRAPHS_ONE_GPU = "--cuda_graphs trains on one GPU: drop it for a run on several (--gpus, torchrun)"


@dataclass
class Speed:
    """The run's resolved speed switches ("auto" decided for this device), recorded in config.json."""

    device: str
    amp: str
    channels_last: bool
    compile: bool
    cuda_graphs: bool
    batch_size: int
    lr: float
    cache_on_device: bool | str


def resolve_speed(cfg: RunConfig, device: torch.device, world_size: int, *, gpu_batch: int, cpu_batch: int,
                  base_batch: int) -> Speed:
    """Decide every "auto" speed option in one place: a GPU gets bf16, channels_last, CUDA graphs (one
    process) and a large batch; the CPU keeps the plain path (fp32, small batch, no compile)."""
    from .runtime import scaled_lr

    cuda = device.type == "cuda"

    def choose(value: str | bool, auto: bool) -> bool:
        return {"yes": True, "no": False}.get(value, auto) if isinstance(value, str) else bool(value)

    graphs = choose(cfg.cuda_graphs, cuda and world_size == 1)
    if graphs and world_size > 1:
        raise SyncTalkError(GRAPHS_ONE_GPU)
    graphs = graphs and cuda  # CUDA graphs are a GPU feature: asked for on the CPU, the step runs plainly
    batch = cfg.batch_size or (gpu_batch if cuda else cpu_batch)
    if batch < 2:
        raise SyncTalkError(f"--batchsize must be at least 2 (BatchNorm), got {batch}")
    return Speed(device=str(device), amp=resolve_amp(cfg.amp, device), channels_last=choose(cfg.channels_last, cuda),
                 compile=choose(cfg.compile, graphs) or graphs, cuda_graphs=graphs, batch_size=batch,
                 lr=scaled_lr(cfg.lr, batch * world_size, base_batch, cfg.lr_scaling),
                 cache_on_device={"auto": "auto", "yes": True, "no": False}[cfg.cache_on_device])


LR_FLOOR = 0.1  # cosine schedule: the last epoch's rate, as a share of --lr
# checkpoint_latest.pth (model, optimizer, random states: 160-250 MB) is written after the first epoch of
# a session, then once this many seconds have passed since it was last written, and after the last
# epoch; a signal (Ctrl-C, SIGTERM) writes it at once (a run on several processes, which cannot, writes
# it every epoch). A SyncNet epoch takes 1-2 s on a GPU and writing a 250 MB file took 1.2-1.4 s on a
# 2-core machine, so a file every epoch could double the run; a kill -9 costs at most about a minute.
RESUME_EVERY_S = 60.0


def epoch_lr(lr: float, schedule: str, epoch: int, epochs: int) -> float:
    """The learning rate of epoch `epoch` (1-based) of `epochs`: `lr` throughout (constant), or a
    cosine from `lr` at the first epoch to LR_FLOOR × lr at the last. A function of the epoch
    alone, so a resumed run continues the same curve."""
    if schedule == "constant" or epochs <= 1:
        return lr
    if schedule != "cosine":
        raise SyncTalkError(f"--lr_schedule must be constant or cosine, got {schedule!r}")
    t = (min(max(epoch, 1), epochs) - 1) / (epochs - 1)
    return lr * (LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * t)))


def resolve_av_offset(value: str | int | None, layout: DatasetLayout) -> tuple[int | np.ndarray, str]:
    """(frames, where from): an explicit N, or "auto" = the offset preprocessing stored (0 when none);
    for a video whose offset drifts (lipcheck.estimate_av_drift), "auto" gives one offset per frame.

    Positive N: the lips move N frames after the sound, so frame i learns from audio window i - N.
    """
    text = "auto" if value is None else str(value).strip()
    if text != "auto":
        try:
            return int(text), "--av_offset or the run's config.json"
        except ValueError:
            raise SyncTalkError(f"--av_offset must be auto or a whole number of frames, got {value!r}") from None
    sec = TrainingState(layout.state_file).section(PREPROCESSING) if layout.state_file.exists() else {}
    stored = sec.get("av_offset") if isinstance(sec, dict) else None
    if isinstance(stored, dict) and isinstance(stored.get("frames"), int):
        where = f"measured at preprocessing ({stored.get('source', 'unknown')})"
        if stored.get("drift_per_minute") is not None and sec.get("frame_count"):
            from ..lipcheck import per_frame_offsets

            per_frame = per_frame_offsets(stored, int(sec["frame_count"]))
            if (per_frame != per_frame[0]).any():
                return per_frame, (f"{where}, drifting {stored['drift_per_minute']:+.2f} frames a minute: "
                                   f"{int(per_frame[0])} at the start, {int(per_frame[-1])} at the end")
        return int(stored["frames"]), where
    return 0, "none measured"


class Task:
    """One network's part of a training run; the loop drives it.

    Subclasses set the class attributes and implement `build`, `epoch_batches`, `step` and `evaluate`.
    `model` is the plain module (checkpoints), `step_model` the one that trains (DDP, compiled).
    """

    kind = ""  # checkpoint kind: "syncnet" | "unet"
    section = ""  # state-file section
    what = ""  # for messages
    terms: tuple[str, ...] = ("train_loss",)  # the parts step() returns, per-sample means
    gpu_batch, cpu_batch, base_batch = 32, 8, 8
    compile_pending = False  # the next step compiles (set from the run's Speed)

    def __init__(self, model: torch.nn.Module, data: FrameData, train_idx: Any, val_idx: Any, *, device: torch.device,
                 speed: Speed, dist: Distributed = Distributed(), seed: int = 0, sync_bn: bool = False,
                 resume: dict[str, Any] | None = None, run_numbers: dict[str, Any] | None = None):
        self.device, self.speed, self.dist, self.seed = device, speed, dist, seed
        self.run_numbers = dict(run_numbers or {})  # written into the checkpoint's config (epochs, val_fraction)
        self.amp, self.graphs = speed.amp, speed.cuda_graphs
        self.data, self.train_idx, self.val_idx = data, train_idx, val_idx
        self.pool = torch.as_tensor(train_idx, dtype=torch.long)
        self.model = prepare_module(model, device, speed.channels_last)
        self.optimizer = make_adam(self.model.parameters(), speed.lr, device)
        self.scaler = make_scaler(device, speed.amp)
        self.generator = torch.Generator().manual_seed(seed)
        if resume is not None:
            self.model.load_state_dict(resume["model"])
            if resume.get("optimizer"):
                load_optimizer_state(self.optimizer, resume["optimizer"])
            if resume.get("scaler"):
                self.scaler.load_state_dict(resume["scaler"])
            restore_rng_state(resume.get("rng"), self.generator)
        for group in self.optimizer.param_groups:  # a changed --lr takes effect on a resumed run
            group["lr"] = speed.lr
        # DDP first, then compile (the documented order); `model` stays the plain module for checkpoints
        self.step_model = maybe_compile(dist.wrap(self.model, device, sync_bn), speed.compile, speed.cuda_graphs)
        self.compile_pending = speed.compile  # the first step compiles (train_epoch says so and times it)

    def set_lr(self, lr: float) -> None:
        """The learning rate of the network's optimizer from now on (the loop's schedule)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # -- supplied by each network
    def epoch_batches(self, epoch: int, start_step: int = 0) -> tuple[int, Iterator[tuple[Any, int]]]:
        """(samples this epoch, iterator of (batch, batch size)) for this rank, from batch `start_step` on
        (the epoch's order is drawn whole either way, so a resumed epoch continues the same order)."""
        raise NotImplementedError

    def random_batches(self, steps: int, generator: torch.Generator) -> Iterator[tuple[Any, int]]:
        """`steps` batches of random training samples (for benchmarks), drawn like an epoch's."""
        raise NotImplementedError

    def step(self, batch: Any) -> torch.Tensor:
        """One optimisation step; the detached `terms` as one device tensor (no host sync)."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Held-out metrics (rank 0)."""
        raise NotImplementedError

    def better(self, metrics: dict[str, float], best: dict[str, Any]) -> bool:
        """Whether this epoch beats the best so far."""
        raise NotImplementedError

    def network_config(self) -> dict[str, Any]:
        """The checkpoint's "config": what rebuilds the network and the numbers of the run."""
        raise NotImplementedError

    def describe(self) -> str:
        """The start line's middle part (what is trained, with which losses)."""
        return ""

    def after_epoch(self, epoch: int, run_dir: Path) -> None:
        """Rank 0, after validation: previews and the like."""

    def state_fields(self, run_dir: Path, best_metrics: dict[str, Any]) -> dict[str, Any]:
        """Extra fields of the state section after an epoch."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Extra entries of the resume checkpoint (e.g. a critic's weights and optimizer; see RESUME_ONLY)."""
        return {}

    # -- shared
    def train_mode(self) -> None:
        """The trained network in training mode."""
        self.step_model.train()

    def active_terms(self) -> tuple[str, ...]:
        """The terms that take part in this run's loss (for the epoch's metrics)."""
        return self.terms

    @classmethod
    def already_done(cls, cfg: RunConfig, sec: dict[str, Any], run_dir: Path) -> "TrainResult | None":
        """The result of a finished run (nothing to train), else None."""
        latest = latest_path(run_dir)
        if sec.get("completed") and int(sec.get("epochs", 0)) >= cfg.epochs and latest.is_file() \
                and Path(sec.get("latest", latest)).resolve() == latest.resolve():
            best = best_path(run_dir)
            return TrainResult(run_dir, best if best.is_file() else latest, int(sec["epochs"]), 0,
                               str(sec.get("asr")), dict(sec.get("best_metrics") or sec.get("metrics") or {}))
        return None


@dataclass
class TrainResult:
    """What a run left behind."""

    run_dir: Path
    checkpoint: Path  # the one to use: best (latest when there is no best)
    epochs: int
    trained_epochs: int  # epochs run by this call (0: it was done already)
    asr: str
    metrics: dict[str, float]


# ---------------------------------------------------------------- epochs and timing


class StopRequest:
    """SIGINT / SIGTERM ask the loop to stop at the next step boundary (a second signal stops at once).

    Installed for single-process runs only: the ranks of a torchrun run would not stop at one step.
    """

    def __init__(self, enabled: bool):
        self.asked: str | None = None
        self._old: dict[int, Any] = {}
        if enabled and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.asked is not None:
            raise KeyboardInterrupt
        self.asked = signal.Signals(signum).name

    def restore(self) -> None:
        """Put back the handlers there were before."""
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()


class EpochInterrupted(Exception):
    """Raised by train_epoch after the step at which a stop was asked; `position` resumes the epoch."""

    def __init__(self, signame: str, position: dict[str, Any]):
        super().__init__(signame)
        self.signame, self.position = signame, position


def train_epoch(task: Task, epoch: int, epochs: int, *, progress: bool = True, log_every: int = 25,
                stop: StopRequest | None = None, position: dict[str, Any] | None = None) -> dict[str, float]:
    """Every batch of the epoch through `task.step`; the loss is read back every `log_every` steps only.

    `position` (a step checkpoint's) continues an interrupted epoch at its next batch with its sums;
    when `stop` is asked, EpochInterrupted carries the position after the step in progress.
    """
    task.train_mode()
    if position is not None:  # draw the interrupted epoch's order again, from the generator it had then
        task.generator.set_state(position["rng_epoch"])
    rng_epoch = task.generator.get_state()
    start = int(position["done_steps"]) if position else 0
    n, steps = task.epoch_batches(epoch, start)
    dev = task.device
    # a step checkpoint's sums by term name: a resume may add terms (the adversarial stage turned on)
    saved = dict(zip(position.get("terms", task.terms), position["sums"])) if position else {}
    sums = torch.tensor([float(saved.get(t, 0.0)) for t in task.terms], device=dev)
    window = torch.zeros(len(task.terms), device=dev)
    seen = int(position["seen"]) if position else 0
    win_seen = 0
    before = float(position["seconds"]) if position else 0.0
    t0 = time.perf_counter()
    bar = tqdm(total=n, initial=seen, desc=f"{task.what} {epoch}/{epochs}", unit="img", leave=False,
               disable=not (progress and task.dist.is_main))
    for k, (batch, b) in enumerate(steps, start=start):
        if task.compile_pending:
            parts = _first_compiled_step(task, batch, bar) * b
        else:
            parts = task.step(batch) * b
        sums += parts
        window += parts
        seen += b
        win_seen += b
        bar.update(b)
        if (k + 1) % max(log_every, 1) == 0:
            w = [x / win_seen for x in window.tolist()]  # the only host sync, every log_every steps
            check_finite(w[0], epoch)
            bar.set_postfix({t: f"{v:.4g}" for t, v in zip(task.terms, w)}
                            | {"sps": f"{seen / (before + time.perf_counter() - t0):.0f}"})
            window.zero_()
            win_seen = 0
        if stop is not None and stop.asked:
            bar.close()
            raise EpochInterrupted(stop.asked, {"epoch": epoch, "done_steps": k + 1, "rng_epoch": rng_epoch,
                                                "terms": list(task.terms), "sums": sums.tolist(), "seen": seen,
                                                "seconds": before + time.perf_counter() - t0})
    bar.close()
    totals = dict(zip(task.terms, (x / max(seen, 1) for x in sums.tolist())))
    check_finite(totals["train_loss"], epoch)
    dt = before + time.perf_counter() - t0
    out = {k: v for k, v in totals.items() if k in task.active_terms()}
    out.update(samples_per_s=seen / dt if dt > 0 else 0.0, seconds=dt)
    return out


def _first_compiled_step(task: Task, batch: Any, bar: Any) -> torch.Tensor:
    """The step that compiles the networks (and records their CUDA graphs): said before, timed after, and
    kept out of the progress bar's rate, whose estimate would otherwise read hours for the whole epoch."""
    def say(line: str) -> None:  # above a live bar, not into it
        if not task.dist.is_main:
            return
        if bar.disable:
            print(line, flush=True)
        else:
            bar.write(line)

    say(f"compiling the {task.what}'s training step (a minute or two on a new machine; later runs reuse "
        f"{keep_compile_cache()})")
    t0 = time.perf_counter()
    parts = task.step(batch)
    synchronize(task.device)
    task.compile_pending = False
    say(f"compiled in {time.perf_counter() - t0:.0f} s")
    if not bar.disable:
        done = bar.n
        bar.reset()  # the clock starts again after the compile, with no progress lost
        bar.initial = bar.n = bar.last_print_n = done
    return parts


def time_steps(task: Task, steps: int, generator: torch.Generator | None = None) -> dict[str, float]:
    """`steps` training steps of random batches after one warm-up step; mean terms and samples/s.

    The same `task.step` an epoch runs: what the benchmark measures is what training does.
    """
    g = generator or torch.Generator().manual_seed(0)
    task.train_mode()
    total = torch.zeros(len(task.terms), device=task.device)
    done = 0
    t0 = time.perf_counter()
    for k, (batch, b) in enumerate(task.random_batches(steps + 1, g)):
        parts = task.step(batch)
        if k == 0:  # warm-up: allocator, cuDNN plans, compile and graph recording
            synchronize(task.device)
            t0 = time.perf_counter()
            continue
        total += parts
        done += b
    synchronize(task.device)
    dt = time.perf_counter() - t0
    out = {k: v / max(steps, 1) for k, v in zip(task.terms, total.tolist())}
    out.update(loss=out["train_loss"], samples_per_s=done / dt if dt > 0 else float("inf"), seconds=dt, steps=steps)
    return out


EPOCH_KEYS = ("train_loss", "train_acc", "l1", "perceptual", "sync", "val_loss", "val_acc", "offset_acc",
              "offset_acc_1", "val_acc_speech", "offset_acc_speech", "offset_acc_1_speech", "offset_acc_1_speech_run5",
              "clip_offset",
              "adv_g", "adv_d", "adv_fm", "val_l1", "val_psnr")


def print_epoch(what: str, epoch: int, epochs: int, m: dict[str, float], best: bool) -> None:
    """The one-line summary of an epoch."""
    parts = [f"{what} epoch {epoch}/{epochs}"] + [f"{k} {m[k]:.4g}" for k in EPOCH_KEYS if k in m]
    parts.append(f"{m.get('samples_per_s', 0):.0f} img/s, {m.get('seconds', 0):.1f} s")
    print("  ".join(parts) + ("  [best]" if best else ""), flush=True)


class EventLog:
    """Per-epoch metrics as TensorBoard event files in the run folder (`tensorboard --logdir RUN`)."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the tensorboard package is missing: the console lines still say everything
            print("note: no TensorBoard event files (pip install tensorboard)", flush=True)
            return
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def epoch(self, what: str, epoch: int, metrics: dict[str, float]) -> None:
        """One scalar per metric, at step `epoch`."""
        if self.writer is None:
            return
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not k.startswith("_"):
                self.writer.add_scalar(f"{what}/{k}", float(v), epoch)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()


# ---------------------------------------------------------------- the run


def run_training(task_cls: type[Task], cfg: RunConfig, dist: Distributed) -> TrainResult:
    """Train (or resume, or skip when done) one network of one person. The single place a run starts:
    every checkpoint-folder write of a run happens inside this call."""
    base, name = cfg.person()
    layout = dataset_layout(base, name)
    run_dir = cfg.run_dir()
    check_preprocessed(layout)
    device = dist.start(cfg.device)  # this rank's device; joins the process group of a torchrun run
    state = TrainingState(layout.state_file)
    sec = state.section(task_cls.section)
    dist.barrier()  # every rank decides from the same state before rank 0 changes it
    if not cfg.restart:
        done = task_cls.already_done(cfg, sec, run_dir)
        if done is not None:
            dist.log(f"{task_cls.what} of {name} is already trained ({done.epochs} epochs >= {cfg.epochs}): "
                     f"{done.checkpoint}")
            return done

    resume = restart_or_resume(run_dir, task_cls.kind, restart=cfg.restart, state=state, section=task_cls.section,
                               dist=dist, what=task_cls.what)
    if cfg.continue_training and resume is None:
        dist.log(f"note: --continue_training, but {run_dir} holds no checkpoint: starting from scratch")
    asr = resolve_asr(layout, cfg.asr)
    cfg = dataclasses.replace(cfg, asr=asr, width=cfg.width or "full")
    start = int(resume["epoch"]) if resume else 0
    dist.agree((start, asr, cfg.width), "the resumed epoch, audio features and width")
    if resume is not None and start >= cfg.epochs:
        best = best_path(run_dir) if best_path(run_dir).exists() else Path(resume["_path"])
        if dist.is_main:
            state.update(task_cls.section, completed=True, epochs=start, latest=str(latest_path(run_dir).resolve()),
                         checkpoint=str(best.resolve()), asr=asr, width=cfg.width)
        dist.log(f"{task_cls.what} of {name} already has {start} epochs (>= {cfg.epochs}); nothing to do")
        return TrainResult(run_dir, best, start, 0, asr, dict(resume.get("metrics") or {}))

    av_offset, av_source = resolve_av_offset(cfg.av_offset, layout)
    speed = resolve_speed(cfg, device, dist.world_size, gpu_batch=task_cls.gpu_batch, cpu_batch=task_cls.cpu_batch,
                          base_batch=task_cls.base_batch)
    configure_backends(device)
    torch.manual_seed(cfg.seed)
    if dist.is_main:
        remove_stale_temps(layout.root)  # a crop cache a killed run was writing (a live writer's file is kept)
    task = task_cls.build(cfg, layout, state, asr=asr, device=device, speed=speed, dist=dist, resume=resume,
                          av_offset=av_offset)

    options = dataclasses.asdict(cfg)
    # what fixes the network and its data is recorded as resolved, so a resumed run rebuilds the same
    options.update({k: v for k, v in task.network_config().items() if k in frozen_keys(type(cfg))})
    run_config = {"kind": task_cls.kind, "options": options, "resolved": dataclasses.asdict(speed),
                  "av_offset": {"frames": task.data.av_offset, "source": av_source,
                                **({"per_frame": [int(av_offset[0]), int(av_offset[-1])]}
                                   if isinstance(av_offset, np.ndarray) else {})},
                  "frames": len(task.data),
                  "world_size": dist.world_size}
    best_metrics: dict[str, Any] = dict(resume.get("best") or {}) if resume else {}
    if resume is not None:
        dist.log(f"resuming {task_cls.what} of {name} from epoch {start} ({resume['_path']})")
    procs = f" × {dist.world_size} processes" if dist.enabled else ""
    dist.log(f"{task_cls.what} {name}: {len(task.train_idx)} training / {len(task.val_idx)} held-out frames, asr {asr}, "
             f"width {cfg.width}, {task.describe()}batch {speed.batch_size}{procs}, lr {speed.lr:g}"
             f"{' (cosine)' if cfg.lr_schedule == 'cosine' else ''}, {device} "
             f"({speed.amp}{', channels_last' if speed.channels_last else ''}"
             f"{', CUDA graphs' if speed.cuda_graphs else ', compiled' if speed.compile else ''}), "
             f"A/V offset {task.data.av_offset} ({av_source}), epochs {start}→{cfg.epochs} → {run_dir}")
    if dist.is_main:
        write_run_config(run_dir, run_config)
        state.update(task_cls.section, completed=False, target_epochs=cfg.epochs, epochs=start, asr=asr,
                     width=cfg.width, run_dir=str(run_dir.resolve()), config=str((run_dir / CONFIG_FILE).resolve()),
                     reused_from=None)
    events = EventLog(run_dir, dist.is_main)
    stop = StopRequest(enabled=not dist.enabled)
    position = (resume or {}).get("step")
    if position is not None and int(position.get("epoch", -1)) != start + 1:
        position = None
    if position is not None:
        dist.log(f"continuing epoch {start + 1} after its step {position['done_steps']} (stopped there by a signal)")
    metrics: dict[str, float] = dict((resume or {}).get("metrics") or {})
    latest_at = -math.inf  # when checkpoint_latest.pth was last written (time.monotonic)
    resume_epoch = start  # the finished epochs checkpoint_latest.pth holds
    try:
        for epoch in range(start + 1, cfg.epochs + 1):
            task.set_lr(epoch_lr(speed.lr, cfg.lr_schedule, epoch, cfg.epochs))
            try:
                metrics = train_epoch(task, epoch, cfg.epochs, progress=cfg.progress, log_every=cfg.log_every,
                                      stop=stop, position=position)
            except EpochInterrupted as stopped:
                _save_step(task, run_dir, state, stopped, epoch, metrics, best_metrics, run_config)
                raise KeyboardInterrupt from None
            position = None
            metrics = dist.reduce_metrics(metrics)  # the epoch over all ranks' shards
            if dist.is_main:  # validation on rank 0; every rank then takes its numbers for the "best" decision
                metrics.update(task.evaluate())
            metrics = dist.broadcast(metrics)
            improved = task.better(metrics, best_metrics)
            if improved:
                best_metrics = {"epoch": epoch, **metrics}
            if not dist.is_main:
                continue
            print_epoch(task_cls.what, epoch, cfg.epochs, metrics, improved)
            events.epoch(task_cls.what, epoch, metrics)
            task.after_epoch(epoch, run_dir)
            payload = epoch_payload(task_cls.kind, task.model, task.optimizer, task.scaler, epoch, asr,
                                    task.network_config(), metrics, best_metrics, rng_state(task.generator))
            payload["run_config"] = run_config
            payload.update(task.extra_state())
            # several processes cannot save a step checkpoint on a signal: they keep one every epoch
            write_latest = dist.enabled or epoch == cfg.epochs or time.monotonic() - latest_at >= RESUME_EVERY_S
            kept = write_epoch(run_dir, payload, final_epoch=cfg.epochs, save_interval=cfg.save_interval,
                               keep=cfg.keep_checkpoints, improved=improved, latest=write_latest)
            if write_latest:
                latest_at = time.monotonic()
                resume_epoch = epoch
            state.update(task_cls.section, epochs=epoch, latest=str(latest_path(run_dir).resolve()),
                         latest_epoch=resume_epoch,
                         best=str(best_path(run_dir).resolve()), checkpoint=str(best_path(run_dir).resolve()),
                         checkpoints=kept, metrics=metrics, completed=epoch >= cfg.epochs, step=None,
                         best_metrics={k: v for k, v in best_metrics.items() if not k.startswith("_")},
                         **task.state_fields(run_dir, best_metrics))
    finally:
        stop.restore()
        events.close()
    dist.barrier()  # no rank returns before rank 0 has written the last checkpoint and the state
    best = best_path(run_dir)
    dist.log(f"{task_cls.what} of {name} done: {cfg.epochs} epochs → {best if best.exists() else run_dir}")
    return TrainResult(run_dir, best, cfg.epochs, cfg.epochs - start, asr, best_metrics)


def _save_step(task: Task, run_dir: Path, state: TrainingState, stopped: EpochInterrupted, epoch: int,
               metrics: dict[str, float], best_metrics: dict[str, Any], run_config: dict[str, Any]) -> None:
    """A step checkpoint as checkpoint_latest.pth: the finished epochs' counter, the model and optimizer
    after the last step, and where in the epoch it stopped (`step`), so the next run continues there."""
    payload = epoch_payload(task.kind, task.model, task.optimizer, task.scaler, epoch - 1, task.data.asr,
                            task.network_config(), metrics, best_metrics, rng_state(task.generator))
    payload.update(run_config=run_config, step=stopped.position, **task.extra_state())
    save_checkpoint(latest_path(run_dir), payload)
    done = stopped.position["done_steps"]
    state.update(task.section, latest=str(latest_path(run_dir).resolve()), latest_epoch=epoch - 1,
                 step={"epoch": epoch, "done_steps": done, "samples": stopped.position["seen"]})
    print(f"{stopped.signame}: saved the model after step {done} of epoch {epoch} to {latest_path(run_dir)}; "
          f"rerun the same command to continue from there", flush=True)
