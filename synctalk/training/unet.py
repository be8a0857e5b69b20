"""The UNet-328 generator: train it (resumably), validate it on the held-out tail, preview it.

A sample is the inner 320 crop of frame i (target), the same crop with the mouth rectangle blacked
out, the crop of a random other training frame (reference: what the person looks like), and the
audio window of frame i. Loss = w_l1·L1 + w_p·perceptual (VGG19) + w_s·sync (the person's frozen
SyncNet judging the prediction against the audio, from a fifth of the epochs on; --sync_mode relative
asks only for the real frame's score) + w_a·adversarial (a patch critic of the mouth,
synctalk.training.adversarial; 0.02 from a fifth of the epochs on, --adversarial_weight 0 turns it off;
--feature_matching_weight, 1 by default with the critic, adds the distance of its hidden activations,
generated vs real).
Each epoch ends with held-out L1 and PSNR;
checkpoint_best.pth is the epoch with the lowest held-out L1 among those that every loss term took
part in. `UNetTask` is what the training loop
(synctalk.training.loop) runs; `synctalk train-unet` starts it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch

from unet_328 import build_unet
from unet_328.discriminator import AUTO_WIDTH

from ..constants import CROP_SIZE, INNER
from ..data import (DEFAULT_MASK, Batch, FrameData, feature_audio_dim, frame_groups, load_frame_data, parse_mask,
                    reference_indices, split_indices)
from ..errors import SyncTalkError
from ..fileio import write_bytes_atomic
from ..layout import DatasetLayout
from ..losses import SYNC_MODES, PerceptualLoss, load_perceptual_loss, sync_loss
from ..state import MAIN, SYNCNET, TrainingState
from .adversarial import STATE_KEY as ADVERSARY_KEY, Adversary, build_adversary, default_start_epoch
from .checkpoint import unwrap
from .config import UNetConfig
from .loop import Speed, Task
from .runtime import Distributed, autocast, batches, begin_step, maybe_compile, prepare_module
from .syncnet import load_syncnet

SECTION = MAIN
BASE_BATCH = 8  # the batch size the default learning rate is meant for
LOSS_TERMS = ("loss", "l1", "perceptual", "sync")
# the quality gate of --syncnet auto: held-out offset accuracy within ±1 frame at speech (chance 3/31);
# a SyncNet trained before that figure existed: exact offset accuracy over all frames (chance 1/31)
MIN_SYNCNET_SPEECH_ACC_1 = 0.5
MIN_SYNCNET_OFFSET_ACC = 0.2


class UNetLosses:
    """The weighted loss terms; returns (total, detached [total, l1, perceptual, sync])."""

    def __init__(self, l1_weight: float = 1.0, perceptual: torch.nn.Module | None = None,
                 perceptual_weight: float = 0.01, syncnet: torch.nn.Module | None = None, sync_weight: float = 0.03,
                 sync_mode: str = "absolute"):
        if sync_mode not in SYNC_MODES:
            raise SyncTalkError(f"--sync_mode must be one of {', '.join(SYNC_MODES)}, got {sync_mode!r}")
        self.l1_weight = l1_weight
        self.perceptual = perceptual if perceptual_weight else None
        self.perceptual_weight = perceptual_weight
        self.syncnet = syncnet if sync_weight else None
        self.sync_weight = sync_weight
        self.sync_mode = sync_mode

    @property
    def group(self) -> int:
        """Consecutive frames each batch must come in (the SyncNet's face frames; 1 without one)."""
        return int(getattr(self.syncnet, "face_frames", 1)) if self.syncnet is not None else 1

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, audio: torch.Tensor,
                 sync: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """`sync` False: leave the critic out of this step (the epochs before --sync_start_epoch)."""
        l1 = (pred.float() - target.float()).abs().mean()
        zero = l1.new_zeros(())
        total = self.l1_weight * l1
        perc = zero
        if self.perceptual is not None:
            perc = self.perceptual(pred, target).float()
            total = total + self.perceptual_weight * perc
        sync_term = zero
        if self.syncnet is not None and sync:
            sync_term = sync_loss(self.syncnet, pred, audio, target if self.sync_mode == "relative" else None).float()
            total = total + self.sync_weight * sync_term
        return total, torch.stack([total, l1, perc, sync_term]).detach()


# ---------------------------------------------------------------- steps


def unet_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, batch: Batch,
              losses: UNetLosses, device: torch.device, amp: str, graphs: bool = False,
              adversary: Adversary | None = None, sync: bool = True) -> torch.Tensor:
    """One optimisation step; returns the detached loss terms (a device tensor, no host sync).
    `graphs`: the networks were compiled with CUDA graphs (maybe_compile). `adversary`: add its
    terms to the loss, then update the critic on this batch (the terms gain adversary.terms).
    `sync` False: no sync loss in this step (before its start epoch)."""
    begin_step(graphs)
    with autocast(device, amp):
        pred = model(batch.img6, batch.audio)
        total, parts = losses(pred, batch.target, batch.audio, sync=sync)
        if adversary is not None:
            adv_total, adv_g = adversary.generator_loss(pred, batch.target)
            total = total + adv_total
            # the critic's copy of the prediction, taken before the backward: with CUDA graphs the
            # graph's output memory belongs to the graph pool
            fake = adversary.model.crop(pred.detach()).clone()
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    scaler.step(optimizer)
    scaler.update()
    if adversary is not None:  # the critic learns from the prediction the UNet made before its update
        adv_d = adversary.step(batch.target, fake)
        parts = torch.cat([total.detach().float().reshape(1), parts[1:], adv_g[:1].float(),
                           adv_d.float().reshape(1), adv_g[1:].float()])
    return parts


def random_frames(pool: torch.Tensor, batch_size: int, group: int, generator: torch.Generator) -> torch.Tensor:
    """A batch of random training frames from `pool` (sorted), in runs of `group` consecutive frames
    when the SyncNet judges several at once (UNetLosses.group); about `batch_size` of them."""
    centres = pool[torch.randint(len(pool), (max(1, batch_size // group),), generator=generator)]
    return frame_groups(centres, group, int(pool.min()), int(pool.max())).reshape(-1)


def random_batches(pool: torch.Tensor, batch_size: int, group: int, generator: torch.Generator, steps: int,
                   device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`steps` (frames, reference frames) batches of random_frames, drawn on the host and moved to the
    device in one copy, as an epoch's order is: a host-to-device copy per step would make the host
    wait for the GPU's queued work every step."""
    idx = [random_frames(pool, batch_size, group, generator) for _ in range(steps)]
    ref = [reference_indices(i, pool, generator) for i in idx]
    sizes = [len(i) for i in idx]
    both = torch.stack([torch.cat(idx), torch.cat(ref)]).to(device)
    return list(zip(both[0].split(sizes), both[1].split(sizes)))


# ---------------------------------------------------------------- validation and previews


def validation_references(val_idx: Any, train_idx: Any, seed: int = 0) -> torch.Tensor:
    """The reference frame of each held-out frame in validation: training frames drawn by a generator of
    its own, so every epoch (and a diagnostic of the same run) sees the same ones."""
    g = torch.Generator().manual_seed(seed + 104729)
    return reference_indices(torch.as_tensor(np.asarray(val_idx), dtype=torch.long),
                             torch.as_tensor(np.asarray(train_idx), dtype=torch.long), g)


def evaluate_unet(model: torch.nn.Module, data: FrameData, val_idx: Any, train_idx: Any, *, device: torch.device,
                  amp: str = "none", mask: Sequence[int] | None = None, batch_size: int = 16,
                  seed: int = 0) -> dict[str, float]:
    """Held-out L1 and PSNR (dB, per image then averaged) with fixed reference frames."""
    if len(val_idx) == 0:
        return {}
    mask = tuple(mask or DEFAULT_MASK)
    raw = unwrap(model)
    was_training = raw.training
    raw.eval()
    v = torch.as_tensor(np.asarray(val_idx), dtype=torch.long)
    ref = validation_references(v, train_idx, seed)
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


def write_preview(model: torch.nn.Module, data: FrameData, frame: int, ref_frame: int, path: Path, *,
                  device: torch.device, amp: str = "none",
                  mask: Sequence[int] | None = None) -> Path:
    """A PNG of masked input | prediction | ground truth for one frame (atomic write)."""
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

    def to_img(t: torch.Tensor) -> np.ndarray:
        return (t[0].float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()

    strip = np.concatenate([to_img(b.img6[:, 3:6]), to_img(pred), to_img(b.target)], axis=1)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(strip))
    if not ok:
        raise SyncTalkError(f"could not encode the preview {path}")
    write_bytes_atomic(path, buf.tobytes())
    return path


# ---------------------------------------------------------------- the run




# ---------------------------------------------------------------- the critic and the perceptual loss


def choose_syncnet(choice: str, state: TrainingState, asr: str, name: str, dist: Distributed) -> Path | None:
    """Which SyncNet checkpoint the sync loss uses (None: no sync loss), from --syncnet auto|on|off|PATH.

    auto: the person's own SyncNet once trained and past the quality gate; on: the person's own,
    required, gate or not; PATH: that checkpoint (another person's; its audio features are checked).
    """
    choice = (choice or "auto").strip()
    if choice == "off":
        return None
    if choice not in ("auto", "on"):
        path = Path(choice)
        if not path.is_file():
            raise SyncTalkError(f"--syncnet {choice}: no such SyncNet checkpoint (give auto, on, off or a file)")
        sec = state.section(SYNCNET)
        if sec.get("reused_from") and Path(sec["reused_from"]) == path.resolve():
            passes, reading = syncnet_gate(sec.get("best_metrics") or {})
            if not passes:  # asked for by name: used, but the user should know what it can judge
                dist.log(f"warning: the SyncNet {path} reaches {reading} on {name}'s held-out tail; its sync "
                         f"loss may teach the UNet little (--syncnet auto would leave it out)")
        return path
    sec = state.section(SYNCNET)
    path = Path(sec["checkpoint"]) if sec.get("checkpoint") else None
    done = bool(sec.get("completed")) and path is not None and path.is_file()
    if not done:
        if choice == "on":
            raise SyncTalkError(
                f"--syncnet on: {name} has no trained SyncNet yet; train it first (synctalk train-syncnet --name "
                f"{name}, or scripts/train_328.py --name {name} --train_syncnet), give --syncnet PATH, or drop it"
            )
        return None
    if sec.get("asr") not in (None, asr):
        raise SyncTalkError(
            f"the SyncNet of {name} ({path}) was trained on {sec.get('asr')!r} features but this UNet uses {asr!r}: "
            f"train a SyncNet for {asr!r} (train-syncnet --asr {asr} --restart) or pass --syncnet off"
        )
    # A critic that cannot tell in-sync from off-sync teaches nothing: its gradient only paints
    # patterns that fool it (seen as coloured blobs in the lower face). Unless asked for explicitly,
    # the sync loss waits for a SyncNet that passes syncnet_gate.
    passes, reading = syncnet_gate(sec.get("best_metrics") or {})
    if not passes and choice == "auto":
        dist.log(f"warning: the SyncNet of {name} reaches {reading}; training the UNet without the sync loss. "
                 f"Train the SyncNet longer (train-syncnet --epochs N) or force it with --syncnet on.")
        return None
    return path


def syncnet_gate(best: dict[str, Any]) -> tuple[bool, str]:
    """(passes, what it reads) of the quality gate on a SyncNet's best held-out metrics."""
    if "offset_acc_1_speech" in best:
        key, what, least = "offset_acc_1_speech", "offset accuracy (±1 frame, at speech)", MIN_SYNCNET_SPEECH_ACC_1
    else:
        key, what, least = "offset_acc", "offset accuracy", MIN_SYNCNET_OFFSET_ACC
    value = float(best.get(key, 0.0))
    return value >= least, f"a held-out {what} of {value:.3f} (the gate: {least})"


def choose_perceptual(choice: str, models_dir: str | None, dist: Distributed) -> tuple[str, PerceptualLoss | None]:
    """(resolved name, loss) for --perceptual auto|vgg19|none; auto says once why it trains without VGG19.

    An explicit vgg19 whose weights are missing stays an error (the message names the paths tried).
    """
    if choice == "auto":
        from ..weights import resolve_model_file

        try:
            resolve_model_file("vgg19", models_dir)
        except SyncTalkError as exc:
            dist.log(f"perceptual loss: none (VGG19 weights not found: {str(exc).splitlines()[0]}); "
                     f"`synctalk models download vgg19` adds it")
            return "none", None
        choice = "vgg19"
    with dist.main_first():  # rank 0 reads (or fetches) the weights first; the others then read them
        return choice, load_perceptual_loss(choice, models_dir)


DEFAULT_FEATURE_MATCHING = 1.0  # with the mouth critic on; --adversarial_weight 0 keeps the plain L1 run


def feature_matching_weight(cfg: UNetConfig) -> float:
    """--feature_matching_weight, or its default: 1 when the mouth critic trains, 0 when it is off."""
    if cfg.feature_matching_weight is not None:
        return float(cfg.feature_matching_weight)
    return DEFAULT_FEATURE_MATCHING if cfg.adversarial_weight else 0.0


def parse_disc_box(text: str | None) -> tuple[int, int, int, int] | None:
    """--disc_box x0,y0,x1,y1 (the critic's mouth box in the 320 crop) → a checked tuple; None: the default."""
    if not text:
        return None
    try:
        return parse_mask(text)
    except SyncTalkError as exc:
        raise SyncTalkError(f"--disc_box: {str(exc).replace('mask', 'box', 1)}") from None


# ---------------------------------------------------------------- the task


class UNetTask(Task):
    """The UNet's part of a run: masked frame + reference + audio → the frame; L1 (+ VGG19, + sync)."""

    kind, section, what = "unet", SECTION, "UNet"
    terms = ("train_loss", "l1", "perceptual", "sync")
    gpu_batch, cpu_batch, base_batch = 32, 8, BASE_BATCH

    def __init__(self, model: torch.nn.Module, data: FrameData, train_idx: Any, val_idx: Any, *,
                 perceptual: torch.nn.Module | None = None, syncnet: torch.nn.Module | None = None,
                 l1_weight: float = 1.0, perceptual_weight: float = 0.01, sync_weight: float = 0.03,
                 sync_mode: str = "absolute", sync_start_epoch: int = 1,
                 mask: Sequence[int] = DEFAULT_MASK, see_res: bool = False, adversary: Adversary | None = None,
                 **kw: Any):
        super().__init__(model, data, train_idx, val_idx, **kw)
        self.adversary = adversary  # None: no critic (--adversarial_weight 0)
        self.epoch: int | None = None  # set by epoch_batches; None (benchmarks): the critic takes part
        if adversary is not None:
            self.terms = type(self).terms + adversary.terms
        sp, dev = self.speed, self.device
        # the frozen loss networks run the step's way too: same layout, compiled into the same graphs
        if perceptual is not None:
            perceptual = maybe_compile(prepare_module(perceptual, dev, sp.channels_last), sp.compile, sp.cuda_graphs)
        if syncnet is not None:
            syncnet = maybe_compile(prepare_module(syncnet.requires_grad_(False).eval(), dev, sp.channels_last),
                                    sp.compile, sp.cuda_graphs)
        self.losses = UNetLosses(l1_weight, perceptual, perceptual_weight, syncnet, sync_weight, sync_mode)
        self.sync_start_epoch = int(sync_start_epoch)
        self.mask = tuple(mask)
        self.see_res = see_res
        self.group = self.losses.group  # > 1: the SyncNet judges runs of k frames, so batches come in such runs
        self.batch_size = max(self.group, sp.batch_size // self.group * self.group)
        self.syncnet_path: Path | None = None
        self.perceptual_name = "vgg19" if perceptual is not None else "none"
        vi, ti = np.asarray(val_idx), np.asarray(train_idx)
        self.preview_frame = int(vi[0]) if len(vi) else int(ti[len(ti) // 2])
        self.preview_ref = int(ti[0]) if int(ti[0]) != self.preview_frame else int(ti[-1])

    @classmethod
    def build(cls, cfg: UNetConfig, layout: DatasetLayout, state: TrainingState, *, asr: str, device: torch.device,
              speed: Speed, dist: Distributed, resume: dict[str, Any] | None, av_offset: "int | np.ndarray" = 0) -> "UNetTask":
        """Critic and perceptual loss first (what can fail on a missing file fails before the crop cache),
        then data, network and optimizer."""
        rcfg = (resume or {}).get("config") or {}
        mask = parse_mask(cfg.mask if cfg.mask else tuple(rcfg.get("mask") or DEFAULT_MASK))
        syncnet_path = choose_syncnet(cfg.syncnet, state, asr, layout.name, dist)
        syncnet = load_syncnet(syncnet_path, device, asr)[0] if syncnet_path is not None else None
        perceptual_name, perceptual = choose_perceptual(cfg.perceptual, cfg.models_dir, dist)
        with dist.main_first():  # rank 0 builds a missing crop cache; the others then read it
            data = load_frame_data(layout, asr, device=device, channels_last=speed.channels_last,
                                   progress=cfg.progress and dist.is_main, on_device=speed.cache_on_device,
                                   av_offset=av_offset)
        train_idx, val_idx = split_indices(len(data), cfg.val_fraction)
        # before the critic: the UNet's initial weights stay those of an L1 run
        unet = build_unet(asr, cfg.width, feature_audio_dim(layout, asr))
        adversary = build_adversary(
            weight=cfg.adversarial_weight, lr=cfg.disc_lr,
            start_epoch=cfg.adversarial_start_epoch or default_start_epoch(cfg.epochs),
            width=AUTO_WIDTH.get(cfg.width or "full", "mobile") if cfg.disc_width == "auto" else cfg.disc_width,
            box=parse_disc_box(cfg.disc_box), device=device, amp=speed.amp,
            channels_last=speed.channels_last, dist=dist, resume=resume, seed=cfg.seed,
            fm_weight=feature_matching_weight(cfg))
        task = cls(unet, data, train_idx, val_idx, perceptual=perceptual, syncnet=syncnet,
                   l1_weight=cfg.l1_weight, perceptual_weight=cfg.perceptual_weight, sync_weight=cfg.sync_weight,
                   sync_mode=cfg.sync_mode, sync_start_epoch=cfg.sync_start_epoch or default_start_epoch(cfg.epochs),
                   mask=mask, see_res=cfg.see_res, adversary=adversary, device=device, speed=speed, dist=dist,
                   seed=cfg.seed,
                   sync_bn=cfg.sync_bn, resume=resume,
                   run_numbers={"width": cfg.width, "epochs": cfg.epochs, "val_fraction": cfg.val_fraction})
        task.syncnet_path, task.perceptual_name = syncnet_path, perceptual_name
        return task

    def _batches(self, order: torch.Tensor, refs: torch.Tensor, start_step: int = 0) -> Iterator[tuple[Batch, int]]:
        # compiled steps keep one batch shape: a partial last batch would compile (and record) again
        for sl in list(batches(len(order), self.batch_size, drop_last=self.speed.compile))[start_step:]:
            yield self.data.unet_batch(order[sl], refs[sl], self.mask), sl.stop - sl.start

    def epoch_batches(self, epoch: int, start_step: int = 0) -> tuple[int, Iterator[tuple[Any, int]]]:
        """Every training frame once in random order (in runs of the critic's frames), each with a random reference."""
        self.epoch = epoch  # the adversarial stage starts at its epoch
        pool, k, gen = self.pool, self.group, self.generator
        order = pool[torch.randperm(len(pool), generator=gen)]
        if k > 1:
            order = frame_groups(order[: max(1, len(pool) // k)], k, int(pool.min()), int(pool.max()))
        refs = reference_indices(order.reshape(-1), pool, gen).reshape(order.shape)
        # shard whole runs; then flat sample order
        order = self.dist.shard(order).reshape(-1).to(self.device)
        refs = self.dist.shard(refs).reshape(-1).to(self.device)
        return len(order), self._batches(order, refs, start_step)

    def random_batches(self, steps: int, generator: torch.Generator) -> Iterator[tuple[Any, int]]:
        """`steps` batches of random training frames, drawn on the host and moved in one copy."""
        for idx, ref in random_batches(self.pool, self.batch_size, self.group, generator, steps, self.device):
            yield self.data.unet_batch(idx, ref, self.mask), len(idx)

    def _sync_on(self) -> bool:
        """Whether the sync loss takes part in this epoch (a critic is loaded and its start epoch has come)."""
        return self.losses.syncnet is not None and (self.epoch is None or self.epoch >= self.sync_start_epoch)

    def _adversary_on(self) -> bool:
        return self.adversary is not None and (self.epoch is None or self.adversary.active(self.epoch))

    def stage_start(self) -> int:
        """The epoch from which every loss term of the run takes part (1: all from the start)."""
        starts = [1]
        if self.losses.syncnet is not None:
            starts.append(self.sync_start_epoch)
        if self.adversary is not None:
            starts.append(self.adversary.start_epoch)
        return max(starts)

    def step(self, batch: Batch) -> torch.Tensor:
        """One optimisation step: [total, l1, perceptual, sync] (+ the adversary's terms) of the batch."""
        adv = self.adversary
        sync = self._sync_on()
        if adv is not None and not self._adversary_on():
            parts = unet_step(self.step_model, self.optimizer, self.scaler, batch, self.losses, self.device,
                              self.amp, self.graphs, sync=sync)
            return torch.cat([parts, parts.new_zeros(len(adv.terms))])  # the warm-up without the critic
        return unet_step(self.step_model, self.optimizer, self.scaler, batch, self.losses, self.device, self.amp,
                         self.graphs, adversary=adv, sync=sync)

    def active_terms(self) -> tuple[str, ...]:
        """L1 always; perceptual, sync and the adversarial terms when they take part."""
        return ("train_loss", "l1") + (("perceptual",) if self.losses.perceptual is not None else ()) \
            + (("sync",) if self._sync_on() else ()) + (self.adversary.terms if self._adversary_on() else ())

    def extra_state(self) -> dict[str, Any]:
        """The critic's weights, optimizer and scaler (checkpoint_latest.pth only), when there is one."""
        return {ADVERSARY_KEY: self.adversary.state_dict()} if self.adversary is not None else {}

    def evaluate(self) -> dict[str, float]:
        """Held-out L1 and PSNR."""
        return evaluate_unet(self.model, self.data, self.val_idx, self.train_idx, device=self.device, amp=self.amp,
                             mask=self.mask, batch_size=max(self.speed.batch_size, 16), seed=self.seed)

    def better(self, metrics: dict[str, float], best: dict[str, Any]) -> bool:
        """A lower held-out L1 (training loss when there is no held-out tail). Once every critic (the
        mouth critic, the sync loss) takes part, only those epochs compete: a critic buys sharpness or sync
        with a little L1, so an epoch without it would otherwise stay "best" (and be rendered) for ever."""
        def value(m: dict[str, Any]) -> float:
            return float(m.get("_value", m.get("val_l1", m.get("train_loss", float("inf")))))

        start = self.stage_start()
        if self.epoch is not None and self.epoch >= start and int(best.get("epoch", 0)) < start:
            return True
        return not best or value(metrics) < value(best)

    def after_epoch(self, epoch: int, run_dir: Path) -> None:
        """The preview strip of the epoch (--see_res)."""
        if self.see_res:
            write_preview(self.model, self.data, self.preview_frame, self.preview_ref,
                          run_dir / "previews" / f"epoch_{epoch:04d}.png", device=self.device, amp=self.amp,
                          mask=self.mask)

    def network_config(self) -> dict[str, Any]:
        """What rebuilds the UNet (asr, width, mask) and the run's numbers."""
        return {"asr": self.data.asr, "width": self.run_numbers.get("width", "full"),
                **{k: v for k, v in unwrap(self.model).config.items() if k == "audio_dim"}, "mask": list(self.mask),
                "batch_size": self.speed.batch_size, "lr": self.speed.lr, **self.run_numbers,
                "perceptual": self.perceptual_name, "l1_weight": self.losses.l1_weight,
                "perceptual_weight": self.losses.perceptual_weight,
                "sync_weight": self.losses.sync_weight if self.losses.syncnet is not None else 0.0,
                **({"sync_mode": self.losses.sync_mode, "sync_start_epoch": self.sync_start_epoch}
                   if self.losses.syncnet is not None else {}),
                **self._adversarial_config(),
                "syncnet_checkpoint": str(self.syncnet_path.resolve()) if self.syncnet_path else None,
                "amp": self.amp, "seed": self.seed, "frames": len(self.data), "crop_size": CROP_SIZE,
                "inner_size": INNER, "world_size": self.dist.world_size,
                "global_batch_size": self.speed.batch_size * self.dist.world_size, "av_offset": self.data.av_offset}

    def _adversarial_config(self) -> dict[str, Any]:
        adv = self.adversary
        if adv is None:
            return {"adversarial_weight": 0.0}
        return {"adversarial_weight": adv.weight, "feature_matching_weight": adv.fm_weight,
                "adversarial_start_epoch": adv.start_epoch, "disc_lr": adv.lr,
                "disc_box": list(adv.model.box), "disc_widths": list(adv.model.widths)}

    def describe(self) -> str:
        """The loss terms."""
        terms = ["L1"] + (["perceptual"] if self.losses.perceptual is not None else []) \
            + ([f"sync ×{self.losses.sync_weight:g} ({self.losses.sync_mode}) from epoch {self.sync_start_epoch}"]
               if self.losses.syncnet is not None else [])
        adv = self.adversary
        if adv is not None:
            fm = f", feature matching ×{adv.fm_weight:g}" if adv.fm_weight else ""
            terms.append(f"adversarial ×{adv.weight:g}{fm} from epoch {adv.start_epoch}")
        return f"losses {' + '.join(terms)}, "

    def state_fields(self, run_dir: Path, best_metrics: dict[str, Any]) -> dict[str, Any]:
        """Which critic the sync loss used."""
        return {"syncnet_checkpoint": str(self.syncnet_path.resolve()) if self.syncnet_path else None}
