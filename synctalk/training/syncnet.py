"""The per-person SyncNet: train it (resumably), validate it, reuse one, load one frozen.

Two objectives. `contrast` (the default): runs of CHUNK consecutive training frames, each face scoring
the run's audio windows (cross-entropy both ways, its own window the target) plus BCE on far pairs;
runs are drawn where the person speaks (SPEECH_FLOOR keeps some silence), and only faces and windows
at speech (voice activity, widened by SPEECH_MARGIN frames) are targets, since in a long pause every
nearby window fits the closed mouth equally well. `pairs`: each epoch every training frame once with
its own audio window (label 1) and once with one at least 5 frames away (label 0), a share of the
negatives (`hard_negatives`) 2-15 frames away; BCE-with-logits on `SyncNet.logits`. With `augment`
the samples are jittered on the device (never in validation).

Validation runs on the held-out tail: loss, accuracy, and offset accuracy — the fraction of
held-out frames whose own window (offset 0) scores highest among offsets -15…+15 — with two looser
readings of the same scores: `offset_acc_1` (the best offset within ±1 frame) and `clip_offset` (the
offset with the highest mean score over the whole tail, 0 when the critic finds the clip in sync).
The same figures over the held-out frames at speech (`val_acc_speech`, `offset_acc_speech`,
`offset_acc_1_speech`) are the ones that say whether the critic hears the sound in the mouth: in
silence no offset is more right than another. checkpoint_best.pth is the epoch with the best speech
offset accuracy within ±1 (all frames' exact offset accuracy when the audio has no speech mask).
`SyncNetTask` is what the training loop (synctalk.training.loop) runs; `synctalk train-syncnet` starts it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from unet_328 import SyncNet

from ..data import (FrameData, SyncNetAugment, add_hard_negatives, far_indices, feature_audio_dim, load_frame_data,
                    split_indices, syncnet_pairs)
from ..errors import SyncTalkError
from ..layout import DatasetLayout
from ..state import PREPROCESSING, SYNCNET, TrainingState
from .checkpoint import check_asr, load_checkpoint, unwrap
from .config import SyncNetConfig
from .loop import Speed, Task, TrainResult
from .runtime import Distributed, autocast, batches, begin_step

SECTION = SYNCNET
MAX_OFFSET = 15
# a held-out figure over runs of this many frames (200 ms, the span Wav2Lip's critic judges): one frame
# of a held vowel or of still lips fits several offsets equally well, a run of them does not
RUN_FRAMES = 5
BASE_BATCH = 16  # the batch size the default learning rate is meant for
# a person's video is short: an epoch draws at least this many pairs (frames repeat, each time with a
# fresh negative) so the critic gets enough steps per epoch to leave the 0.69 plateau; on a CPU fewer,
# so that an epoch takes minutes, not an hour
PAIRS_PER_EPOCH = {"cuda": 8192, "cpu": 1024}


# ---------------------------------------------------------------- steps


def syncnet_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 faces: torch.Tensor, audio: torch.Tensor, labels: torch.Tensor, device: torch.device, amp: str,
                 graphs: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step; returns (loss, correct count) as device tensors (no host sync).
    `graphs`: the network was compiled with CUDA graphs (maybe_compile)."""
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


CHUNK = 16  # contrast objective: consecutive frames whose audio windows compete for each face
SPEECH_MARGIN = 2  # frames either side of speech that still count as speech (the lips open before the sound)
SPEECH_FLOOR = 0.1  # a run start's weight is its share of speech frames plus this (silence still shows up)


def contrast_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                  faces: torch.Tensor, audio: torch.Tensor, chunk: int, device: torch.device, amp: str,
                  graphs: bool = False, speech: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the offset-contrast objective; returns (loss, share of targets that pick their own audio).

    The batch is runs of `chunk` consecutive frames. Within a run every face scores every audio
    window (cross-entropy both ways, the own window as the target), so the negatives are the same
    moment a few frames off, the thing the critic must tell apart; a BCE term on far pairs (the audio
    of the next run) keeps the logit's sign meaningful for the UNet's sync loss. `speech` (B,) 0/1:
    only those frames are targets of the cross-entropy (all of them stay distractors); None: all.
    """
    begin_step(graphs)
    with autocast(device, amp):
        audio_emb, face_emb = model(faces, audio)
    raw = _raw(model)
    a, f = audio_emb.float(), face_emb.float()
    runs = a.shape[0] // chunk
    a3, f3 = a.reshape(runs, chunk, -1), f.reshape(runs, chunk, -1)
    sim = torch.einsum("rid,rjd->rij", f3, a3) * raw.logit_scale  # face i against audio j of its run
    target = torch.arange(chunk, device=sim.device).repeat(runs)
    w = torch.ones(len(target), device=sim.device) if speech is None else speech.float().to(sim.device)
    w = torch.where(w.sum() > 0, w, torch.ones_like(w))  # a batch without speech: every frame (no host sync)
    nce = 0.5 * ((F.cross_entropy(sim.reshape(-1, chunk), target, reduction="none") * w).sum()
                 + (F.cross_entropy(sim.transpose(1, 2).reshape(-1, chunk), target, reduction="none") * w).sum()) \
        / w.sum()
    pos = raw.logits(a, f)
    neg = raw.logits(a3.roll(1, dims=0).reshape(a.shape), f)
    bce = F.binary_cross_entropy_with_logits(torch.cat([pos, neg]).float(),
                                             torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).float())
    loss = nce + bce
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    picked = ((sim.reshape(-1, chunk).argmax(dim=1) == target).float() * w).sum() / w.sum()
    return loss.detach(), picked.detach()


def _raw(model: torch.nn.Module) -> torch.nn.Module:
    return unwrap(model)


# ---------------------------------------------------------------- validation


def offset_scores(model: torch.nn.Module, data: FrameData, frames: Any, *, device: torch.device, amp: str = "none",
                  batch_size: int = 64, max_offset: int = MAX_OFFSET) -> tuple[torch.Tensor, torch.Tensor]:
    """The critic's score of each of `frames`' faces against the audio at offsets −max_offset..+max_offset:
    (F, 2·max_offset+1) scores (−inf past the video's ends) and the (F, O) mask of offsets inside it.
    Column max_offset is the frame's own (A/V-corrected) audio."""
    raw = _raw(model)
    v = torch.as_tensor(np.asarray(frames), dtype=torch.long)
    n = len(data)
    lo = max(0, int(v.min()) - max_offset)
    hi = min(n - 1, int(v.max()) + max_offset)
    span = torch.arange(lo, hi + 1)
    with torch.no_grad():
        # embeddings of every frame within max_offset of the frames, in one pass
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
        j = v[:, None] + offsets[None, :]  # (F, O) audio frame for each offset
        valid = (j >= 0) & (j < n)
        jj = (j.clamp(0, n - 1) - lo).to(device)
        ff = emb_f[(v - lo).to(device)]  # (F, 512)
        scores = raw.logits(emb_a[jj.reshape(-1)], ff.repeat_interleave(len(offsets), dim=0)).float()
        scores = scores.reshape(len(v), len(offsets)).masked_fill(~valid.to(device), float("-inf"))
    return scores, valid.to(device)


def run_offset_accuracy(scores: torch.Tensor, speech: np.ndarray, frames: int = RUN_FRAMES,
                        max_offset: int = MAX_OFFSET) -> tuple[float, int]:
    """How often the best offset of `frames` consecutive rows of an offset_scores table, their scores
    summed, is within ±1 of 0, over the runs whose frames are mostly at speech; (accuracy, runs), nan
    without such a run. Offsets past the video's ends (−inf) lose for the whole run."""
    at = np.asarray(speech, bool)
    n = len(at) - frames + 1
    if n < 1:
        return float("nan"), 0
    finite = scores.clamp(min=-1e4)  # past the ends: a score no run can make up (and no inf − inf)
    csum = torch.cat([torch.zeros_like(finite[:1]), finite.cumsum(dim=0)])
    sums = csum[frames:] - csum[:-frames]  # (n, O): row i = rows i .. i+frames-1
    mostly = np.convolve(at.astype(np.float64), np.ones(frames), mode="valid") >= frames / 2
    if not mostly.any():
        return float("nan"), 0
    keep = torch.as_tensor(mostly, device=scores.device)
    best = sums[keep].argmax(dim=1) - max_offset
    return float((best.abs() <= 1).float().mean()), int(mostly.sum())


def held_out_pairs(model: torch.nn.Module, data: FrameData, val_idx: Any, *, device: torch.device,
                   amp: str = "none", batch_size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The balanced held-out pairs: (logits, labels), float32 on `device`, 2·V of each: every held-out
    face with its own audio window (label 1), then with a window at least MIN_NEGATIVE_OFFSET frames
    away (label 0), the same draw every epoch."""
    raw = _raw(model)
    v = torch.as_tensor(np.asarray(val_idx), dtype=torch.long)
    g = torch.Generator().manual_seed(seed + 7919)  # the same held-out pairs every epoch
    neg = far_indices(v, torch.arange(len(data)), g)
    face_idx = torch.cat([v, v])
    audio_idx = torch.cat([v, neg])
    out: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, len(face_idx), batch_size):
            sl = slice(start, start + batch_size)
            faces = data.face_stack(face_idx[sl].to(device), raw.face_frames)
            with autocast(device, amp):
                a, f = raw(faces, data.audio(audio_idx[sl].to(device)))
            out.append(raw.logits(a, f).float())
    labels = torch.cat([torch.ones(len(v)), torch.zeros(len(v))]).to(device)
    return torch.cat(out), labels


def evaluate_syncnet(model: torch.nn.Module, data: FrameData, val_idx: Any, *, device: torch.device, amp: str = "none",
                     batch_size: int = 64, seed: int = 0, max_offset: int = MAX_OFFSET,
                     speech: np.ndarray | None = None) -> dict[str, float]:
    """Held-out loss, accuracy (balanced pairs) and offset accuracy (offset 0 best of ±max_offset);
    with `speech` (a bool per frame of the video) the same over the held-out frames at speech too."""
    if len(val_idx) == 0:
        return {}
    raw = _raw(model)
    was_training = raw.training
    raw.eval()
    v = torch.as_tensor(np.asarray(val_idx), dtype=torch.long)
    with torch.no_grad():
        logits, labels = held_out_pairs(raw, data, v, device=device, amp=amp, batch_size=batch_size, seed=seed)
        loss_sum = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum")
        hit = ((logits > 0).float() == labels).float()
        scores, valid = offset_scores(raw, data, v, device=device, amp=amp, batch_size=batch_size,
                                      max_offset=max_offset)
        offsets = torch.arange(-max_offset, max_offset + 1)
        best = scores.argmax(dim=1)
        exact = (best == max_offset).float()
        near = ((best - max_offset).abs() <= 1).float()
        # the clip as a whole: the offset whose mean score is highest, over the held-out frames that
        # have every offset (so each offset is averaged over the same frames)
        whole = valid.all(dim=1).to(device)
        rows = scores[whole] if bool(whole.any()) else scores.clamp(min=-1e4)
        clip_offset = int(offsets[int(rows.mean(dim=0).argmax())])
    if was_training:
        raw.train()
    out = {"val_loss": float(loss_sum) / len(logits), "val_acc": float(hit.mean()),
           "offset_acc": float(exact.mean()), "offset_acc_1": float(near.mean()), "clip_offset": clip_offset}
    if speech is not None:
        at = torch.as_tensor(np.asarray(speech, bool)[v.numpy()], device=hit.device)
        if bool(at.any()):
            out.update(val_acc_speech=float(hit[torch.cat([at, at])].mean()),
                       offset_acc_speech=float(exact[at].mean()), offset_acc_1_speech=float(near[at].mean()))
            run_acc, runs = run_offset_accuracy(scores, at.cpu().numpy(), max_offset=max_offset)
            if runs:
                out["offset_acc_1_speech_run5"] = run_acc
    return out


def speech_targets(speech: np.ndarray | None) -> np.ndarray | None:
    """0/1 per frame: speech widened by SPEECH_MARGIN frames (None without a speech mask, or none in it)."""
    if speech is None or not speech.any():
        return None
    k = 2 * SPEECH_MARGIN + 1
    return (np.convolve(speech.astype(np.float64), np.ones(k), mode="same") > 0).astype(np.float64)


def speech_frames(layout: DatasetLayout, data: FrameData) -> np.ndarray | None:
    """A bool per frame of `data`: is there speech in the sound it hears (its audio row, A/V offset
    applied)? From the dataset's audio (synctalk.audio.activity); None when it has no audio file."""
    from .. import media
    from ..audio.activity import voice_activity

    if not layout.audio_wav.is_file():
        return None
    n = len(data)
    active = voice_activity(media.load_audio(layout.audio_wav), n)
    return active[data.audio_rows(torch.arange(n)).cpu().numpy()]


# ---------------------------------------------------------------- reuse and loading


def register_reused_syncnet(layout: DatasetLayout, path: str | Path, asr: str,
                            device: str | torch.device = "cpu") -> dict[str, Any]:
    """Record that this person's SyncNet step is satisfied by another person's checkpoint file.

    The figures recorded (what the UNet's gate and `synctalk status` read) are the critic's on this
    person's own held-out tail, measured now: a critic's figures on the person it was trained on say
    little about another face (on grid and cnn, one person's critic found the other's offset no
    better than chance). The checkpoint's own figures are kept as `source_metrics`.
    """
    from ..data import load_frame_data
    from .loop import resolve_av_offset

    path = Path(path).resolve()
    ckpt = load_checkpoint(path, "syncnet")
    check_asr(ckpt, asr, path, "reuse a SyncNet trained on the same audio features, or train this person's own")
    state = TrainingState(layout.state_file)
    sec = state.section(SECTION) if layout.state_file.exists() else {}
    if (sec.get("completed") and sec.get("reused_from") == str(path) and sec.get("asr") == asr
            and sec.get("source_metrics") == (ckpt.get("metrics") or {}) and sec.get("best_metrics")):
        return sec  # measured on this person already (a rerun of the same command)
    device = torch.device(device)
    model = load_syncnet(path, device, asr)[0]
    data = load_frame_data(layout, asr, device=device, progress=False, av_offset=resolve_av_offset("auto", layout)[0])
    _train, val = split_indices(len(data), 0.1)
    here = evaluate_syncnet(model, data, val, device=device, speech=speech_frames(layout, data))
    sec = state.update(
        SECTION, completed=True, checkpoint=str(path), reused_from=str(path), asr=asr,
        width=(ckpt.get("config") or {}).get("width", "full"), epochs=int(ckpt.get("epoch", 0)),
        best_metrics=here, source_metrics=ckpt.get("metrics") or {},
    )
    return sec


def load_syncnet(path: str | Path, device: str | torch.device = "cpu",
                 asr: str | None = None) -> tuple[SyncNet, dict[str, Any]]:
    """A SyncNet checkpoint as an eval-mode network on `device` (asr checked when given)."""
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
            "audio_context": int(config.get("audio_context", 0)), "face_frames": int(config.get("face_frames", 1)),
            "audio_dim": config.get("audio_dim")}


def syncnet_status(layout: DatasetLayout) -> dict[str, Any]:
    """The person's SyncNet record from the state file ({} when there is none)."""
    return TrainingState(layout.state_file).section(SECTION) if layout.state_file.exists() else {}




# ---------------------------------------------------------------- the task


class SyncNetTask(Task):
    """The SyncNet's part of a run: balanced pairs each epoch, BCE on the sync logit, offset validation."""

    kind, section, what = "syncnet", SECTION, "SyncNet"
    terms = ("train_loss", "train_acc")
    gpu_batch, cpu_batch, base_batch = 128, 16, BASE_BATCH

    def __init__(self, model: torch.nn.Module, data: FrameData, train_idx: Any, val_idx: Any, *,
                 pairs_per_epoch: int = 0, hard_negatives: float = 0.5, augment: bool = False,
                 objective: str = "pairs", speech: np.ndarray | None = None, **kw: Any):
        super().__init__(model, data, train_idx, val_idx, **kw)
        self.objective = objective
        # a bool per frame: does the sound it hears hold speech (None: not known, every frame counts)
        self.speech = None if speech is None else np.asarray(speech, bool)[: len(data)]
        self.targets = speech_targets(self.speech)  # the contrast objective's targets: speech, widened
        # the contrast objective needs whole runs of CHUNK frames in a batch
        # (at least two runs a batch: the far negatives of the BCE term come from the other run)
        self.chunk = max(2, min(CHUNK, self.speed.batch_size // 2, len(self.pool) // 2))
        if objective == "contrast" and self.speed.batch_size % self.chunk:
            raise SyncTalkError(f"the contrast objective takes batches of whole runs of {self.chunk} frames: "
                                f"use a --batchsize that is a multiple of {self.chunk}")
        self.pairs_per_epoch = pairs_per_epoch
        self.hard_negatives = hard_negatives
        self.aug = SyncNetAugment() if augment else None
        self.frames = int(getattr(unwrap(self.model), "face_frames", 1))

    @classmethod
    def build(cls, cfg: SyncNetConfig, layout: DatasetLayout, state: TrainingState, *, asr: str, device: torch.device,
              speed: Speed, dist: Distributed, resume: dict[str, Any] | None, av_offset: "int | np.ndarray" = 0) -> "SyncNetTask":
        """Data, network (a resumed run's own options) and optimizer of one SyncNet run."""
        options = network_options(resume.get("config") or {}) if resume is not None else {"width": cfg.width}
        for key in ("face_frames", "audio_context"):
            if getattr(cfg, key) is not None:
                options[key] = getattr(cfg, key)
        lips = (state.section(PREPROCESSING) or {}).get("lip_activity") or {}
        if lips.get("ok") is False:
            from ..lipcheck import warning_text

            dist.log(warning_text(layout.name, lips))
        with dist.main_first():  # rank 0 builds a missing crop cache; the others then read it
            data = load_frame_data(layout, asr, device=device, channels_last=speed.channels_last,
                                   progress=cfg.progress and dist.is_main, on_device=speed.cache_on_device,
                                   av_offset=av_offset)
        train_idx, val_idx = split_indices(len(data), cfg.val_fraction)
        pairs = cfg.pairs_per_epoch
        if pairs is None:
            pairs = PAIRS_PER_EPOCH["cuda" if device.type == "cuda" else "cpu"]
        network = SyncNet(asr, **{"audio_dim": feature_audio_dim(layout, asr), **options})
        return cls(network, data, train_idx, val_idx, pairs_per_epoch=pairs,
                   hard_negatives=cfg.hard_negatives, augment=cfg.augment, objective=cfg.objective,
                   speech=speech_frames(layout, data),
                   device=device, speed=speed, dist=dist,
                   seed=cfg.seed, sync_bn=cfg.sync_bn, resume=resume,
                   run_numbers={"epochs": cfg.epochs, "val_fraction": cfg.val_fraction})

    @classmethod
    def already_done(cls, cfg: SyncNetConfig, sec: dict[str, Any], run_dir: Path) -> TrainResult | None:
        """Trained to --epochs already, or satisfied by another person's SyncNet (whatever --epochs says)."""
        path = Path(sec["checkpoint"]) if sec.get("checkpoint") else None
        if not (sec.get("completed") and path is not None and path.is_file()):
            return None
        if sec.get("asr") != (cfg.asr or sec.get("asr")):
            return None
        if sec.get("reused_from") or int(sec.get("epochs", 0)) >= cfg.epochs:
            return TrainResult(run_dir, path, int(sec.get("epochs", 0)), 0, sec["asr"],
                               dict(sec.get("best_metrics") or {}))
        return None

    def _draw(self, pool: torch.Tensor, pairs: int, generator: torch.Generator) -> list[torch.Tensor]:
        """Balanced pairs over `pool` (each frame at least once), hard negatives and jitter, on this rank's device."""
        repeats = max(1, math.ceil(pairs / max(len(pool), 1)))
        face_idx, audio_idx, labels = syncnet_pairs(pool.repeat(repeats), pool, generator)
        if self.hard_negatives > 0:
            audio_idx = add_hard_negatives(face_idx, audio_idx, labels, pool, generator, self.hard_negatives)
        # jitter drawn with the pairs (host generator): the same on every rank and after a resume
        jitter = self.aug.sample(len(face_idx), generator) if self.aug is not None else torch.zeros(len(face_idx), 0)
        return [self.dist.shard(t).to(self.device) for t in (face_idx, audio_idx, labels, jitter)]

    def _batches(self, face_idx: torch.Tensor, audio_idx: torch.Tensor, labels: torch.Tensor, jitter: torch.Tensor,
                 start_step: int = 0) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], int]]:
        lo, hi = int(self.pool.min()), int(self.pool.max())  # stacks stay in the training frames
        # compiled steps keep one batch shape: a partial last batch would compile (and record) again
        for sl in list(batches(len(face_idx), self.speed.batch_size, drop_last=self.speed.compile))[start_step:]:
            faces = self.data.face_stack(face_idx[sl], self.frames, lo, hi)
            audio = self.data.audio(audio_idx[sl])
            if self.aug is not None:
                faces, audio = self.aug.faces(faces, jitter[sl]), self.aug.audio(audio, jitter[sl],
                                                                                  self.data.spec.layout)
            yield (faces, audio, labels[sl]), sl.stop - sl.start

    def _draw_runs(self, pool: torch.Tensor, frames: int, generator: torch.Generator) -> list[torch.Tensor]:
        """Runs of `chunk` consecutive training frames (about `frames` in all), as face = audio index pairs."""
        lo, hi = int(pool.min()), int(pool.max())
        runs = max(1, math.ceil(frames / self.chunk))
        runs += (-runs) % max(self.speed.batch_size * self.dist.world_size // self.chunk, 1)  # whole batches a rank
        last = max(hi - self.chunk + 2, lo + 1)  # run starts lo … last - 1
        targets = self.targets
        if targets is None:
            starts = torch.randint(lo, last, (runs,), generator=generator)
        else:  # where the person speaks, mostly: a run's weight is its share of speech frames (+ a floor)
            share = np.convolve(targets[lo:hi + 1], np.ones(self.chunk) / self.chunk, mode="full")[self.chunk - 1:]
            weights = torch.as_tensor(share[: last - lo] + SPEECH_FLOOR, dtype=torch.float64)
            starts = lo + torch.multinomial(weights, runs, replacement=True, generator=generator)
        idx = (starts[:, None] + torch.arange(self.chunk)[None, :]).clamp(max=hi).reshape(-1)
        # the "label" of a frame in a run: whether it is a target of the cross-entropy (speech)
        target = torch.ones(len(idx)) if targets is None else torch.as_tensor(targets, dtype=torch.float32)[idx]
        jitter = self.aug.sample(len(idx), generator) if self.aug is not None else torch.zeros(len(idx), 0)
        # shard whole batches so every rank's runs stay whole
        return [self.dist.shard(t).to(self.device) for t in (idx, idx, target, jitter)]

    def _drawn(self, pairs: int, generator: torch.Generator) -> list[torch.Tensor]:
        if self.objective == "contrast":
            return self._draw_runs(self.pool, pairs, generator)
        return self._draw(self.pool, pairs, generator)

    def epoch_batches(self, epoch: int, start_step: int = 0) -> tuple[int, Iterator[tuple[Any, int]]]:
        """Every training frame at least once (more for short videos): as pairs, half of them off sync,
        or as runs of consecutive frames for the contrast objective."""
        drawn = self._drawn(self.pairs_per_epoch, self.generator)
        return len(drawn[0]), self._batches(*drawn, start_step=start_step)

    def random_batches(self, steps: int, generator: torch.Generator) -> Iterator[tuple[Any, int]]:
        """`steps` batches drawn as an epoch draws them."""
        return self._batches(*self._drawn(steps * self.speed.batch_size, generator))

    def step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """One optimisation step: [loss, accuracy] of the batch (contrast: the share of faces that
        pick their own audio window among their run's)."""
        faces, audio, labels = batch
        if self.objective == "contrast":
            loss, picked = contrast_step(self.step_model, self.optimizer, self.scaler, faces, audio, self.chunk,
                                         self.device, self.amp, self.graphs, speech=labels)
            return torch.stack([loss, picked])
        loss, correct = syncnet_step(self.step_model, self.optimizer, self.scaler, faces, audio, labels, self.device,
                                     self.amp, self.graphs)
        return torch.stack([loss, correct / len(labels)])

    def evaluate(self) -> dict[str, float]:
        """Held-out loss, accuracy and offset accuracy."""
        return evaluate_syncnet(self.model, self.data, self.val_idx, device=self.device, amp=self.amp,
                                batch_size=max(self.speed.batch_size, 32), seed=self.seed, speech=self.speech)

    def better(self, metrics: dict[str, float], best: dict[str, Any]) -> bool:
        """Offset accuracy at speech (within ±1) first, then a lower held-out loss (a best epoch of a
        run resumed from before that figure was measured gives way to the first epoch that has it)."""
        if "offset_acc_1_speech" in metrics and "offset_acc_1_speech" not in best:
            return True
        return not best or _best_key(metrics) > _best_key(best)

    def network_config(self) -> dict[str, Any]:
        """SyncNet.config (rebuilds it) and the run's numbers."""
        return {**unwrap(self.model).config, "batch_size": self.speed.batch_size, "lr": self.speed.lr,
                **self.run_numbers, "amp": self.amp, "seed": self.seed, "frames": len(self.data),
                "max_offset": MAX_OFFSET, "world_size": self.dist.world_size,
                "global_batch_size": self.speed.batch_size * self.dist.world_size, "av_offset": self.data.av_offset}

    def describe(self) -> str:
        """Frames per face stack and pairs per epoch."""
        if self.objective == "contrast":
            at = "" if self.targets is None else f" drawn at speech ({self.speech.mean():.0%} of frames)"
            return (f"{self.frames} frame(s), contrast over runs of {self.chunk}{at}, "
                    f"≥{self.pairs_per_epoch} frames/epoch, ")
        return f"{self.frames} frame(s), ≥{self.pairs_per_epoch} pairs/epoch, "


def _best_key(m: dict[str, Any]) -> tuple[float, float]:
    """Higher is better: offset accuracy (at speech, within ±1, when measured) first, then low held-out
    (or training) loss."""
    if "offset_acc_1_speech" in m:
        return (m["offset_acc_1_speech"], -m.get("val_loss", 0.0))
    if "offset_acc" in m:
        return (m["offset_acc"], -m.get("val_loss", 0.0))
    return (0.0, -m.get("train_loss", float("inf")))
