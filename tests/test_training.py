"""SyncNet and UNet training: checkpoints, state, resume after a kill, reuse, mismatches, previews.

Tiny networks on a 16-frame dataset made from a fixture clip, on the CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from helpers_training import FAST, N_FRAMES, copy_dataset
from synctalk.cli import main
from synctalk.layout import checkpoint_layout, dataset_layout
from synctalk.state import TrainingState

pytestmark = pytest.mark.usefixtures("one_thread")


def person(source: Path, work: Path, name: str) -> Path:
    return copy_dataset(source, work / "dataset", name)


def train(work: Path, name: str, *extra: str) -> int:
    return main(["train", "--name", name, "--dataset_dir", str(work / "dataset"),
                 "--checkpoint_dir", str(work / "checkpoint"), *FAST, *extra])


def state_of(work: Path, name: str) -> dict:
    return json.loads(dataset_layout(work / "dataset", name).state_file.read_text())


def spawn(work: Path, name: str, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(REPO / "scripts" / "train_328.py"), "--name", name,
           "--dataset_dir", str(work / "dataset"), "--checkpoint_dir", str(work / "checkpoint"), *FAST, *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_after_first_epoch(proc: subprocess.Popen, state_file: Path, section: str, timeout: float = 150) -> list[dict]:
    """Poll the state file (it must parse every time) until an epoch is recorded, then SIGKILL."""
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        if state_file.exists():
            data = json.loads(state_file.read_text())  # never half-written
            seen.append(data)
            if int((data.get(section) or {}).get("epochs", 0)) >= 1:
                break
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail("no epoch finished in time")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return seen


def saved_epoch(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


# ---------------------------------------------------------------- SyncNet


def test_syncnet_writes_checkpoints_and_state_then_skips(source, work, capsys) -> None:
    person(source, work, "ann")
    assert train(work, "ann", "--train_syncnet", "--epochs", "2", "--keep_checkpoints", "1") == 0
    run_dir = checkpoint_layout(work / "checkpoint", "ann").syncnet_dir
    assert sorted(p.name for p in run_dir.glob("*.pth")) == ["2.pth", "checkpoint_best.pth", "checkpoint_latest.pth"]
    assert (run_dir / "config.json").is_file() and list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    ckpt = torch.load(run_dir / "checkpoint_latest.pth", map_location="cpu", weights_only=True)
    assert {"kind", "model", "optimizer", "scaler", "epoch", "asr", "config", "metrics", "rng"} <= set(ckpt)
    assert ckpt["kind"] == "syncnet" and ckpt["epoch"] == 2 and ckpt["asr"] == "mel"
    assert ckpt["config"]["width"] == "tiny"
    for key in ("train_loss", "val_loss", "val_acc", "offset_acc"):
        assert np.isfinite(ckpt["metrics"][key])
    assert 0.0 <= ckpt["metrics"]["offset_acc"] <= 1.0
    sec = state_of(work, "ann")["syncnet_training"]
    assert sec["completed"] is True and sec["epochs"] == 2 and sec["asr"] == "mel"
    assert Path(sec["checkpoint"]) == run_dir / "checkpoint_best.pth"
    assert "offset_acc" in sec["best_metrics"]

    # the offset diagnostic reads the same score table as the held-out figures: its label-at-0 line is
    # the checkpoint's own offset accuracy within ±1 frame
    from benchmarks.syncnet_offsets import main as offsets_main

    best = torch.load(run_dir / "checkpoint_best.pth", map_location="cpu", weights_only=True)["metrics"]
    capsys.readouterr()
    assert offsets_main(["--checkpoint", str(run_dir / "checkpoint_best.pth"), "--name", "ann",
                         "--dataset_dir", str(work / "dataset")]) == 0
    lines = capsys.readouterr().out.splitlines()
    line = next(x for x in lines if x.strip().startswith("+0:"))
    assert float(line.split()[1]) == pytest.approx(best.get("offset_acc_1_speech", best["offset_acc_1"]), abs=5e-4)
    # and the same balanced pairs: its accuracy at logit 0 is the checkpoint's binary accuracy
    line = next(x for x in lines if x.startswith("balanced pairs"))
    acc0 = float(line.split("accuracy ")[1].split()[0])
    assert acc0 == pytest.approx(best.get("val_acc_speech", best["val_acc"]), abs=5e-4)

    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    capsys.readouterr()
    assert train(work, "ann", "--train_syncnet", "--epochs", "2") == 0
    assert "already trained" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


def test_syncnet_killed_mid_run_resumes_at_the_saved_epoch(source, work, capsys) -> None:
    person(source, work, "bob")
    layout = dataset_layout(work / "dataset", "bob")
    run_dir = checkpoint_layout(work / "checkpoint", "bob").syncnet_dir
    proc = spawn(work, "bob", "--train_syncnet", "--epochs", "5")
    kill_after_first_epoch(proc, layout.state_file, "syncnet_training")
    assert not state_of(work, "bob")["syncnet_training"]["completed"]
    k = saved_epoch(run_dir / "checkpoint_latest.pth")
    assert 1 <= k < 5
    capsys.readouterr()
    assert train(work, "bob", "--train_syncnet", "--epochs", "5") == 0
    out = capsys.readouterr().out
    assert f"resuming SyncNet of bob from epoch {k}" in out
    assert f"SyncNet epoch {k}/5" not in out and f"SyncNet epoch {k + 1}/5" in out
    sec = state_of(work, "bob")["syncnet_training"]
    assert sec["completed"] is True and sec["epochs"] == 5
    assert saved_epoch(run_dir / "checkpoint_latest.pth") == 5


def test_syncnet_reuse_across_persons_and_mismatch_errors(source, work, capsys, monkeypatch) -> None:
    person(source, work, "cat")
    person(source, work, "dan")
    assert train(work, "cat", "--train_syncnet", "--epochs", "1") == 0
    cat_best = checkpoint_layout(work / "checkpoint", "cat").syncnet_dir / "checkpoint_best.pth"

    # dan reuses cat's SyncNet: the step is satisfied, nothing is trained for dan
    assert train(work, "dan", "--train_syncnet", "--syncnet_checkpoint_path", str(cat_best)) == 0
    sec = state_of(work, "dan")["syncnet_training"]
    assert sec["completed"] is True and Path(sec["reused_from"]) == cat_best.resolve()
    # its figures are measured on dan's own held-out tail (cat's are kept beside them)
    assert "offset_acc" in sec["best_metrics"] and sec["source_metrics"]
    assert "on dan's held-out tail it reaches a held-out offset accuracy" in capsys.readouterr().out
    assert Path(sec["checkpoint"]) == cat_best.resolve() and sec["asr"] == "mel"
    assert not checkpoint_layout(work / "checkpoint", "dan").syncnet_dir.exists()
    capsys.readouterr()
    assert train(work, "dan", "--train_syncnet", "--epochs", "3") == 0  # reused counts as done
    # the same reuse again (a rerun of the command) is not measured a second time
    import synctalk.training.syncnet as syncnet_module

    def measured_again(*a, **k):
        raise AssertionError("the reused SyncNet was evaluated again")

    with monkeypatch.context() as m:
        m.setattr(syncnet_module, "evaluate_syncnet", measured_again)
        assert train(work, "dan", "--train_syncnet", "--syncnet_checkpoint_path", str(cat_best)) == 0
    assert state_of(work, "dan")["syncnet_training"]["best_metrics"] == sec["best_metrics"]
    assert "already trained" in capsys.readouterr().out
    # named for the UNet, a reused critic is used; a warning when it fails the gate on dan's own tail
    from synctalk.training.unet import syncnet_gate

    assert train(work, "dan", "--epochs", "1", "--perceptual", "none", "--syncnet_checkpoint_path", str(cat_best)) == 0
    out = capsys.readouterr().out
    passes, reading = syncnet_gate(state_of(work, "dan")["syncnet_training"]["best_metrics"])
    assert "L1 + sync" in out and ("may teach the UNet little" in out) is (not passes) and reading in out

    # another audio model: clear error before any training
    eve = person(source, work, "eve")
    np.save(eve / "aud_ave.npy", np.random.default_rng(0).standard_normal((N_FRAMES, 512)).astype(np.float32))
    capsys.readouterr()
    assert train(work, "eve", "--train_syncnet", "--asr", "ave", "--syncnet_checkpoint_path", str(cat_best)) == 1
    err = capsys.readouterr().err
    assert "'mel'" in err and "'ave'" in err
    assert "syncnet_training" not in state_of(work, "eve")

    # a file that is not a SyncNet checkpoint
    bogus = work / "bogus.pth"
    torch.save({"weight": torch.zeros(3)}, bogus)
    assert train(work, "eve", "--train_syncnet", "--syncnet_checkpoint_path", str(bogus)) == 1
    assert "not a syncnet checkpoint" in capsys.readouterr().err
    not_torch = work / "notes.pth"
    not_torch.write_text("hello")
    assert train(work, "eve", "--train_syncnet", "--syncnet_checkpoint_path", str(not_torch)) == 1
    assert "not a syncnet checkpoint" in capsys.readouterr().err

    # resuming a SyncNet with another --asr is refused too
    assert train(work, "cat", "--train_syncnet", "--epochs", "2", "--asr", "ave") == 1


# ---------------------------------------------------------------- UNet


def test_unet_trains_continues_previews_and_skips(source, work, capsys) -> None:
    person(source, work, "fay")
    assert train(work, "fay", "--train_syncnet", "--epochs", "1") == 0
    capsys.readouterr()
    # a SyncNet at chance level (1/31): by default its sync loss is left out, with a warning
    # (a one-epoch critic on two held-out frames can score anything, so the record is set here)
    state = TrainingState(dataset_layout(work / "dataset", "fay").state_file)
    state.update("syncnet_training", best_metrics={"offset_acc": 0.03})
    assert train(work, "fay", "--epochs", "2", "--perceptual", "none", "--see_res") == 0
    out = capsys.readouterr().out
    assert "without the sync loss" in out and "L1 + sync" not in out
    run_dir = checkpoint_layout(work / "checkpoint", "fay").unet_dir
    names = {p.name for p in run_dir.iterdir()}
    assert {"1.pth", "2.pth", "checkpoint_latest.pth", "checkpoint_best.pth", "previews"} <= names
    previews = sorted((run_dir / "previews").glob("*.png"))
    assert [p.name for p in previews] == ["epoch_0001.png", "epoch_0002.png"]
    import cv2

    img = cv2.imread(str(previews[-1]))
    assert img.shape == (320, 960, 3)
    assert img[100:300, 20:300].max() == 0  # left panel: the masked input
    ckpt = torch.load(run_dir / "checkpoint_latest.pth", map_location="cpu", weights_only=True)
    assert ckpt["kind"] == "unet" and ckpt["epoch"] == 2 and ckpt["asr"] == "mel"
    assert ckpt["config"]["width"] == "tiny" and ckpt["config"]["mask"] == [5, 5, 315, 310]
    assert {"model", "optimizer", "scaler", "rng", "metrics"} <= set(ckpt)
    for key in ("l1", "val_l1", "val_psnr"):
        assert np.isfinite(ckpt["metrics"][key])
    sec = state_of(work, "fay")["main_training"]
    assert sec["completed"] is True and sec["epochs"] == 2
    assert [Path(p).name for p in sec["checkpoints"]] == ["1.pth", "2.pth"]

    # more epochs continue from the saved one
    assert train(work, "fay", "--continue_training", "--epochs", "3", "--perceptual", "none") == 0
    out = capsys.readouterr().out
    assert "resuming UNet of fay from epoch 2" in out and "UNet epoch 3/3" in out and "UNet epoch 2/3" not in out
    sec = state_of(work, "fay")["main_training"]
    assert sec["completed"] is True and sec["epochs"] == 3
    assert saved_epoch(run_dir / "3.pth") == 3

    # done: a rerun trains nothing
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.glob("*.pth")}
    assert train(work, "fay", "--epochs", "3", "--perceptual", "none") == 0
    assert "already trained" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.glob("*.pth")} == before

    # another --asr than the run's is an error before training
    np.save(dataset_layout(work / "dataset", "fay").root / "aud_ave.npy",
            np.zeros((N_FRAMES, 512), np.float32))
    assert train(work, "fay", "--continue_training", "--epochs", "4", "--asr", "ave", "--no_syncnet",
                 "--perceptual", "none") == 1
    err = capsys.readouterr().err
    assert "'mel'" in err and "'ave'" in err
    assert state_of(work, "fay")["main_training"]["epochs"] == 3


def test_unet_killed_mid_run_resumes_from_the_last_checkpoint(source, work, capsys) -> None:
    person(source, work, "gus")
    layout = dataset_layout(work / "dataset", "gus")
    run_dir = checkpoint_layout(work / "checkpoint", "gus").unet_dir
    proc = spawn(work, "gus", "--epochs", "4", "--perceptual", "none")
    seen = kill_after_first_epoch(proc, layout.state_file, "main_training")
    assert seen and all(isinstance(d, dict) for d in seen)
    json.loads(layout.state_file.read_text())
    assert not state_of(work, "gus")["main_training"]["completed"]
    k = saved_epoch(run_dir / "checkpoint_latest.pth")
    assert 1 <= k < 4
    capsys.readouterr()
    assert train(work, "gus", "--continue_training", "--epochs", "4", "--perceptual", "none") == 0
    out = capsys.readouterr().out
    assert f"resuming UNet of gus from epoch {k}" in out and f"UNet epoch {k + 1}/4" in out
    sec = state_of(work, "gus")["main_training"]
    assert sec["completed"] is True and sec["epochs"] == 4
    assert not list(run_dir.glob(".*.tmp"))


def test_unet_without_a_syncnet_when_asked_to_use_one_is_an_error(source, work, capsys) -> None:
    person(source, work, "hal")
    assert train(work, "hal", "--use_syncnet", "--perceptual", "none", "--epochs", "1") == 1
    assert "--train_syncnet" in capsys.readouterr().err
    assert not checkpoint_layout(work / "checkpoint", "hal").unet_dir.exists()


def test_a_continued_unet_keeps_the_options_saved_in_its_config_json(source, work, capsys) -> None:
    from synctalk.training import load_run_config

    person(source, work, "kim")
    where = ["--name", "kim", "--dataset_dir", str(work / "dataset"), "--checkpoint_dir", str(work / "checkpoint"),
             "--device", "cpu", "--no_progress"]
    assert main(["train-unet", *where, "--width", "tiny", "--batchsize", "4", "--val_fraction", "0.125",
                 "--perceptual", "none", "--l1_weight", "2", "--syncnet", "off", "--adversarial_weight", "0",
                 "--epochs", "1"]) == 0
    run_dir = checkpoint_layout(work / "checkpoint", "kim").unet_dir
    cfg = load_run_config(run_dir)
    assert cfg["kind"] == "unet" and cfg["options"]["perceptual"] == "none" and cfg["options"]["l1_weight"] == 2.0
    assert cfg["resolved"]["batch_size"] == 4 and cfg["resolved"]["amp"] == "none"
    first = torch.load(run_dir / "checkpoint_latest.pth", map_location="cpu", weights_only=True)
    assert first["run_config"] == cfg
    capsys.readouterr()
    # nothing but "one more epoch": width, batch, held-out tail, losses and critic come from config.json
    assert main(["train-unet", *where, "--continue_training", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "resuming UNet of kim from epoch 1" in out and "width tiny" in out and "batch 4," in out
    ckpt = torch.load(run_dir / "checkpoint_latest.pth", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["config"]["perceptual"] == "none" and ckpt["config"]["sync_weight"] == 0.0
    assert ckpt["config"]["adversarial_weight"] == 0.0  # no critic on the resume either
    m = ckpt["metrics"]
    assert abs(m["train_loss"] - 2 * m["l1"]) < 1e-6 and "perceptual" not in m  # --l1_weight 2 kept
    assert load_run_config(run_dir)["options"]["epochs"] == 2
    # what fixes the network cannot change on a resume
    assert main(["train-unet", *where, "--continue_training", "--epochs", "3", "--width", "mobile"]) == 1
    assert "--width" in capsys.readouterr().err
    assert torch.load(run_dir / "checkpoint_latest.pth", map_location="cpu", weights_only=True)["epoch"] == 2


def test_sigint_mid_epoch_saves_a_step_checkpoint_and_resumes_exactly(source, work, capsys) -> None:
    """Ctrl-C in the middle of an epoch keeps its steps: the resumed run ends with the weights of a run
    that was never stopped."""
    for name in ("lea", "ref"):
        person(source, work, name)
    flags = ["--train_syncnet", "--epochs", "1", "--syncnet_pairs_per_epoch", "240", "--log_every", "1"]
    proc = spawn(work, "lea", *flags)
    lines = []
    for line in proc.stdout:  # the start line comes once the data is loaded, right before the first step
        lines.append(line)
        if line.startswith("SyncNet lea:"):
            break
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 130, "".join(lines) + rest
    assert "SIGINT: saved the model after step" in rest
    run_dir = checkpoint_layout(work / "checkpoint", "lea").syncnet_dir
    ckpt = torch.load(run_dir / "checkpoint_latest.pth", map_location="cpu", weights_only=True)
    done = ckpt["step"]["done_steps"]
    assert ckpt["epoch"] == 0 and ckpt["step"]["epoch"] == 1 and 0 < done < 60 and ckpt["optimizer"]
    assert state_of(work, "lea")["syncnet_training"]["step"]["done_steps"] == done
    capsys.readouterr()
    assert train(work, "lea", *flags) == 0
    out = capsys.readouterr().out
    assert f"continuing epoch 1 after its step {done}" in out and "SyncNet epoch 1/1" in out
    assert train(work, "ref", *flags) == 0
    got, want = (torch.load(checkpoint_layout(work / "checkpoint", n).syncnet_dir / "checkpoint_latest.pth",
                            map_location="cpu", weights_only=True) for n in ("lea", "ref"))
    for key, value in want["model"].items():
        torch.testing.assert_close(got["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert got["metrics"]["train_loss"] == pytest.approx(want["metrics"]["train_loss"], rel=1e-4)
    assert "step" not in got and state_of(work, "lea")["syncnet_training"]["step"] is None


def test_a_truncated_latest_checkpoint_falls_back_to_the_newest_intact_epoch_file(source, work, capsys) -> None:
    person(source, work, "max")
    assert train(work, "max", "--train_syncnet", "--epochs", "2") == 0
    run_dir = checkpoint_layout(work / "checkpoint", "max").syncnet_dir
    latest = run_dir / "checkpoint_latest.pth"
    full, slim = latest.stat().st_size, (run_dir / "2.pth").stat().st_size
    two = torch.load(run_dir / "2.pth", map_location="cpu", weights_only=True)
    assert "optimizer" not in two and "rng" not in two and slim < full  # only the resume point holds the optimizer
    assert "optimizer" not in torch.load(run_dir / "checkpoint_best.pth", map_location="cpu", weights_only=True)
    latest.write_bytes(latest.read_bytes()[: full // 3])  # a disk that filled up mid-write of an older version
    capsys.readouterr()
    assert train(work, "max", "--train_syncnet", "--epochs", "3") == 0
    out = capsys.readouterr().out
    assert "warning:" in out and "checkpoint_latest.pth" in out and "2.pth instead" in out
    assert "resuming SyncNet of max from epoch 2" in out and "SyncNet epoch 3/3" in out
    sec = state_of(work, "max")["syncnet_training"]
    assert sec["epochs"] == 3 and sec["completed"] and Path(sec["latest"]).is_absolute()
    assert all(Path(p).is_absolute() for p in sec["checkpoints"])


def test_resumed_optimizer_moments_take_the_parameters_layout() -> None:
    from synctalk.training import load_optimizer_state

    def step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        model(torch.rand(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)).mean().backward()
        opt.step()

    a = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    opt_a = torch.optim.Adam(a.parameters())
    step(a, opt_a)
    assert opt_a.state[a.weight]["exp_avg"].stride() == a.weight.stride() != torch.empty(4, 3, 3, 3).stride()
    b = torch.nn.Conv2d(3, 4, 3)  # resumed without --channels_last
    opt_b = torch.optim.Adam(b.parameters())
    load_optimizer_state(opt_b, opt_a.state_dict())
    for p in b.parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            assert opt_b.state[p][key].stride() == p.stride()
    torch.testing.assert_close(opt_b.state[b.weight]["exp_avg"], opt_a.state[a.weight]["exp_avg"])


@pytest.mark.parametrize("name, offset_acc, flags", [("gus", 0.03, ["--use_syncnet"]), ("ida", 0.6, [])],
                         ids=["weak-when-asked", "good-by-default"])
def test_unet_uses_the_syncnet_when_it_is_good_or_asked_for(source, work, capsys, name, offset_acc, flags) -> None:
    person(source, work, name)
    assert train(work, name, "--train_syncnet", "--epochs", "1") == 0
    TrainingState(dataset_layout(work / "dataset", name).state_file).update(
        "syncnet_training", best_metrics={"offset_acc": offset_acc})
    capsys.readouterr()
    assert train(work, name, "--epochs", "1", "--perceptual", "none", *flags) == 0
    out = capsys.readouterr().out
    assert "L1 + sync" in out and "without the sync loss" not in out
    ckpt = torch.load(checkpoint_layout(work / "checkpoint", name).unet_dir / "checkpoint_latest.pth",
                      map_location="cpu", weights_only=True)
    assert "sync" in ckpt["metrics"]


def test_the_sync_loss_joins_at_its_start_epoch_and_the_best_epoch_waits_for_it(source, work, capsys) -> None:
    person(source, work, "sal")
    assert train(work, "sal", "--train_syncnet", "--epochs", "1") == 0
    TrainingState(dataset_layout(work / "dataset", "sal").state_file).update(
        "syncnet_training", best_metrics={"offset_acc_1_speech": 0.6})
    capsys.readouterr()
    assert train(work, "sal", "--epochs", "2", "--perceptual", "none", "--sync_start_epoch", "2",
                 "--sync_mode", "relative") == 0
    out = capsys.readouterr().out
    assert "sync ×0.03 (relative) from epoch 2" in out
    unet_dir = checkpoint_layout(work / "checkpoint", "sal").unet_dir
    first, second = (torch.load(unet_dir / f"{e}.pth", map_location="cpu", weights_only=True) for e in (1, 2))
    assert "sync" not in first["metrics"] and "sync" in second["metrics"]
    assert second["config"]["sync_start_epoch"] == 2 and second["config"]["sync_mode"] == "relative"
    best = torch.load(unet_dir / "checkpoint_best.pth", map_location="cpu", weights_only=True)
    assert best["epoch"] == 2  # the epoch without the sync loss does not stay the rendered one

    # what the critic asks of this UNet (benchmarks/syncnet_offsets.py --unet): BCEs and their relative gap
    from benchmarks.syncnet_offsets import main as offsets_main

    critic = state_of(work, "sal")["syncnet_training"]["checkpoint"]
    assert offsets_main(["--checkpoint", critic, "--name", "sal", "--dataset_dir", str(work / "dataset"),
                         "--unet", str(unet_dir / "checkpoint_best.pth")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("critic on the UNet's mouths, all"))
    words = line.replace(";", "").replace(",", "").split()
    g, r = float(words[words.index("generated") + 1]), float(words[words.index("real") + 1])
    share, gap = float(words[words.index("sync") + 1]), float(words[-1])
    assert g > 0 and r > 0 and 0.0 <= share <= 1.0
    assert max(0.0, g - r) - 1e-4 <= gap <= g + 1e-4  # mean of max(0, g-r): at least the gap of the means, at most g


# ---------------------------------------------------------------- compiled steps and CUDA graphs


def test_compiled_epochs_keep_one_batch_shape() -> None:
    from synctalk.training import batches

    def sizes(*a, **k):
        return [s.stop - s.start for s in batches(*a, **k)]

    assert sizes(10, 4) == [4, 4, 2] and sizes(9, 4) == [4, 4]  # a single left-over frame never trains alone
    assert sizes(10, 4, drop_last=True) == [4, 4]
    assert sizes(3, 4, drop_last=True) == [3]  # fewer frames than a batch still train


def test_cuda_graphs_compile_mode_and_step_marks(monkeypatch) -> None:
    from types import SimpleNamespace

    from synctalk.training import make_scaler, maybe_compile, use_graphs
    from synctalk.training.unet import UNetLosses, unet_step

    calls: list[dict] = []
    monkeypatch.setattr(torch, "compile", lambda m, **k: calls.append(k) or m)
    net = torch.nn.Conv2d(3, 3, 1)
    assert maybe_compile(net, False, graphs=True) is net and not calls
    maybe_compile(net, True)
    maybe_compile(net, True, graphs=True)
    assert calls == [{}, {"mode": "reduce-overhead", "dynamic": False}]

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_graphs(True, cuda)
    assert not use_graphs(True, cpu)  # graphs are CUDA's; the CPU just compiles
    assert not use_graphs(False, cuda)

    marks: list[int] = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))

    class Gen(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(6, 3, 1)

        def forward(self, img6, audio):
            return torch.sigmoid(self.conv(img6))

    model = Gen()
    before = model.conv.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    batch = SimpleNamespace(img6=torch.rand(2, 6, 8, 8), audio=torch.zeros(2, 4), target=torch.rand(2, 3, 8, 8))
    scaler = make_scaler(cpu, "none")
    unet_step(model, opt, scaler, batch, UNetLosses(1.0), cpu, "none")
    assert marks == []
    parts = unet_step(model, opt, scaler, batch, UNetLosses(1.0), cpu, "none", graphs=True)
    assert marks == [1] and parts.shape == (4,) and not torch.equal(model.conv.weight, before)


def test_cuda_graphs_on_several_gpus_is_a_clear_error(work, capsys) -> None:
    assert main(["train", "--name", "nobody", "--dataset_dir", str(work / "dataset"), "--gpus", "2",
                 "--cuda_graphs"]) == 1
    assert "--cuda_graphs trains on one GPU" in capsys.readouterr().err


def test_the_cosine_schedule_runs_from_lr_to_a_tenth_and_is_a_function_of_the_epoch() -> None:
    from synctalk.errors import SyncTalkError
    from synctalk.training.loop import LR_FLOOR, epoch_lr

    lrs = [epoch_lr(1e-3, "cosine", e, 10) for e in range(1, 11)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(LR_FLOOR * 1e-3)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert epoch_lr(1e-3, "constant", 7, 10) == 1e-3 and epoch_lr(1e-3, "cosine", 1, 1) == 1e-3
    with pytest.raises(SyncTalkError):
        epoch_lr(1e-3, "steps", 2, 10)


def test_the_compile_cache_is_kept_in_the_users_cache_unless_one_is_set(tmp_path, monkeypatch) -> None:
    from synctalk.training.runtime import keep_compile_cache

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert keep_compile_cache() == tmp_path / "cache" / "synctalk" / "compile"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "synctalk" / "compile")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert keep_compile_cache() == tmp_path / "mine"


def test_status_says_how_well_the_critic_finds_the_offset_and_the_gate_reads_the_same_figure() -> None:
    from synctalk.status import _critic_detail
    from synctalk.training.unet import syncnet_gate

    assert "43% of the time" in _critic_detail({"best_metrics": {"offset_acc_1_speech": 0.428, "offset_acc": 0.14}})
    assert _critic_detail({"best_metrics": {"offset_acc_1_speech": 0.352, "offset_acc_1_speech_run5": 0.612}}) == (
        ", finds the offset within ±1 frame at speech 35% of the time (61% over runs of 5 frames)")
    assert _critic_detail({"best_metrics": {"offset_acc": 0.25}}) == ", offset accuracy 25%"
    assert _critic_detail({}) == ""
    assert syncnet_gate({"offset_acc_1_speech": 0.428, "offset_acc": 0.9}) == (
        False, "a held-out offset accuracy (±1 frame, at speech) of 0.428 (the gate: 0.5)")
    assert syncnet_gate({"offset_acc": 0.25})[0] and not syncnet_gate({})[0]


class _EpochTask:
    """The part of a training Task that train_epoch drives, for epochs of fixed batches: `steps` batches
    of 4 samples, each step returning `parts`."""
    what, device, compile_pending = "UNet", torch.device("cpu"), False

    def __init__(self, terms: tuple[str, ...], parts: list[float], steps: int) -> None:
        from synctalk.training.runtime import Distributed

        self.terms, self.parts, self.total_steps, self.dist = terms, parts, steps, Distributed()
        self.generator = torch.Generator().manual_seed(0)
        self.steps = 0

    def train_mode(self) -> None:
        pass

    def active_terms(self):
        return self.terms

    def epoch_batches(self, epoch, start=0):
        return 4 * self.total_steps, iter([(None, 4)] * (self.total_steps - start))

    def step(self, batch):
        self.steps += 1
        return torch.tensor(self.parts)


def test_the_compiling_first_step_is_announced_timed_and_kept_out_of_the_bar_rate(capsys, monkeypatch) -> None:
    from synctalk.training import loop

    class Compiling(_EpochTask):
        """A task whose first step is slow, as a compiled one is; the rest are instant."""
        compile_pending = True

        def step(self, batch):
            if self.steps == 0:
                time.sleep(0.4)
            return super().step(batch)

    elapsed: list[float] = []
    real = loop.tqdm

    class Bar(real):  # the real bar, shown, and its clock read as it closes
        def __init__(self, *a, **k):
            super().__init__(*a, **{**k, "disable": False})

        def close(self):
            elapsed.append((self.n, self.format_dict["elapsed"]))
            super().close()

    monkeypatch.setattr(loop, "tqdm", Bar)
    task = Compiling(("train_loss",), [0.5], 3)
    out = loop.train_epoch(task, 1, 2, progress=True, log_every=1)
    again = loop.train_epoch(task, 2, 2, progress=True, log_every=1)
    said = capsys.readouterr().out
    assert said.count("compiling the UNet's training step") == 1 and said.count("compiled in") == 1
    assert not task.compile_pending and task.steps == 6
    # the bar's clock started again after the slow step, with its samples still counted
    n, seconds = elapsed[0]
    assert n == 12 and seconds < 0.3
    assert out["train_loss"] == pytest.approx(0.5) and again["train_loss"] == pytest.approx(0.5)
    assert out["seconds"] >= 0.4  # the epoch's own time still includes the compile


def test_a_step_checkpoint_resumes_into_a_run_with_more_loss_terms() -> None:
    """An epoch stopped by a signal, resumed with the adversarial stage turned on: the saved sums are taken
    by name and the new terms start from zero (they were a shape error)."""
    from synctalk.training import loop

    task = _EpochTask(("train_loss", "l1", "adv_g"), [1.0, 0.5, 0.25], 2)
    position = {"epoch": 3, "done_steps": 1, "rng_epoch": task.generator.get_state(), "terms": ["train_loss", "l1"],
                "sums": [8.0, 4.0], "seen": 4, "seconds": 1.0}
    out = loop.train_epoch(task, 3, 3, progress=False, position=position)
    assert out["train_loss"] == pytest.approx((8.0 + 4.0) / 8) and out["l1"] == pytest.approx((4.0 + 2.0) / 8)
    assert out["adv_g"] == pytest.approx(1.0 / 8)


def test_the_resume_point_is_written_after_the_first_epoch_then_once_a_minute_and_after_the_last(
        source, work, capsys, monkeypatch) -> None:
    """checkpoint_latest.pth (160-250 MB on a real run) is not rewritten after every 1-2 s GPU epoch: with
    less than RESUME_EVERY_S between epochs it is written after the first and the last; the state and
    `synctalk status` say where --continue_training would pick up meanwhile."""
    from synctalk import status
    from synctalk.training import checkpoint, loop

    person(source, work, "eve")
    monkeypatch.setattr(loop, "RESUME_EVERY_S", 3600.0)
    layout = dataset_layout(work / "dataset", "eve")
    seen = []
    real = checkpoint.write_epoch

    def spy(run_dir, payload, **kw):
        before = saved_epoch(checkpoint.latest_path(run_dir)) if checkpoint.latest_path(run_dir).exists() else None
        kept = real(run_dir, payload, **kw)
        seen.append((int(payload["epoch"]), before, saved_epoch(checkpoint.latest_path(run_dir))))
        return kept

    monkeypatch.setattr(loop, "write_epoch", spy)
    assert train(work, "eve", "--train_syncnet", "--epochs", "3") == 0
    # (epoch, the epoch checkpoint_latest.pth held before it, and after it)
    assert seen == [(1, None, 1), (2, 1, 1), (3, 1, 3)]
    sec = TrainingState(layout.state_file).section("syncnet_training")
    assert sec["completed"] and sec["epochs"] == 3 and sec["latest_epoch"] == 3

    def syncnet_row() -> str:
        return {r[0]: r[2] for r in status.status_rows(work / "dataset", work / "checkpoint", "eve")[0]}["syncnet"]

    assert "3 epochs" in syncnet_row() and "resumes" not in syncnet_row()
    # a state left by a kill after epoch 2 points --continue_training at epoch 1, and status says so
    TrainingState(layout.state_file).update("syncnet_training", completed=False, epochs=2, latest_epoch=1)
    assert "2 epochs" in syncnet_row() and "resumes from epoch 1" in syncnet_row()
