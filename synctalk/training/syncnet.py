"""The per-person SyncNet: train it (resumably), validate it, reuse one, load one frozen.

Each epoch every training frame is shown once, half of them with their own audio window (label 1)
and half with a window at least 5 frames away (label 0), drawn anew every epoch; a share of those
negatives (`hard_negatives`) is re-drawn 2-15 frames away, and with `augment` the pairs are jittered
on the device (never in validation). The loss is BCE-with-logits on `SyncNet.logits`.

Validation runs on the held-out tail: loss, accuracy, and offset accuracy — the fraction of
held-out frames whose own window (offset 0) scores highest among offsets -15…+15 — with two looser
readings of the same scores: `offset_acc_1` (the best offset within ±1 frame) and `clip_offset` (the
offset with the highest mean score over the whole tail, 0 when the critic finds the clip in sync).
checkpoint_best.pth is the epoch with the best offset accuracy.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SyncTalkError
from ..layout import DatasetLayout, checkpoint_layout, dataset_layout
from ..state import TrainingState
from . import (RunOptions, autocast, batches, begin_step, check_finite, configure_backends, make_scaler,
               maybe_compile, print_epoch, resolve_amp, rng_state, set_up_run, synchronize, use_graphs)
from .checkpoint import (best_path, check_asr, epoch_payload, latest_path, load_checkpoint,
                         restart_or_resume, write_epoch)

SECTION = "syncnet_training"
MAX_OFFSET = 15
BASE_BATCH = 16  # the batch size the default learning rate is meant for


@dataclass
class SyncNetTrainConfig:
    """What one SyncNet run learns from and how long."""

    name: str
    dataset_dir: Path = Path("dataset")
    checkpoint_dir: Path = Path("checkpoint")
    asr: str | None = None  # None: the dataset's (or the resumed checkpoint's)
    width: str | None = None  # None: "full" (or the resumed checkpoint's)
    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    val_fraction: float = 0.1
    keep_checkpoints: int = 3
    save_interval: int = 1
    restart: bool = False
    # a person's video is short: an epoch draws at least this many pairs (frames repeat, each time
    # with a fresh negative) so the critic gets enough steps per epoch to leave the 0.69 plateau
    min_pairs_per_epoch: int = 8192
    # against memorising a short video (synctalk.data, "SyncNet: hard negatives and augmentation"):
    # batched jitter of the training pairs, and the share of negatives drawn 2-15 frames away
    augment: bool = False
    hard_negatives: float = 0.5
    # what the critic sees (None: a resumed run's value, else the network's default)
    face_frames: int | None = None  # consecutive crops on the face side
    audio_context: int | None = None  # log-mel steps around the frame (0: the whole window)
    run: RunOptions = field(default_factory=RunOptions)


@dataclass
class SyncNetResult:
    """What a call to train_syncnet left behind."""

    checkpoint: Path  # the checkpoint the UNet should use (best)
    epochs: int
    asr: str
    trained_epochs: int  # epochs run by this call (0: it was done already)
    metrics: dict[str, float]


# ---------------------------------------------------------------- steps


def syncnet_step(model: Any, optimizer: Any, scaler: Any, faces: Any, audio: Any, labels: Any,
                 device: Any, amp: str, graphs: bool = False) -> tuple[Any, Any]:
    """One optimisation step; returns (loss, correct count) as device tensors (no host sync).
    `graphs`: the network was compiled with CUDA graphs (maybe_compile)."""
    import torch.nn.functional as F

    begin_step(graphs)
    with autocast(device, amp):
        audio_emb, face_emb = model(faces, audio)
    logits = _raw(model).logits(audio_emb, face_emb).float()
    loss = F.binary_cross_entropy_with_logits(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    correct = ((logits > 0).float() == labels).sum()
    return loss.detach(), correct.detach()


def train_syncnet_steps(model: Any, optimizer: Any, data: Any, steps: int, batch_size: int, *,
                        device: Any, amp: str = "none", scaler: Any = None, generator: Any = None,
                        frames: Any = None, graphs: bool = False) -> dict[str, float]:
    """Run `steps` training steps on random balanced pairs (for benchmarks); returns loss and samples/s."""
    import torch

    from ..data import syncnet_pairs

    g = generator or torch.Generator().manual_seed(0)
    scaler = scaler or make_scaler(device, amp)
    pool = torch.as_tensor(frames if frames is not None else np.arange(len(data)), dtype=torch.long)
    model.train()
    total = torch.zeros((), device=device)
    t0 = None
    done = 0
    draws = [syncnet_pairs(pool[torch.randint(len(pool), (batch_size,), generator=g)], pool, g, shuffle=False)
             for _ in range(steps + 1)]
    # every step's pairs go to the device in one copy, as an epoch's do: a host-to-device copy per
    # step would make the host wait for the GPU's queued work every step
    pairs = torch.stack([torch.cat([d[0] for d in draws]), torch.cat([d[1] for d in draws])]).to(device)
    all_labels = torch.cat([d[2] for d in draws]).to(device)
    for step in range(steps + 1):  # step 0 warms up (allocator, cudnn autotune, compile)
        sl = slice(step * batch_size, (step + 1) * batch_size)
        face_idx, audio_idx, labels = pairs[0, sl], pairs[1, sl], all_labels[sl]
        faces = data.face_stack(face_idx, _raw(model).face_frames, int(pool.min()), int(pool.max()))
        loss, _ = syncnet_step(model, optimizer, scaler, faces, data.audio(audio_idx), labels, device, amp, graphs)
        if step == 0:
            synchronize(device)
            t0 = time.perf_counter()
            continue
        total += loss
        done += batch_size
    synchronize(device)
    dt = time.perf_counter() - (t0 or time.perf_counter())
    return {"loss": float(total) / max(steps, 1), "samples_per_s": done / dt if dt > 0 else float("inf"),
            "seconds": dt, "steps": steps}


def _raw(model: Any) -> Any:
    from .checkpoint import unwrap

    return unwrap(model)


# ---------------------------------------------------------------- validation


def evaluate_syncnet(model: Any, data: Any, val_idx: Any, *, device: Any, amp: str = "none",
                     batch_size: int = 64, seed: int = 0, max_offset: int = MAX_OFFSET) -> dict[str, float]:
    """Held-out loss, accuracy (balanced pairs) and offset accuracy (offset 0 best of ±max_offset)."""
    import torch
    import torch.nn.functional as F

    from ..data import far_indices

    if len(val_idx) == 0:
        return {}
    raw = _raw(model)
    was_training = raw.training
    raw.eval()
    n = len(data)
    v = torch.as_tensor(np.asarray(val_idx), dtype=torch.long)
    g = torch.Generator().manual_seed(seed + 7919)  # the same held-out pairs every epoch
    neg = far_indices(v, torch.arange(n), g)
    face_idx = torch.cat([v, v])
    audio_idx = torch.cat([v, neg])
    labels = torch.cat([torch.ones(len(v)), torch.zeros(len(v))])
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    lo = max(0, int(v.min()) - max_offset)
    hi = min(n - 1, int(v.max()) + max_offset)
    span = torch.arange(lo, hi + 1)
    with torch.no_grad():
        for start in range(0, len(face_idx), batch_size):
            sl = slice(start, start + batch_size)
            fi, ai, y = face_idx[sl].to(device), audio_idx[sl].to(device), labels[sl].to(device)
            with autocast(device, amp):
                a, f = raw(data.face_stack(fi, raw.face_frames), data.audio(ai))
            logits = raw.logits(a, f).float()
            loss_sum += F.binary_cross_entropy_with_logits(logits, y, reduction="sum")
            correct += ((logits > 0).float() == y).sum()
        # embeddings of every frame within max_offset of the held-out tail, in one pass
        a_parts, f_parts = [], []
        for start in range(0, len(span), batch_size):
            idx = span[start:start + batch_size].to(device)
            with autocast(device, amp):
                a, f = raw(data.face_stack(idx, raw.face_frames), data.audio(idx))
            a_parts.append(a.float())
            f_parts.append(f.float())
        emb_a = torch.cat(a_parts)
        emb_f = torch.cat(f_parts)
        offsets = torch.arange(-max_offset, max_offset + 1)
        j = v[:, None] + offsets[None, :]  # (V, O) audio frame for each offset
        valid = (j >= 0) & (j < n)
        jj = (j.clamp(0, n - 1) - lo).to(device)
        ff = emb_f[(v - lo).to(device)]  # (V, 512)
        scores = raw.logits(emb_a[jj.reshape(-1)], ff.repeat_interleave(len(offsets), dim=0)).float()
        scores = scores.reshape(len(v), len(offsets)).masked_fill(~valid.to(device), float("-inf"))
        best = scores.argmax(dim=1)
        offset_acc = (best == max_offset).float().mean()
        near_acc = ((best - max_offset).abs() <= 1).float().mean()
        # the clip as a whole: the offset whose mean score is highest, over the held-out frames that
        # have every offset (so each offset is averaged over the same frames)
        whole = valid.all(dim=1).to(device)
        rows = scores[whole] if bool(whole.any()) else scores.clamp(min=-1e4)
        clip_offset = int(offsets[int(rows.mean(dim=0).argmax())])
    if was_training:
        raw.train()
    m = len(face_idx)
    return {"val_loss": float(loss_sum) / m, "val_acc": float(correct) / m, "offset_acc": float(offset_acc),
            "offset_acc_1": float(near_acc), "clip_offset": clip_offset}


# ---------------------------------------------------------------- reuse and loading


def register_reused_syncnet(layout: DatasetLayout, path: str | Path, asr: str) -> dict[str, Any]:
    """Record that this person's SyncNet step is satisfied by another person's checkpoint file."""
    path = Path(path).resolve()
    ckpt = load_checkpoint(path, "syncnet")
    check_asr(ckpt, asr, path, "reuse a SyncNet trained on the same audio features, or train this person's own")
    sec = TrainingState(layout.state_file).update(
        SECTION, completed=True, checkpoint=str(path), reused_from=str(path), asr=asr,
        width=(ckpt.get("config") or {}).get("width", "full"), epochs=int(ckpt.get("epoch", 0)),
        best_metrics=ckpt.get("metrics") or {},
    )
    return sec


def load_syncnet(path: str | Path, device: Any = "cpu", asr: str | None = None) -> tuple[Any, dict[str, Any]]:
    """A SyncNet checkpoint as an eval-mode network on `device` (asr checked when given)."""
    import torch

    from unet_328 import SyncNet

    ckpt = load_checkpoint(path, "syncnet")
    if asr is not None:
        check_asr(ckpt, asr, path, "use a SyncNet trained on the same audio features (or --no_syncnet)")
    model = SyncNet(ckpt["asr"], **network_options(ckpt.get("config") or {}))
    model.load_state_dict(ckpt["model"])
    return model.to(torch.device(device)).eval(), ckpt


def network_options(config: dict[str, Any]) -> dict[str, Any]:
    """SyncNet constructor options from a checkpoint's config; files without them are of the first layout
    (the lower half of the crop, the whole audio window, one frame)."""
    return {"width": config.get("width", "full"), "face_rows": tuple(config.get("face_rows", (0.5, 1.0))),
            "audio_context": int(config.get("audio_context", 0)), "face_frames": int(config.get("face_frames", 1))}


def syncnet_status(layout: DatasetLayout) -> dict[str, Any]:
    """The person's SyncNet record from the state file ({} when there is none)."""
    return TrainingState(layout.state_file).section(SECTION) if layout.state_file.exists() else {}


# ---------------------------------------------------------------- the run


def train_syncnet(cfg: SyncNetTrainConfig) -> SyncNetResult:
    """Train (or resume, or skip when done) the person's SyncNet; returns its best checkpoint."""
    import torch

    from unet_328 import SyncNet

    from ..data import check_preprocessed, resolve_asr

    run = cfg.run
    dist = run.dist
    layout = dataset_layout(cfg.dataset_dir, cfg.name)
    ckl = checkpoint_layout(cfg.checkpoint_dir, cfg.name)
    run_dir = ckl.syncnet_dir
    check_preprocessed(layout)
    device = dist.start(run.device)  # this rank's device; joins the process group of a torchrun run
    state = TrainingState(layout.state_file)
    sec = state.section(SECTION)
    dist.barrier()  # every rank decides from the same state before rank 0 changes it

    # done already? (a reused checkpoint counts as done whatever --epochs says)
    if not cfg.restart and sec.get("completed") and sec.get("checkpoint") and Path(sec["checkpoint"]).is_file():
        want_asr = cfg.asr or sec.get("asr")
        if sec.get("asr") == want_asr and (sec.get("reused_from") or int(sec.get("epochs", 0)) >= cfg.epochs):
            how = f"reused from {sec['reused_from']}" if sec.get("reused_from") else f"{sec.get('epochs')} epochs"
            dist.log(f"SyncNet of {cfg.name} is already trained ({how}): {sec['checkpoint']}")
            return SyncNetResult(Path(sec["checkpoint"]), int(sec.get("epochs", 0)), sec["asr"], 0,
                                 dict(sec.get("best_metrics") or {}))

    resume = restart_or_resume(run_dir, "syncnet", restart=cfg.restart, state=state, section=SECTION, dist=dist,
                               what="SyncNet")
    asr = cfg.asr
    if resume is not None:
        if asr is not None and resume.get("asr") != asr:
            check_asr(resume, asr, resume["_path"], f"pass --restart to train a new SyncNet for {asr!r} in {run_dir}")
        asr = resume["asr"]
    asr = resolve_asr(layout, asr)
    width = cfg.width or (resume or {}).get("config", {}).get("width") or "full"
    if resume is not None and (resume.get("config") or {}).get("width", width) != width:
        raise SyncTalkError(
            f"{resume['_path']} is a {resume['config']['width']!r}-width SyncNet but --width {width} was asked; "
            f"drop --width to continue it or pass --restart to start over"
        )
    options = {"width": width}
    if resume is not None:
        options = network_options(resume.get("config") or {})
    for key, flag in (("face_frames", "--syncnet_face_frames"), ("audio_context", "--syncnet_audio_context")):
        asked = getattr(cfg, key)
        if asked is None:
            continue
        if resume is not None and options[key] != asked:
            raise SyncTalkError(f"{resume['_path']} was trained with {key} {options[key]} but {flag} {asked} was "
                                f"asked: drop {flag} to continue it or pass --restart to start over")
        options[key] = asked
    start_epoch = int(resume["epoch"]) if resume else 0
    dist.agree((start_epoch, asr, width), "the resumed epoch, audio features and width")
    if resume is not None and start_epoch >= cfg.epochs:
        best = best_path(run_dir) if best_path(run_dir).exists() else Path(resume["_path"])
        if dist.is_main:
            state.update(SECTION, completed=True, epochs=start_epoch, checkpoint=str(best), asr=asr, width=width)
        dist.log(f"SyncNet of {cfg.name} already has {start_epoch} epochs (>= {cfg.epochs}): {best}")
        return SyncNetResult(best, start_epoch, asr, 0, dict(resume.get("metrics") or {}))

    lips = (state.section("preprocessing") or {}).get("lip_activity") or {}
    if lips.get("ok") is False:
        from ..lipcheck import warning_text

        dist.log(warning_text(cfg.name, lips))
    amp = resolve_amp(run.amp, device)
    configure_backends(device)
    setup = set_up_run(layout, asr, SyncNet(asr, **options), lr=cfg.lr, val_fraction=cfg.val_fraction, device=device,
                       amp=amp, run=run, resume=resume)
    data, train_idx, val_idx = setup.data, setup.train_idx, setup.val_idx
    model, optimizer, scaler, gen = setup.model, setup.optimizer, setup.scaler, setup.generator
    best_key = None
    best_metrics: dict[str, float] = {}
    if resume is not None:
        best_metrics = dict(resume.get("best") or {})
        best_key = _best_key(best_metrics) if best_metrics else None
        dist.log(f"resuming SyncNet of {cfg.name} from epoch {start_epoch} ({resume['_path']})")
    # DDP first, then compile (the documented order); `model` stays the plain module for checkpoints
    graphs = use_graphs(run, device)
    step_model = maybe_compile(dist.wrap(model, device, run.sync_bn), run.compile, graphs)
    config = {**model.config, "batch_size": cfg.batch_size, "lr": cfg.lr, "epochs": cfg.epochs,
              "val_fraction": cfg.val_fraction, "amp": amp, "seed": run.seed, "frames": len(data),
              "max_offset": MAX_OFFSET, "world_size": dist.world_size,
              "global_batch_size": cfg.batch_size * dist.world_size}
    procs = f" × {dist.world_size} processes" if dist.enabled else ""
    dist.log(f"SyncNet {cfg.name}: {len(train_idx)} training / {len(val_idx)} held-out frames, asr {asr}, "
             f"width {width}, {model.face_frames} frame(s), batch {cfg.batch_size}{procs}, lr {cfg.lr:g}, "
             f"{device} ({amp}), "
             f"epochs {start_epoch}→{cfg.epochs}")
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        state.update(SECTION, completed=False, target_epochs=cfg.epochs, asr=asr, width=width,
                     epochs=start_epoch, reused_from=None)

    pool = torch.as_tensor(train_idx)
    metrics: dict[str, float] = {}
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        metrics = _syncnet_epoch(step_model, optimizer, scaler, data, pool, gen, epoch, cfg, device, amp, graphs)
        metrics = dist.reduce_metrics(metrics)  # the epoch over all ranks' shards
        if dist.is_main:  # validation on rank 0; every rank then takes its numbers for the "best" decision
            metrics.update(evaluate_syncnet(model, data, val_idx, device=device, amp=amp,
                                            batch_size=max(cfg.batch_size, 32), seed=run.seed))
        metrics = dist.broadcast(metrics)
        key = _best_key(metrics)
        improved = best_key is None or key > best_key
        if improved:
            best_key = key
            best_metrics = {"epoch": epoch, **metrics}
        if dist.is_main:
            print_epoch("SyncNet", epoch, cfg.epochs, metrics, improved)
            payload = epoch_payload("syncnet", model, optimizer, scaler, epoch, asr, config, metrics, best_metrics,
                                    rng_state(gen))
            kept = write_epoch(run_dir, payload, final_epoch=cfg.epochs, save_interval=cfg.save_interval,
                               keep=cfg.keep_checkpoints, improved=improved)
            state.update(SECTION, epochs=epoch, latest=str(latest_path(run_dir)), checkpoint=str(best_path(run_dir)),
                         checkpoints=kept, best_metrics=best_metrics, metrics=metrics, completed=epoch >= cfg.epochs)
    dist.barrier()  # no rank returns before rank 0 has written the last checkpoint and the state
    dist.log(f"SyncNet of {cfg.name} done: {cfg.epochs} epochs; best offset accuracy "
             f"{best_metrics.get('offset_acc', float('nan')):.3f} at epoch {best_metrics.get('epoch')} → "
             f"{best_path(run_dir)}")
    return SyncNetResult(best_path(run_dir), cfg.epochs, asr, cfg.epochs - start_epoch, best_metrics)


def _best_key(m: dict[str, float]) -> tuple[float, float]:
    """Higher is better: offset accuracy first, then low held-out (or training) loss."""
    if "offset_acc" in m:
        return (m["offset_acc"], -m.get("val_loss", 0.0))
    return (0.0, -m.get("train_loss", float("inf")))


def _syncnet_epoch(model: Any, optimizer: Any, scaler: Any, data: Any, pool: Any, gen: Any, epoch: int,
                   cfg: SyncNetTrainConfig, device: Any, amp: str, graphs: bool = False) -> dict[str, float]:
    import torch
    from tqdm import tqdm

    from ..data import SyncNetAugment, add_hard_negatives, syncnet_pairs

    run = cfg.run
    model.train()
    repeats = max(1, math.ceil(cfg.min_pairs_per_epoch / max(len(pool), 1)))
    face_idx, audio_idx, labels = syncnet_pairs(pool.repeat(repeats), pool, gen)
    if cfg.hard_negatives > 0:
        audio_idx = add_hard_negatives(face_idx, audio_idx, labels, pool, gen, cfg.hard_negatives)
    aug = SyncNetAugment() if cfg.augment else None
    frames, lo, hi = _raw(model).face_frames, int(pool.min()), int(pool.max())  # stacks stay in the training frames
    # jitter drawn with the pairs (host generator): the same on every rank and after a resume
    jitter = aug.sample(len(face_idx), gen) if aug is not None else torch.zeros(len(face_idx), 0)
    face_idx, audio_idx, labels, jitter = (run.dist.shard(t).to(device) for t in (face_idx, audio_idx, labels, jitter))
    n = len(face_idx)
    sums = torch.zeros(2, device=device)  # loss·batch, correct
    window = torch.zeros(2, device=device)
    seen = win_seen = 0
    t0 = time.perf_counter()
    bar = tqdm(total=n, desc=f"SyncNet {epoch}/{cfg.epochs}", unit="img", leave=False,
               disable=not (run.progress and run.dist.is_main))
    # compiled steps keep one batch shape: a partial last batch would compile (and record) again
    for k, sl in enumerate(batches(n, cfg.batch_size, drop_last=run.compile)):
        b = sl.stop - sl.start
        faces = data.face_stack(face_idx[sl], frames, lo, hi)
        audio = data.audio(audio_idx[sl])
        if aug is not None:
            faces, audio = aug.faces(faces, jitter[sl]), aug.audio(audio, jitter[sl], data.spec.layout)
        loss, correct = syncnet_step(model, optimizer, scaler, faces, audio, labels[sl], device, amp, graphs)
        step = torch.stack([loss * b, correct])
        sums += step
        window += step
        seen += b
        win_seen += b
        bar.update(b)
        if (k + 1) % max(run.log_every, 1) == 0:
            wl, wc = window.tolist()  # the only host sync, every log_every steps
            check_finite(wl, epoch)
            bar.set_postfix(loss=f"{wl / win_seen:.4f}", acc=f"{wc / win_seen:.3f}",
                            sps=f"{seen / (time.perf_counter() - t0):.0f}")
            window.zero_()
            win_seen = 0
    bar.close()
    total_loss, total_correct = sums.tolist()
    check_finite(total_loss, epoch)
    dt = time.perf_counter() - t0
    return {"train_loss": total_loss / max(seen, 1), "train_acc": total_correct / max(seen, 1),
            "samples_per_s": seen / dt if dt > 0 else 0.0, "seconds": dt}
