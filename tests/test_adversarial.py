"""The UNet's adversarial stage: the mouth critic, its step, its checkpoint, its switch.

Tiny networks on the CPU; real crops from a fixture clip (helpers_training's 16-frame person).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers_training import FAST, copy_dataset, free_port, start_cpu_rank
from synctalk.cli import main
from synctalk.layout import checkpoint_layout
from synctalk.training import Distributed
from synctalk.training.adversarial import STATE_KEY, Adversary, build_adversary
from unet_328 import MouthDiscriminator

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
UNET_FAST = FAST[:FAST.index("--syncnet_pairs_per_epoch")]  # the rest are flags of `train` only


def train_unet(work: Path, name: str, *extra: str) -> int:
    return main(["train-unet", "--name", name, "--dataset_dir", str(work / "dataset"),
                 "--checkpoint_dir", str(work / "checkpoint"), *UNET_FAST,
                 "--syncnet", "off", "--perceptual", "none", *extra])


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def real_crops(source: Path, n: int = 8) -> torch.Tensor:
    """(n, 3, 320, 320) float crops of the fixture person, as the UNet's targets are."""
    from synctalk.data import load_frame_data
    from synctalk.layout import dataset_layout

    data = load_frame_data(dataset_layout(source.parent, source.name), "mel", device=CPU, progress=False,
                           on_device=False)
    return data.faces(torch.arange(n))


def test_the_critic_sees_only_its_mouth_box_and_gives_patch_logits() -> None:
    torch.manual_seed(0)
    d = MouthDiscriminator("tiny")
    x = torch.rand(2, 3, 320, 320)
    out = d(x)
    assert out.shape[:2] == (2, 1) and out.shape[2] > 4 and out.shape[3] > 4  # a grid of patches
    y = x.clone()
    y[..., :40, :] = 0  # above the box (rows 48-240): changes nothing
    y[..., 250:, :] = 1
    torch.testing.assert_close(d.eval()(y), d(x), rtol=0, atol=0)
    y[..., 100:110, 100:110] = 0.5  # inside it: changes the verdict
    assert not torch.equal(d(y), d(x))
    assert torch.equal(d(d.crop(x)), d(x))  # an already cut box is taken as it is


def test_a_bad_disc_box_is_a_clear_error() -> None:
    from synctalk.errors import SyncTalkError
    from synctalk.training.unet import parse_disc_box

    assert parse_disc_box("40,60,280,230") == (40, 60, 280, 230) and parse_disc_box(None) is None
    for bad in ("1,2,3", "0,0,400,100"):
        with pytest.raises(SyncTalkError, match="--disc_box"):
            parse_disc_box(bad)
    with pytest.raises(SyncTalkError, match="32 × 32"):
        MouthDiscriminator("tiny", (0, 0, 20, 20))


def test_the_critic_learns_to_tell_real_mouths_from_soft_dull_ones(source) -> None:
    """A toy where real and fake differ as an early L1 UNet's output does (blurred, a little dull): the
    critic's hinge loss, 2 while it cannot tell them apart, falls well below it."""
    import torch.nn.functional as F

    real = real_crops(source)
    fake = F.avg_pool2d(real, 21, stride=1, padding=10, count_include_pad=False) * 0.9
    torch.manual_seed(0)
    adv = Adversary(MouthDiscriminator("tiny"), weight=0.1, start_epoch=1, lr=2e-3, device=CPU, amp="none")
    losses = [float(adv.step(real, fake)) for _ in range(40)]
    assert 1.8 < losses[0] < 2.2
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0], losses


def test_the_generator_term_reaches_the_image_not_the_critic_and_runs_under_bf16() -> None:
    torch.manual_seed(0)
    adv = Adversary(MouthDiscriminator("tiny"), weight=0.1, start_epoch=1, lr=1e-3, device=CPU, amp="bf16",
                    channels_last=True)
    pred = torch.rand(2, 3, 320, 320, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g, terms = adv.generator_loss(pred)
    assert g.dtype == torch.float32 and terms.shape == (1,) and not terms.requires_grad
    g.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in adv.model.parameters())
    assert all(p.requires_grad for p in adv.model.parameters())  # switched back on for its own step
    d = adv.step(torch.rand(2, 3, 320, 320), pred.to(torch.bfloat16))  # a bf16 prediction, channels_last weights
    assert torch.isfinite(d) and all(p.grad is not None for p in adv.model.parameters())


def test_the_critic_is_on_by_default_from_a_fifth_of_the_epochs() -> None:
    from synctalk.training.adversarial import default_start_epoch
    from synctalk.training.config import UNetConfig

    from synctalk.training.unet import feature_matching_weight

    cfg = UNetConfig()
    assert cfg.adversarial_weight == 0.02 and cfg.adversarial_start_epoch is None and cfg.lr_schedule == "cosine"
    # feature matching at 1 comes with the critic; --adversarial_weight 0 still means L1 alone, no critic
    assert feature_matching_weight(cfg) == 1.0
    assert feature_matching_weight(UNetConfig(adversarial_weight=0.0)) == 0.0
    assert feature_matching_weight(UNetConfig(adversarial_weight=0.0, feature_matching_weight=0.5)) == 0.5
    assert feature_matching_weight(UNetConfig(feature_matching_weight=0.0)) == 0.0
    assert [default_start_epoch(n) for n in (1, 2, 5, 10, 26, 100)] == [1, 1, 2, 3, 6, 21]
    assert UNetConfig.QUICK["adversarial_weight"] == 0.0  # --quick stays the plain L1 trial


def test_weight_zero_builds_no_critic_and_a_run_without_it_writes_none(source, work, capsys) -> None:
    assert build_adversary(weight=0.0, start_epoch=1, lr=1e-4, width="tiny", box=None, device=CPU, amp="none",
                           channels_last=False, dist=Distributed()) is None
    copy_dataset(source, work / "dataset", "ned")
    assert train_unet(work, "ned", "--epochs", "1", "--adversarial_weight", "0") == 0
    out = capsys.readouterr().out
    assert "adversarial" not in out and "adv_g" not in out
    ckpt = load(checkpoint_layout(work / "checkpoint", "ned").unet_dir / "checkpoint_latest.pth")
    assert STATE_KEY not in ckpt and ckpt["config"]["adversarial_weight"] == 0.0
    assert "adv_g" not in ckpt["metrics"]


def test_an_adversarial_run_checkpoints_its_critic_and_resumes_it_exactly(source, work, capsys) -> None:
    copy_dataset(source, work / "dataset", "ada")
    run_dir = checkpoint_layout(work / "checkpoint", "ada").unet_dir
    assert train_unet(work, "ada", "--epochs", "2", "--adversarial_weight", "0.05",
                      "--adversarial_start_epoch", "2", "--disc_lr", "3e-4") == 0
    out = capsys.readouterr().out
    assert "adversarial ×0.05, feature matching ×1 from epoch 2" in out  # feature matching comes with the critic
    first = [ln for ln in out.splitlines() if "UNet epoch 1/2" in ln][0]
    second = [ln for ln in out.splitlines() if "UNet epoch 2/2" in ln][0]
    assert "adv_g" not in first and "adv_g" in second and "adv_d" in second  # L1 alone before its epoch
    ckpt = load(run_dir / "checkpoint_latest.pth")
    saved = ckpt[STATE_KEY]
    assert {"model", "optimizer", "scaler", "box"} <= set(saved) and saved["optimizer"]["state"]
    assert torch.isfinite(torch.tensor([ckpt["metrics"]["adv_g"], ckpt["metrics"]["adv_d"]])).all()
    assert ckpt["config"]["adversarial_weight"] == 0.05 and ckpt["config"]["disc_lr"] == 3e-4
    assert STATE_KEY not in load(run_dir / "checkpoint_best.pth")  # model-only files stay small
    assert STATE_KEY not in load(run_dir / "2.pth")

    # the L1 warm-up is the L1 run itself: building the critic leaves the UNet's weights and batches alone
    copy_dataset(source, work / "dataset", "bea")
    assert train_unet(work, "bea", "--epochs", "1", "--adversarial_weight", "0") == 0
    plain = load(checkpoint_layout(work / "checkpoint", "bea").unet_dir / "1.pth")["model"]
    warm = load(run_dir / "1.pth")["model"]
    assert all(torch.equal(plain[k], warm[k]) for k in plain)

    # what a resume builds holds exactly the saved critic and its optimizer moments
    adv = build_adversary(weight=0.05, start_epoch=2, lr=3e-4, width="tiny", box=None, device=CPU, amp="none",
                          channels_last=False, dist=Distributed(), resume=ckpt, seed=123)
    for key, value in saved["model"].items():
        assert torch.equal(adv.model.state_dict()[key], value), key
    state = adv.optimizer.state_dict()["state"]
    for k, v in saved["optimizer"]["state"].items():
        assert torch.equal(state[k]["exp_avg"], v["exp_avg"]) and float(state[k]["step"]) == float(v["step"])

    # the real resume: no "fresh critic" note, the critic keeps learning from where it was
    capsys.readouterr()
    assert train_unet(work, "ada", "--continue_training", "--epochs", "3") == 0
    out = capsys.readouterr().out
    assert "resuming UNet of ada from epoch 2" in out and "fresh" not in out and "adv_d" in out
    after = load(run_dir / "checkpoint_latest.pth")[STATE_KEY]
    steps = [float(v["step"]) for v in after["optimizer"]["state"].values()]
    assert steps and all(s > float(next(iter(saved["optimizer"]["state"].values()))["step"]) for s in steps)


def test_a_checkpoint_without_a_critic_starts_a_fresh_one_with_a_note(source, work, capsys) -> None:
    copy_dataset(source, work / "dataset", "lea")
    assert train_unet(work, "lea", "--epochs", "1", "--adversarial_weight", "0") == 0
    capsys.readouterr()
    assert train_unet(work, "lea", "--continue_training", "--epochs", "2", "--adversarial_weight", "0.05") == 0
    out = capsys.readouterr().out
    assert "holds no discriminator" in out and "adv_d" in out
    assert STATE_KEY in load(checkpoint_layout(work / "checkpoint", "lea").unet_dir / "checkpoint_latest.pth")


def test_only_adversarial_epochs_compete_for_best_once_the_stage_has_begun() -> None:
    from types import SimpleNamespace

    from synctalk.training.unet import UNetTask

    adv = SimpleNamespace(start_epoch=3, active=lambda e: e >= 3)
    task = SimpleNamespace(adversary=adv, epoch=3, losses=SimpleNamespace(syncnet=None), sync_start_epoch=1)
    task.stage_start = lambda: UNetTask.stage_start(task)
    l1_best = {"epoch": 2, "val_l1": 0.05}
    assert UNetTask.better(task, {"val_l1": 0.06}, l1_best)  # the first critic epoch replaces the L1 best
    task.epoch = 4
    assert not UNetTask.better(task, {"val_l1": 0.07}, {"epoch": 3, "val_l1": 0.06})  # then lower L1 wins
    task.epoch = 2
    assert not UNetTask.better(task, {"val_l1": 0.06}, l1_best)  # the warm-up: as without a critic
    plain = SimpleNamespace(adversary=None, epoch=5, losses=SimpleNamespace(syncnet=None), sync_start_epoch=1)
    plain.stage_start = lambda: UNetTask.stage_start(plain)
    assert not UNetTask.better(plain, {"val_l1": 0.06}, l1_best)
    # a sync loss that starts later still: the best waits for the first epoch with both critics
    task.losses, task.sync_start_epoch, task.epoch = SimpleNamespace(syncnet=object()), 5, 4
    assert UNetTask.stage_start(task) == 5
    assert not UNetTask.better(task, {"val_l1": 0.07}, {"epoch": 3, "val_l1": 0.06})
    task.epoch = 5
    assert UNetTask.better(task, {"val_l1": 0.08}, {"epoch": 4, "val_l1": 0.06})


# ---------------------------------------------------------------- two gloo ranks

def test_feature_matching_pulls_the_critics_view_of_the_prediction_to_that_of_its_real_frame(source) -> None:
    """With --feature_matching_weight the UNet's term gains the distance of the critic's hidden
    activations: zero for a prediction equal to its real frame, and descending it moves a blurred
    prediction towards the real one (the critic stays frozen on that side)."""
    import torch.nn.functional as F

    real = real_crops(source, 4)
    torch.manual_seed(0)
    adv = Adversary(MouthDiscriminator("tiny"), weight=0.0, start_epoch=1, lr=1e-3, device=CPU, amp="none",
                    fm_weight=1.0)
    assert adv.terms == ("adv_g", "adv_d", "adv_fm")
    _, terms = adv.generator_loss(real.clone(), real)
    assert terms.shape == (2,) and float(terms[1]) == 0.0
    pred = F.avg_pool2d(real, 9, stride=1, padding=4, count_include_pad=False).requires_grad_(True)
    start = (pred.detach() - real).abs().mean()
    opt = torch.optim.Adam([pred], lr=3e-3)
    fms = []
    for _ in range(30):
        total, terms = adv.generator_loss(pred, real)
        opt.zero_grad()
        total.backward()
        opt.step()
        fms.append(float(terms[1]))
    assert all(p.grad is None for p in adv.model.parameters())
    assert fms[-1] < 0.5 * fms[0], fms
    assert (pred.detach() - real).abs().mean() < start  # closer to the real frame in pixels too
    with pytest.raises(ValueError, match="real frames"):
        adv.generator_loss(pred)


def test_feature_matching_alone_builds_a_critic_and_its_term_reaches_the_epoch_lines(source, work, capsys) -> None:
    copy_dataset(source, work / "dataset", "fma")
    assert train_unet(work, "fma", "--epochs", "1", "--adversarial_weight", "0", "--feature_matching_weight", "0.5",
                      "--adversarial_start_epoch", "1") == 0
    out = capsys.readouterr().out
    assert "adversarial ×0, feature matching ×0.5 from epoch 1" in out and "adv_fm" in out, out
    ckpt = load(checkpoint_layout(work / "checkpoint", "fma").unet_dir / "checkpoint_latest.pth")
    assert STATE_KEY in ckpt and ckpt["config"]["feature_matching_weight"] == 0.5


def _rank_main(rank: int, world: int, port: int, out_dir: str) -> None:
    from synctalk.training import make_adam, make_scaler
    from synctalk.training.unet import UNetLosses, unet_step
    from unet_328 import build_unet

    dist, device = start_cpu_rank(rank, world, port)
    try:
        g = torch.Generator().manual_seed(1000 + rank)  # every rank its own samples
        torch.manual_seed(rank)  # and its own initial weights: DDP must start both networks from rank 0's
        unet = build_unet("mel", "tiny")
        model = dist.wrap(unet, device)
        opt, scaler = make_adam(unet.parameters(), 1e-3, device), make_scaler(device, "none")
        adv = Adversary(MouthDiscriminator("tiny"), weight=0.1, start_epoch=1, lr=1e-3, device=device, amp="none",
                        dist=dist)
        batch = type("B", (), {})()
        for _ in range(2):
            batch.img6 = torch.rand(2, 6, 320, 320, generator=g)
            batch.target = torch.rand(2, 3, 320, 320, generator=g)
            batch.audio = torch.randn(2, *unet.audio_shape, generator=g)
            parts = unet_step(model, opt, scaler, batch, UNetLosses(), device, "none", adversary=adv)
        dist.barrier()
        torch.save({"unet": {k: v.detach().clone() for k, v in unet.named_parameters()},
                    "critic": {k: v.detach().clone() for k, v in adv.model.state_dict().items()},
                    "parts": parts}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.stop()


def test_two_ranks_keep_the_critic_and_the_unet_equal(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (load(tmp_path / f"rank{k}.pt") for k in (0, 1))
    for net in ("unet", "critic"):
        for key in r0[net]:
            torch.testing.assert_close(r0[net][key], r1[net][key], rtol=0, atol=0, msg=f"{net}.{key}")
    assert len(r0["parts"]) == 6 and not torch.equal(r0["parts"], r1["parts"])  # own data, shared weights
