"""Data-parallel training on the CPU: 2 gloo processes (torchrun or spawn) of the real loops.

Checks that DistributedDataParallel keeps the ranks' weights equal, that only rank 0 writes
checkpoints, state and previews, and that a run resumes across a change of the process count.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO
from helpers_training import FAST, copy_dataset, free_port, start_cpu_rank
from synctalk.cli import main
from synctalk.layout import checkpoint_layout, dataset_layout

pytestmark = pytest.mark.usefixtures("one_thread")


def common(work: Path, name: str) -> list[str]:
    return ["--name", name, "--dataset_dir", str(work / "dataset"), "--checkpoint_dir", str(work / "checkpoint"),
            *FAST]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                            "TORCHELASTIC_RUN_ID")}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""))
    return env


def run_child(cmd: list[str]) -> str:
    r = subprocess.run(cmd, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return r.stdout


def train_here(work: Path, name: str, *extra: str) -> int:
    return main(["train", *common(work, name), *extra])


def state_of(work: Path, name: str) -> dict:
    return json.loads(dataset_layout(work / "dataset", name).state_file.read_text())


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def files_of(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.iterdir()}


# ---------------------------------------------------------------- the helpers on two spawned ranks


def _rank_main(rank: int, world: int, port: int, out_dir: str) -> None:
    from synctalk.training import make_adam, make_scaler
    from synctalk.training.syncnet import syncnet_step
    from synctalk.training.unet import UNetLosses, unet_step
    from unet_328 import SyncNet, build_unet

    dist, device = start_cpu_rank(rank, world, port)
    try:
        g = torch.Generator().manual_seed(1000 + rank)  # every rank its own samples
        torch.manual_seed(rank)  # and its own initial weights: DDP must start them from rank 0's
        syncnet = SyncNet("mel", "tiny")
        s_model = dist.wrap(syncnet, device)
        s_opt, scaler = make_adam(syncnet.parameters(), 1e-3, device), make_scaler(device, "none")
        for _ in range(2):
            faces = torch.rand(2, 3, 160, 160, generator=g)
            audio = torch.randn(2, *syncnet.audio_shape, generator=g)
            syncnet_step(s_model, s_opt, scaler, faces, audio, torch.tensor([1.0, 0.0]), device, "none")

        unet = build_unet("mel", "tiny")
        u_model = dist.wrap(unet, device)
        u_opt = make_adam(unet.parameters(), 1e-3, device)
        batch = type("B", (), {})()
        for _ in range(2):
            batch.img6 = torch.rand(2, 6, 320, 320, generator=g)
            batch.target = torch.rand(2, 3, 320, 320, generator=g)
            batch.audio = torch.randn(2, *unet.audio_shape, generator=g)
            unet_step(u_model, u_opt, scaler, batch, UNetLosses(), device, "none")

        dist.barrier()
        out = {
            "syncnet": {k: v.detach().clone() for k, v in syncnet.named_parameters()},
            "unet": {k: v.detach().clone() for k, v in unet.named_parameters()},
            "reduced": dist.reduce_metrics({"train_loss": 1.0 + rank, "samples_per_s": 10.0, "seconds": 2.0 + rank}),
            "broadcast": dist.broadcast({"from": rank}),
            "shard": dist.shard(torch.arange(9)).tolist(),
        }
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.stop()


def test_two_ranks_keep_equal_weights_and_share_metrics(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (load(tmp_path / f"rank{k}.pt") for k in (0, 1))
    for net in ("syncnet", "unet"):
        assert r0[net].keys() == r1[net].keys()
        for key in r0[net]:  # the logit scale/bias, used outside forward(), are averaged too
            torch.testing.assert_close(r0[net][key], r1[net][key], rtol=0, atol=0, msg=f"{net}.{key}")
    # different data on each rank, yet equal weights: the gradients were averaged
    assert r0["reduced"] == r1["reduced"] == {"train_loss": 1.5, "samples_per_s": 20.0, "seconds": 3.0}
    assert r0["broadcast"] == r1["broadcast"] == {"from": 0}
    assert r0["shard"] == [0, 1, 2, 3] and r1["shard"] == [4, 5, 6, 7]  # equal shares; the odd one is dropped


# ---------------------------------------------------------------- the real command on two processes


def test_syncnet_on_two_processes_writes_one_set_then_resumes_on_one(source, work, capsys) -> None:
    copy_dataset(source, work / "dataset", "ann")
    run_dir = checkpoint_layout(work / "checkpoint", "ann").syncnet_dir
    # `synctalk train --gpus 2 --device cpu` starts torchrun itself
    out = run_child([sys.executable, "-m", "synctalk.cli", "train", *common(work, "ann"), "--train_syncnet",
                     "--epochs", "2", "--gpus", "2"])
    assert "torch.distributed.run" in out and "--nproc_per_node 2" in out
    # rank 0 alone logs: each line once
    assert out.count("SyncNet epoch 1/2") == 1 and out.count("SyncNet epoch 2/2") == 1
    assert "batch 4 × 2 processes" in out
    # (the SyncNet's epoch files come every 10th epoch and after the last: here only 2.pth)
    assert files_of(run_dir) == {"2.pth", "checkpoint_best.pth", "checkpoint_latest.pth", "config.json",
                                 "tensorboard"}
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 2
    ckpt = load(run_dir / "checkpoint_latest.pth")
    assert ckpt["epoch"] == 2 and ckpt["config"]["world_size"] == 2 and ckpt["config"]["global_batch_size"] == 8
    assert not any(k.startswith("module.") for k in ckpt["model"])  # the unwrapped network
    sec = state_of(work, "ann")["syncnet_training"]
    assert sec["completed"] is True and sec["epochs"] == 2
    assert Path(sec["checkpoint"]) == run_dir / "checkpoint_best.pth"

    # one process continues the two-process run
    capsys.readouterr()
    assert train_here(work, "ann", "--train_syncnet", "--epochs", "3") == 0
    out = capsys.readouterr().out
    assert "resuming SyncNet of ann from epoch 2" in out and "SyncNet epoch 3/3" in out
    assert "SyncNet epoch 2/3" not in out
    sec = state_of(work, "ann")["syncnet_training"]
    assert sec["completed"] is True and sec["epochs"] == 3
    assert load(run_dir / "checkpoint_latest.pth")["config"]["world_size"] == 1


def test_unet_resumes_from_one_to_two_processes_and_back(source, work, capsys) -> None:
    copy_dataset(source, work / "dataset", "bea")
    run_dir = checkpoint_layout(work / "checkpoint", "bea").unet_dir
    unet = ["--no_syncnet", "--perceptual", "none"]
    assert train_here(work, "bea", *unet, "--epochs", "1") == 0
    one = load(run_dir / "checkpoint_latest.pth")

    # torchrun by hand, as a user starts a multi-node run, through the seed's script name
    out = run_child([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                     "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                     str(REPO / "scripts" / "train_328.py"), *common(work, "bea"), *unet,
                     "--continue_training", "--epochs", "2", "--see_res"])
    assert out.count("resuming UNet of bea from epoch 1") == 1
    assert out.count("UNet epoch 2/2") == 1 and "UNet epoch 1/2" not in out
    assert files_of(run_dir) == {"1.pth", "2.pth", "checkpoint_best.pth", "checkpoint_latest.pth", "previews",
                                 "config.json", "tensorboard"}
    assert [p.name for p in (run_dir / "previews").iterdir()] == ["epoch_0002.png"]
    two = load(run_dir / "checkpoint_latest.pth")
    assert two["epoch"] == 2 and two["config"]["world_size"] == 2
    assert two["model"].keys() == one["model"].keys()
    assert any(not torch.equal(two["model"][k], one["model"][k]) for k in one["model"])  # it trained
    sec = state_of(work, "bea")["main_training"]
    assert sec["completed"] is True and sec["epochs"] == 2
    assert [Path(p).name for p in sec["checkpoints"]] == ["1.pth", "2.pth"]

    capsys.readouterr()
    assert train_here(work, "bea", *unet, "--continue_training", "--epochs", "3") == 0
    out = capsys.readouterr().out
    assert "resuming UNet of bea from epoch 2" in out and "UNet epoch 3/3" in out
    sec = state_of(work, "bea")["main_training"]
    assert sec["completed"] is True and sec["epochs"] == 3
    assert not list(run_dir.glob(".*.tmp*"))


# ---------------------------------------------------------------- launching


def test_gpus_flag_forwards_the_command_line_to_torchrun() -> None:
    import argparse

    from synctalk.training.commands import torchrun_command
    from synctalk.training.commands.legacy import add_arguments as seed_arguments
    from synctalk.training.commands.legacy import plan
    from synctalk.training.commands.syncnet import add_arguments
    from synctalk.training.config import SyncNetConfig, explicit_options

    p = argparse.ArgumentParser()
    seed_arguments(p)
    args = p.parse_args(["--name", "ann", "--gpus", "4", "--train_syncnet", "--lr", "0.0005", "--epochs", "7",
                         "--batchsize", "32", "--lr_scaling", "sqrt", "--sync_bn", "--syncnet_face_frames", "3"])
    [(command, options)] = plan(vars(args))
    assert command == "train-syncnet" and options["face_frames"] == 3
    cmd = torchrun_command(command, SyncNetConfig, options, 4)
    assert cmd[:7] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "-m"]
    rest = cmd[7:]
    assert rest[:2] == ["synctalk.cli", "train-syncnet"] and "--gpus" not in rest
    # the forwarded flags parse back to the same options
    q = argparse.ArgumentParser()
    add_arguments(q)
    again = explicit_options(q.parse_args(rest[2:]), SyncNetConfig)
    assert again == {k: v for k, v in options.items() if k != "gpus"}


def test_gpus_without_a_gpu_is_a_clear_error(work, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["train", "--name", "nobody", "--dataset_dir", str(work / "dataset"), "--gpus", "2"]) == 1
    assert "--device cpu" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_training_328_sh_passes_a_gpu_list_to_both_training_steps(tmp_path: Path) -> None:
    fake = tmp_path / "fake_python.sh"  # records each step's command line instead of running it
    log = tmp_path / "calls.log"
    fake.write_text(f'#!/usr/bin/env bash\necho "CUDA=$CUDA_VISIBLE_DEVICES NVLS=$NCCL_NVLS_ENABLE $*" >> "{log}"\n')
    fake.chmod(0o755)
    video = tmp_path / "dataset" / "ann" / "ann.mp4"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if k != "NCCL_NVLS_ENABLE"}
    env["PYTHON"] = str(fake)
    r = subprocess.run(["bash", str(REPO / "training_328.sh"), "ann", "0,1"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 3 and all(c.startswith("CUDA=0,1 NVLS=0 ") for c in calls)
    assert "--gpus" not in calls[0]  # preprocessing stays one process
    assert all("--gpus 2" in c for c in calls[1:]) and "--train_syncnet" in calls[1]

    log.unlink()
    r = subprocess.run(["bash", str(REPO / "training_328.sh"), "ann", "1"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not any("--gpus" in c for c in log.read_text().splitlines())
    r = subprocess.run(["bash", str(REPO / "training_328.sh"), "ann", "0,,1"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "GPU_ID" in r.stderr
