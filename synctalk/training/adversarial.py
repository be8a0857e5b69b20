"""The UNet's adversarial stage: a per-person patch critic of the mouth region, real crops vs generated.

L1 alone makes the UNet draw the average of the mouths that fit a sound: soft lips and teeth and a
half-open mouth. A critic that has learnt what the person's real mouth looks like penalises exactly
that. `Adversary` owns the critic (unet_328.discriminator.MouthDiscriminator), its Adam optimizer
and gradient scaler; per UNet step (synctalk.training.unet.unet_step):

    G: total += weight · hinge_g(D(pred))        D frozen, gradients reach the UNet only
       (+ fm_weight · mean_l |D_l(pred) − D_l(target)|: feature matching, the critic's hidden
       activations of the prediction pulled to those of its real frame, a perceptual loss learnt
       from the person's own mouth; off unless --feature_matching_weight is given)
    D: hinge_d(D(target), D(pred.detach()))      one forward of real and generated together

Both start at `start_epoch` (the epochs before it train with L1 alone, so the critic meets faces
rather than noise). The critic runs uncompiled under the step's autocast and memory format; on
several GPUs it is wrapped in DistributedDataParallel like the UNet (no BatchNorm: nothing to sync).
Its state rides in checkpoint_latest.pth under "discriminator" (`state_dict`); a checkpoint without
it starts the critic afresh (`load_state_dict` says so).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ..losses import hinge_d_loss, hinge_g_loss
from .runtime import Distributed, autocast, load_optimizer_state, make_scaler, prepare_module

STATE_KEY = "discriminator"  # the checkpoint entry
BETAS = (0.5, 0.999)  # the usual GAN momentum: a critic that follows the generator closely


class Adversary:
    """The critic, its optimizer and scaler, and when and how much its verdict weighs in the UNet's loss."""

    def __init__(self, critic: torch.nn.Module, *, weight: float, start_epoch: int, lr: float,
                 device: torch.device, amp: str, channels_last: bool = False, dist: Distributed = Distributed(),
                 fm_weight: float = 0.0):
        self.weight, self.start_epoch, self.lr = float(weight), int(start_epoch), float(lr)
        self.fm_weight = float(fm_weight)
        self.device, self.amp = device, amp
        self.model = prepare_module(critic, device, channels_last)  # plain module: checkpoints, the G side
        params = list(self.model.parameters())
        self.optimizer = torch.optim.Adam(params, lr=self.lr, betas=BETAS, fused=device.type == "cuda")
        self.scaler = make_scaler(device, amp)
        self.step_model = dist.wrap(self.model, device)  # the D step: DDP averages its gradients over ranks

    def active(self, epoch: int) -> bool:
        """Whether the adversarial terms take part in this epoch."""
        return epoch >= self.start_epoch

    @property
    def terms(self) -> tuple[str, ...]:
        """The loss terms it adds to the epoch lines: its verdict on the UNet, its own hinge loss, and
        the feature-matching distance when that takes part."""
        return ("adv_g", "adv_d") + (("adv_fm",) if self.fm_weight else ())

    def generator_loss(self, pred: torch.Tensor,
                       target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the UNet's weighted share of the loss, its detached terms: hinge [, feature matching]) for its
        predictions (call inside the step's autocast). The critic's weights stay out of the graph, so
        the backward reaches the UNet only; `target` (the real frames) is needed for feature matching."""
        self.model.requires_grad_(False)
        try:
            if not self.fm_weight:
                adv_g = hinge_g_loss(self.model(pred))
                return self.weight * adv_g, adv_g.detach().reshape(1)
            if target is None:
                raise ValueError("feature matching needs the real frames")
            n = len(pred)
            both = torch.cat([self.model.crop(pred), self.model.crop(target).to(pred.dtype)])
            hidden, logits = self.model.features(both)
            adv_g = hinge_g_loss(logits[:n])
            fm = torch.stack([(h[:n].float() - h[n:].detach().float()).abs().mean() for h in hidden]).mean()
            return self.weight * adv_g + self.fm_weight * fm, torch.stack([adv_g, fm]).detach()
        finally:
            self.model.requires_grad_(True)

    def step(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """One critic update on real and (detached) generated crops; the detached hinge loss (no host sync)."""
        crop = self.model.crop
        both = torch.cat([crop(real), crop(fake.detach()).to(real.dtype)])  # bf16 predictions beside fp32 crops
        with autocast(self.device, self.amp):
            logits = self.step_model(both)
            loss = hinge_d_loss(logits[: len(real)], logits[len(real):])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        """What resumes the critic: its weights, optimizer, scaler and settings."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "box": list(self.model.box)}

    def load_state_dict(self, state: dict[str, Any] | None, log: Callable[[str], None] = print) -> bool:
        """Restore a saved critic; False (with a note) when the checkpoint has none or one of another shape."""
        if not state or "model" not in state:
            log("note: the checkpoint holds no discriminator; the adversarial stage starts with a fresh one")
            return False
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:  # another --disc_width than the saved one
            log(f"note: the saved discriminator does not fit this one ({str(exc).splitlines()[0][:160]}); "
                f"starting a fresh one")
            return False
        if state.get("optimizer"):
            load_optimizer_state(self.optimizer, state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        for group in self.optimizer.param_groups:  # a changed --disc_lr takes effect on a resumed run
            group["lr"] = self.lr
        return True


def default_start_epoch(epochs: int) -> int:
    """The first epoch with the critic when none is given: after a fifth of the run on L1 alone (epoch 6
    of 26), so the critic meets a UNet that already draws the person's face."""
    return max(1, int(epochs) // 5 + 1)


def build_adversary(*, weight: float, start_epoch: int, lr: float, width: "str | Sequence[int]",
                    box: Sequence[int] | None, device: torch.device, amp: str, channels_last: bool,
                    dist: Distributed, resume: dict[str, Any] | None = None, seed: int = 0,
                    fm_weight: float = 0.0) -> Adversary | None:
    """The run's adversary, or None when `weight` and `fm_weight` are 0 (nothing built: the L1 run as before).

    The critic's initial weights come from their own seeded generator, so that switching the stage
    on does not change the UNet's initialisation or the order of its batches."""
    if not weight and not fm_weight:
        return None
    from unet_328.discriminator import MOUTH_BOX, build_discriminator

    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + 7919)
        critic = build_discriminator(width, tuple(box) if box else MOUTH_BOX)
    adversary = Adversary(critic, weight=weight, start_epoch=start_epoch, lr=lr, device=device, amp=amp,
                          channels_last=channels_last, dist=dist, fm_weight=fm_weight)
    if resume is not None:
        adversary.load_state_dict(resume.get(STATE_KEY), log=dist.log)
    return adversary
