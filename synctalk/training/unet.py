"""The UNet-328 generator: train it (resumably), validate it on the held-out tail, preview it.

A sample is the inner 320 crop of frame i (target), the same crop with the mouth rectangle blacked
out, the crop of a random other training frame (reference: what the person looks like), and the
audio window of frame i. Loss = w_l1·L1 + w_p·perceptual (VGG19) + w_s·sync (the person's frozen
SyncNet judging the prediction against the audio). Each epoch ends with held-out L1 and PSNR;
checkpoint_best.pth is the epoch with the lowest held-out L1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import SyncTalkError
from ..layout import checkpoint_layout, dataset_layout
from ..state import TrainingState
from . import (RunOptions, autocast, batches, begin_step, check_finite, configure_backends, make_scaler,
               maybe_compile, prepare_module, print_epoch, resolve_amp, rng_state, set_up_run, synchronize,
               use_graphs)
from .checkpoint import (best_path, check_asr, epoch_payload, latest_path, restart_or_resume,
                         write_epoch)
from .syncnet import SECTION as SYNCNET_SECTION

SECTION = "main_training"
BASE_BATCH = 8  # the batch size the default learning rate is meant for
LOSS_TERMS = ("loss", "l1", "perceptual", "sync")


@dataclass
class UNetTrainConfig:
    """What one UNet run learns from, with which losses, and how long."""

    name: str
    dataset_dir: Path = Path("dataset")
    checkpoint_dir: Path = Path("checkpoint")
    save_dir: Path | None = None  # None: checkpoint_dir/<name>
    asr: str | None = None  # None: the dataset's (or the resumed checkpoint's)
    width: str | None = None  # None: "full" (or the resumed checkpoint's)
    epochs: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    use_syncnet: bool | None = None  # None: use the person's SyncNet when it is trained
    syncnet_checkpoint: Path | None = None
    perceptual: str = "vgg19"
    models_dir: Path | None = None
    l1_weight: float = 1.0
    perceptual_weight: float = 0.01
    sync_weight: float = 10.0
    mask: tuple[int, int, int, int] | None = None  # None: the reference rectangle (or the resumed run's)
    val_fraction: float = 0.1
    keep_checkpoints: int = 3
    save_interval: int = 1
    see_res: bool = False
    continue_training: bool = False
    restart: bool = False
    run: RunOptions = field(default_factory=RunOptions)


@dataclass
class UNetResult:
    """What a call to train_unet left behind."""

    run_dir: Path
    epochs: int
    trained_epochs: int
    metrics: dict[str, float]
    best: Path | None


class UNetLosses:
    """The weighted loss terms; returns (total, detached [total, l1, perceptual, sync])."""

    def __init__(self, l1_weight: float = 1.0, perceptual: Any = None, perceptual_weight: float = 0.01,
                 syncnet: Any = None, sync_weight: float = 10.0):
        self.l1_weight = l1_weight
        self.perceptual = perceptual if perceptual_weight else None
        self.perceptual_weight = perceptual_weight
        self.syncnet = syncnet if sync_weight else None
        self.sync_weight = sync_weight

    @property
    def group(self) -> int:
        """Consecutive frames each batch must come in (the SyncNet's face frames; 1 without one)."""
        return int(getattr(self.syncnet, "face_frames", 1)) if self.syncnet is not None else 1

    def __call__(self, pred: Any, target: Any, audio: Any) -> tuple[Any, Any]:
        import torch

        from ..losses import sync_loss

        l1 = (pred.float() - target.float()).abs().mean()
        zero = l1.new_zeros(())
        total = self.l1_weight * l1
        perc = zero
        if self.perceptual is not None:
            perc = self.perceptual(pred, target).float()
            total = total + self.perceptual_weight * perc
        sync = zero
        if self.syncnet is not None:
            sync = sync_loss(self.syncnet, pred, audio).float()
            total = total + self.sync_weight * sync
        return total, torch.stack([total, l1, perc, sync]).detach()


# ---------------------------------------------------------------- steps


def unet_step(model: Any, optimizer: Any, scaler: Any, batch: Any, losses: UNetLosses, device: Any, amp: str,
              graphs: bool = False) -> Any:
    """One optimisation step; returns the detached loss terms (a device tensor, no host sync).
    `graphs`: the networks were compiled with CUDA graphs (maybe_compile)."""
    begin_step(graphs)
    with autocast(device, amp):
        pred = model(batch.img6, batch.audio)
        total, parts = losses(pred, batch.target, batch.audio)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    scaler.step(optimizer)
    scaler.update()
    return parts


def random_frames(pool: Any, batch_size: int, group: int, generator: Any) -> Any:
    """A batch of random training frames from `pool` (sorted), in runs of `group` consecutive frames
    when the SyncNet judges several at once (UNetLosses.group); about `batch_size` of them."""
    import torch

    from ..data import frame_groups

    centres = pool[torch.randint(len(pool), (max(1, batch_size // group),), generator=generator)]
    return frame_groups(centres, group, int(pool.min()), int(pool.max())).reshape(-1)


def random_batches(pool: Any, batch_size: int, group: int, generator: Any, steps: int, device: Any) -> list:
    """`steps` (frames, reference frames) batches of random_frames, drawn on the host and moved to the
    device in one copy, as an epoch's order is: a host-to-device copy per step would make the host
    wait for the GPU's queued work every step."""
    import torch

    from ..data import reference_indices

    idx = [random_frames(pool, batch_size, group, generator) for _ in range(steps)]
    ref = [reference_indices(i, pool, generator) for i in idx]
    sizes = [len(i) for i in idx]
    both = torch.stack([torch.cat(idx), torch.cat(ref)]).to(device)
    return list(zip(both[0].split(sizes), both[1].split(sizes)))


def train_unet_steps(model: Any, optimizer: Any, data: Any, steps: int, batch_size: int, *, losses: UNetLosses,
                     device: Any, amp: str = "none", scaler: Any = None, mask: Sequence[int] | None = None,
                     generator: Any = None, frames: Any = None, graphs: bool = False) -> dict[str, float]:
    """Run `steps` training steps on random frames (for benchmarks); returns the loss and samples/s."""
    import torch

    from ..data import DEFAULT_MASK

    g = generator or torch.Generator().manual_seed(0)
    scaler = scaler or make_scaler(device, amp)
    mask = tuple(mask or DEFAULT_MASK)
    pool = torch.as_tensor(frames if frames is not None else np.arange(len(data)), dtype=torch.long)
    model.train()
    total = torch.zeros(len(LOSS_TERMS), device=device)
    t0 = None
    done = 0
    draws = random_batches(pool, batch_size, losses.group, g, steps + 1, device)
    for step, (idx, ref) in enumerate(draws):  # step 0 warms up (allocator, cudnn autotune, compile)
        batch = data.unet_batch(idx, ref, mask)
        parts = unet_step(model, optimizer, scaler, batch, losses, device, amp, graphs)
        if step == 0:
            synchronize(device)
            t0 = time.perf_counter()
            continue
        total += parts
        done += len(idx)
    synchronize(device)
    dt = time.perf_counter() - (t0 or time.perf_counter())
    out = {k: v / max(steps, 1) for k, v in zip(LOSS_TERMS, total.tolist())}
    out.update(samples_per_s=done / dt if dt > 0 else float("inf"), seconds=dt, steps=steps)
    return out


# ---------------------------------------------------------------- validation and previews


def evaluate_unet(model: Any, data: Any, val_idx: Any, train_idx: Any, *, device: Any, amp: str = "none",
                  mask: Sequence[int] | None = None, batch_size: int = 16, seed: int = 0) -> dict[str, float]:
    """Held-out L1 and PSNR (dB, per image then averaged) with fixed reference frames."""
    import torch

    from ..data import DEFAULT_MASK, reference_indices
    from .checkpoint import unwrap

    if len(val_idx) == 0:
        return {}
    mask = tuple(mask or DEFAULT_MASK)
    raw = unwrap(model)
    was_training = raw.training
    raw.eval()
    v = torch.as_tensor(np.asarray(val_idx), dtype=torch.long)
    g = torch.Generator().manual_seed(seed + 104729)  # the same references every epoch
    ref = reference_indices(v, torch.as_tensor(np.asarray(train_idx), dtype=torch.long), g)
    l1_sum = torch.zeros((), device=device)
    psnr_sum = torch.zeros((), device=device)
    with torch.no_grad():
        for start in range(0, len(v), batch_size):
            sl = slice(start, start + batch_size)
            b = data.unet_batch(v[sl].to(device), ref[sl].to(device), mask)
            with autocast(device, amp):
                pred = raw(b.img6, b.audio)
            err = pred.float() - b.target
            l1_sum += err.abs().mean(dim=(1, 2, 3)).sum()
            mse = err.pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
            psnr_sum += (10.0 * torch.log10(1.0 / mse)).sum()
    if was_training:
        raw.train()
    return {"val_l1": float(l1_sum) / len(v), "val_psnr": float(psnr_sum) / len(v)}


def write_preview(model: Any, data: Any, frame: int, ref_frame: int, path: Path, *, device: Any, amp: str = "none",
                  mask: Sequence[int] | None = None) -> Path:
    """A PNG of masked input | prediction | ground truth for one frame (atomic write)."""
    import cv2
    import torch

    from ..data import DEFAULT_MASK
    from ..fileio import write_bytes_atomic
    from .checkpoint import unwrap

    raw = unwrap(model)
    was_training = raw.training
    raw.eval()
    with torch.no_grad():
        b = data.unet_batch(torch.tensor([frame], device=device), torch.tensor([ref_frame], device=device),
                            tuple(mask or DEFAULT_MASK))
        with autocast(device, amp):
            pred = raw(b.img6, b.audio)
    if was_training:
        raw.train()

    def to_img(t: Any) -> np.ndarray:
        return (t[0].float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()

    strip = np.concatenate([to_img(b.img6[:, 3:6]), to_img(pred), to_img(b.target)], axis=1)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(strip))
    if not ok:
        raise SyncTalkError(f"could not encode the preview {path}")
    write_bytes_atomic(path, buf.tobytes())
    return path


# ---------------------------------------------------------------- the run


MIN_SYNCNET_OFFSET_ACC = 0.2


def _choose_syncnet(cfg: UNetTrainConfig, state: TrainingState, asr: str) -> Path | None:
    """Which SyncNet checkpoint the sync loss uses (None: no sync loss)."""
    if cfg.use_syncnet is False:
        if cfg.syncnet_checkpoint:
            raise SyncTalkError("--syncnet_checkpoint given together with --no_syncnet: choose one")
        return None
    if cfg.syncnet_checkpoint:
        return Path(cfg.syncnet_checkpoint)
    sec = state.section(SYNCNET_SECTION)
    path = Path(sec["checkpoint"]) if sec.get("checkpoint") else None
    done = bool(sec.get("completed")) and path is not None and path.is_file()
    if not done:
        if cfg.use_syncnet:
            raise SyncTalkError(
                f"--use_syncnet: {cfg.name} has no trained SyncNet yet; train it first "
                f"(python scripts/train_328.py --name {cfg.name} --train_syncnet), pass --syncnet_checkpoint PATH, "
                f"or drop --use_syncnet"
            )
        return None
    if sec.get("asr") not in (None, asr):
        raise SyncTalkError(
            f"the SyncNet of {cfg.name} ({path}) was trained on {sec.get('asr')!r} features but this UNet uses {asr!r}: "
            f"train a SyncNet for {asr!r} (--train_syncnet --asr {asr} --restart) or pass --no_syncnet"
        )
    # A critic that cannot tell in-sync from off-sync teaches nothing: its gradient only paints
    # patterns that fool it (seen as coloured blobs in the lower face). Unless asked for explicitly,
    # the sync loss waits for a SyncNet whose held-out offset accuracy is well above chance (1/31).
    offset_acc = float((sec.get("best_metrics") or {}).get("offset_acc", 0.0))
    if offset_acc < MIN_SYNCNET_OFFSET_ACC and not cfg.use_syncnet:
        cfg.run.dist.log(f"warning: the SyncNet of {cfg.name} reaches a held-out offset accuracy of {offset_acc:.3f} "
                         f"(< {MIN_SYNCNET_OFFSET_ACC}); training the UNet without the sync loss. Train the SyncNet "
                         f"longer (--train_syncnet --epochs N) or force it with --use_syncnet.")
        return None
    return path


def train_unet(cfg: UNetTrainConfig) -> UNetResult:
    """Train (or resume, or skip when done) the person's UNet-328."""
    import torch

    from unet_328 import build_unet

    from ..data import DEFAULT_MASK, check_preprocessed, parse_mask, resolve_asr
    from ..losses import load_perceptual_loss
    from .syncnet import load_syncnet

    run = cfg.run
    dist = run.dist
    layout = dataset_layout(cfg.dataset_dir, cfg.name)
    ckl = checkpoint_layout(cfg.checkpoint_dir, cfg.name)
    run_dir = Path(cfg.save_dir) if cfg.save_dir else ckl.unet_dir
    check_preprocessed(layout)
    device = dist.start(run.device)  # this rank's device; joins the process group of a torchrun run
    state = TrainingState(layout.state_file)
    sec = state.section(SECTION)
    dist.barrier()  # every rank decides from the same state before rank 0 changes it

    latest = latest_path(run_dir)
    if (not cfg.restart and sec.get("completed") and int(sec.get("epochs", 0)) >= cfg.epochs and latest.is_file()
            and Path(sec.get("latest", latest)).resolve() == latest.resolve()):
        dist.log(f"UNet of {cfg.name} is already trained ({sec.get('epochs')} epochs >= {cfg.epochs}): {run_dir}")
        best = best_path(run_dir)
        return UNetResult(run_dir, int(sec["epochs"]), 0, dict(sec.get("metrics") or {}),
                          best if best.is_file() else None)

    resume = restart_or_resume(run_dir, "unet", restart=cfg.restart, state=state, section=SECTION, dist=dist,
                               what="UNet")
    if cfg.continue_training and resume is None:
        dist.log(f"note: --continue_training, but {run_dir} holds no checkpoint: starting from scratch")
    rcfg = (resume or {}).get("config") or {}
    asr = cfg.asr
    if resume is not None:
        if asr is not None and resume.get("asr") != asr:
            check_asr(resume, asr, resume["_path"],
                      "drop --asr to continue it, or pass --restart (or another --save_dir) to train a new UNet")
        asr = resume["asr"]
    asr = resolve_asr(layout, asr)
    width = cfg.width or rcfg.get("width") or "full"
    mask = tuple(cfg.mask) if cfg.mask else tuple(rcfg.get("mask") or DEFAULT_MASK)
    mask = parse_mask(mask)
    if resume is not None:
        for key, value in (("width", width), ("mask", list(mask))):
            if key in rcfg and rcfg[key] != value:
                raise SyncTalkError(
                    f"{resume['_path']} was trained with {key} {rcfg[key]!r} but {value!r} was asked: "
                    f"drop --{key} to continue it, or pass --restart to start over"
                )
    start_epoch = int(resume["epoch"]) if resume else 0
    dist.agree((start_epoch, asr, width), "the resumed epoch, audio features and width")
    if resume is not None and start_epoch >= cfg.epochs:
        if dist.is_main:
            state.update(SECTION, completed=True, epochs=start_epoch, latest=str(latest_path(run_dir)))
        dist.log(f"UNet of {cfg.name} already has {start_epoch} epochs (>= {cfg.epochs}); nothing to do")
        return UNetResult(run_dir, start_epoch, 0, dict(resume.get("metrics") or {}), None)

    # everything that can fail on a missing file fails here, before the crop cache or any training
    amp = resolve_amp(run.amp, device)
    graphs = use_graphs(run, device)
    configure_backends(device)
    syncnet_path = _choose_syncnet(cfg, state, asr)
    syncnet = None
    if syncnet_path is not None:
        syncnet, _ = load_syncnet(syncnet_path, device, asr)
        syncnet = maybe_compile(prepare_module(syncnet.requires_grad_(False).eval(), device, run.channels_last),
                                run.compile, graphs)
    with dist.main_first():  # rank 0 fetches missing VGG19 weights; the others then read them
        perceptual = load_perceptual_loss(cfg.perceptual, cfg.models_dir)
    if perceptual is not None:
        perceptual = prepare_module(perceptual, device, run.channels_last)
    losses = UNetLosses(cfg.l1_weight,
                        maybe_compile(perceptual, run.compile, graphs) if perceptual is not None else None,
                        cfg.perceptual_weight, syncnet, cfg.sync_weight)

    setup = set_up_run(layout, asr, build_unet(asr, width), lr=cfg.lr, val_fraction=cfg.val_fraction,
                       device=device, amp=amp, run=run, resume=resume)
    data, train_idx, val_idx = setup.data, setup.train_idx, setup.val_idx
    model, optimizer, scaler, gen = setup.model, setup.optimizer, setup.scaler, setup.generator
    best_value = float("inf")
    best_metrics: dict[str, float] = {}
    if resume is not None:
        best_metrics = dict(resume.get("best") or {})
        best_value = float(best_metrics.get("_value", float("inf")))
        dist.log(f"resuming UNet of {cfg.name} from epoch {start_epoch} ({resume['_path']})")
    # DDP first, then compile (the documented order); `model` stays the plain module for checkpoints
    step_model = maybe_compile(dist.wrap(model, device, run.sync_bn), run.compile, graphs)

    config = {"asr": asr, "width": width, "mask": list(mask), "batch_size": cfg.batch_size, "lr": cfg.lr,
              "epochs": cfg.epochs, "val_fraction": cfg.val_fraction, "perceptual": cfg.perceptual,
              "l1_weight": cfg.l1_weight, "perceptual_weight": cfg.perceptual_weight,
              "sync_weight": cfg.sync_weight if syncnet is not None else 0.0,
              "syncnet_checkpoint": str(syncnet_path) if syncnet_path else None, "amp": amp, "seed": run.seed,
              "frames": len(data), "crop_size": 328, "inner_size": 320, "world_size": dist.world_size,
              "global_batch_size": cfg.batch_size * dist.world_size}
    terms = ["L1"] + (["perceptual"] if losses.perceptual is not None else []) + (["sync"] if syncnet is not None else [])
    procs = f" × {dist.world_size} processes" if dist.enabled else ""
    dist.log(f"UNet {cfg.name}: {len(train_idx)} training / {len(val_idx)} held-out frames, asr {asr}, width {width}, "
             f"batch {cfg.batch_size}{procs}, lr {cfg.lr:g}, losses {' + '.join(terms)}, {device} ({amp}), "
             f"epochs {start_epoch}→{cfg.epochs} → {run_dir}")
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        state.update(SECTION, completed=False, target_epochs=cfg.epochs, epochs=start_epoch, asr=asr, width=width,
                     run_dir=str(run_dir), syncnet_checkpoint=config["syncnet_checkpoint"])

    pool = torch.as_tensor(train_idx)
    preview_frame = int(val_idx[0]) if len(val_idx) else int(train_idx[len(train_idx) // 2])
    preview_ref = int(train_idx[0]) if int(train_idx[0]) != preview_frame else int(train_idx[-1])
    metrics: dict[str, float] = {}
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        metrics = _unet_epoch(step_model, optimizer, scaler, data, pool, gen, epoch, cfg, losses, mask, device, amp,
                              graphs)
        metrics = dist.reduce_metrics(metrics)  # the epoch over all ranks' shards
        if dist.is_main:  # validation on rank 0; every rank then takes its numbers for the "best" decision
            metrics.update(evaluate_unet(model, data, val_idx, train_idx, device=device, amp=amp, mask=mask,
                                         batch_size=max(cfg.batch_size, 16), seed=run.seed))
        metrics = dist.broadcast(metrics)
        value = metrics.get("val_l1", metrics["train_loss"])
        improved = value < best_value
        if improved:
            best_value = value
            best_metrics = {"epoch": epoch, "_value": value, **metrics}
        if dist.is_main:
            print_epoch("UNet", epoch, cfg.epochs, metrics, improved)
            if cfg.see_res:
                write_preview(model, data, preview_frame, preview_ref, run_dir / "previews" / f"epoch_{epoch:04d}.png",
                              device=device, amp=amp, mask=mask)
            payload = epoch_payload("unet", model, optimizer, scaler, epoch, asr, config, metrics, best_metrics,
                                    rng_state(gen))
            kept = write_epoch(run_dir, payload, final_epoch=cfg.epochs, save_interval=cfg.save_interval,
                               keep=cfg.keep_checkpoints, improved=improved)
            state.update(SECTION, epochs=epoch, latest=str(latest_path(run_dir)), best=str(best_path(run_dir)),
                         checkpoints=kept, metrics=metrics,
                         best_metrics={k: v for k, v in best_metrics.items() if not k.startswith("_")},
                         completed=epoch >= cfg.epochs)
    dist.barrier()  # no rank returns before rank 0 has written the last checkpoint and the state
    dist.log(f"UNet of {cfg.name} done: {cfg.epochs} epochs → {run_dir}")
    return UNetResult(run_dir, cfg.epochs, cfg.epochs - start_epoch, metrics, best_path(run_dir))


def _unet_epoch(model: Any, optimizer: Any, scaler: Any, data: Any, pool: Any, gen: Any, epoch: int,
                cfg: UNetTrainConfig, losses: UNetLosses, mask: Sequence[int], device: Any, amp: str,
                graphs: bool = False) -> dict[str, float]:
    import torch
    from tqdm import tqdm

    from ..data import frame_groups, reference_indices

    run = cfg.run
    model.train()
    k = losses.group  # > 1: the SyncNet judges runs of k consecutive frames, so batches come in such runs
    order = pool[torch.randperm(len(pool), generator=gen)]
    if k > 1:
        order = frame_groups(order[: max(1, len(pool) // k)], k, int(pool.min()), int(pool.max()))
    refs = reference_indices(order.reshape(-1), pool, gen).reshape(order.shape)
    # shard whole runs; then flat sample order
    order, refs = run.dist.shard(order).reshape(-1).to(device), run.dist.shard(refs).reshape(-1).to(device)
    n = len(order)
    batch_size = max(k, cfg.batch_size // k * k)
    sums = torch.zeros(len(LOSS_TERMS), device=device)
    window = torch.zeros(len(LOSS_TERMS), device=device)
    seen = win_seen = 0
    t0 = time.perf_counter()
    bar = tqdm(total=n, desc=f"UNet {epoch}/{cfg.epochs}", unit="img", leave=False,
               disable=not (run.progress and run.dist.is_main))
    # compiled steps keep one batch shape: a partial last batch would compile (and record) again
    for step, sl in enumerate(batches(n, batch_size, drop_last=run.compile)):
        b = sl.stop - sl.start
        batch = data.unet_batch(order[sl], refs[sl], mask)
        parts = unet_step(model, optimizer, scaler, batch, losses, device, amp, graphs)
        sums += parts * b
        window += parts * b
        seen += b
        win_seen += b
        bar.update(b)
        if (step + 1) % max(run.log_every, 1) == 0:
            w = [x / win_seen for x in window.tolist()]  # the only host sync, every log_every steps
            check_finite(w[0], epoch)
            bar.set_postfix(loss=f"{w[0]:.4f}", l1=f"{w[1]:.4f}", perc=f"{w[2]:.4g}", sync=f"{w[3]:.4f}",
                            sps=f"{seen / (time.perf_counter() - t0):.0f}")
            window.zero_()
            win_seen = 0
    bar.close()
    totals = [x / max(seen, 1) for x in sums.tolist()]
    check_finite(totals[0], epoch)
    dt = time.perf_counter() - t0
    out = {"train_loss": totals[0], "l1": totals[1], "samples_per_s": seen / dt if dt > 0 else 0.0, "seconds": dt}
    if losses.perceptual is not None:
        out["perceptual"] = totals[2]
    if losses.syncnet is not None:
        out["sync"] = totals[3]
    return out
