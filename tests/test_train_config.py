"""The training commands' flags, their config dataclasses, config.json, and the fast defaults (no training)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from synctalk.cli import main
from synctalk.errors import SyncTalkError


def help_of(command: str) -> str:
    r = subprocess.run([sys.executable, "-m", "synctalk.cli", command, "--help"], cwd=REPO, capture_output=True,
                       text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_each_command_lists_only_its_own_flags() -> None:
    syncnet, unet = help_of("train-syncnet"), help_of("train-unet")
    for flag in ("--pairs_per_epoch", "--hard_negatives", "--face_frames", "--audio_context", "--augment", "--reuse"):
        assert flag in syncnet and flag not in unet
    for flag in ("--syncnet ", "--perceptual", "--see_res", "--mask", "--save_dir", "--sync_weight"):
        assert flag in unet and flag not in syncnet
    for text in (syncnet, unet):  # the shared run options, with help from the field docs
        assert "--continue_training" in text and "--keep_checkpoints" in text and "--av_offset" in text
        assert "--gpu " not in text and "--train_syncnet" not in text and "--use_syncnet" not in text
    assert "the critic of the sync loss" in unet


def test_a_flag_of_the_other_command_is_an_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train-unet", "--name", "ann", "--pairs_per_epoch", "5"])
    assert exc.value.code == 2 and "--pairs_per_epoch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train-syncnet", "--name", "ann", "--perceptual", "none"])
    with pytest.raises(SystemExit):  # no abbreviations: --sync is not --sync_weight nor --syncnet
        main(["train-unet", "--name", "ann", "--sync", "3"])


@pytest.mark.parametrize("argv, says", [
    (["train-unet", "--sync_weight", "-0.03"], "--sync_weight must be at least 0, got -0.03"),
    (["train-unet", "--feature_matching_weight", "nan"], "--feature_matching_weight must be a finite number"),
    (["train-unet", "--adversarial_weight", "-1"], "--adversarial_weight must be at least 0"),
    (["train-unet", "--sync_start_epoch", "0"], "--sync_start_epoch must be at least 1, got 0"),
    (["train-unet", "--lr", "0"], "--lr must be above 0, got 0"),
    (["train-syncnet", "--val_fraction", "1.5"], "--val_fraction must be at most 0.9, got 1.5"),
    (["train-syncnet", "--hard_negatives", "2"], "--hard_negatives must be at most 1, got 2"),
    (["train-syncnet", "--epochs", "0"], "--epochs must be at least 1, got 0"),
])
def test_a_number_out_of_its_range_is_refused_before_anything_starts(tmp_path: Path, capsys, argv, says) -> None:
    code = main([*argv, "--name", "ann", "--dataset_dir", str(tmp_path / "dataset"),
                 "--checkpoint_dir", str(tmp_path / "checkpoint")])
    assert code == 1 and says in capsys.readouterr().err
    assert not (tmp_path / "checkpoint").exists()  # refused before a folder or a lock was made


def test_the_seed_flags_map_onto_the_two_commands() -> None:
    import argparse

    from synctalk.training.commands.legacy import add_arguments, plan

    p = argparse.ArgumentParser()
    add_arguments(p)

    def steps(*argv: str) -> list:
        return plan(vars(p.parse_args(["--name", "ann", *argv])))

    [(cmd, opts)] = steps("--train_syncnet", "--epochs", "3", "--perceptual", "none", "--syncnet_pairs_per_epoch", "0")
    assert cmd == "train-syncnet" and opts["epochs"] == 3 and opts["pairs_per_epoch"] == 0
    assert "perceptual" not in opts  # the UNet's flag is left out of the SyncNet step, as the seed ignored it
    [(cmd, opts)] = steps("--use_syncnet", "--batchsize", "4", "--syncnet_pairs_per_epoch", "0", "--see_res")
    assert cmd == "train-unet" and opts == {"name": "ann", "syncnet": "on", "batch_size": 4, "see_res": True}
    assert steps("--no_syncnet")[0][1]["syncnet"] == "off"
    assert steps("--syncnet_checkpoint", "x.pth")[0][1]["syncnet"] == "x.pth"
    reuse = steps("--syncnet_checkpoint_path", "other.pth")
    assert [c for c, _ in reuse] == ["train-syncnet", "train-unet"]
    assert reuse[0][1]["reuse"] == "other.pth" and reuse[1][1]["syncnet"] == "other.pth"
    with pytest.raises(SyncTalkError, match="contradict"):
        steps("--use_syncnet", "--no_syncnet")
    # a shared option left untyped takes each command's own default, not the other's
    from synctalk.training.config import SyncNetConfig, UNetConfig

    assert "lr_schedule" not in steps()[0][1] and "save_interval" not in steps("--train_syncnet")[0][1]
    assert (SyncNetConfig().lr_schedule, UNetConfig().lr_schedule) == ("constant", "cosine")
    assert (SyncNetConfig().save_interval, UNetConfig().save_interval) == (10, 1)


def test_saved_options_fill_in_what_the_command_line_leaves_out() -> None:
    from synctalk.training.config import UNetConfig, merge_config

    saved = {"perceptual": "none", "epochs": 4, "width": "tiny", "mask": [5, 5, 315, 310], "asr": "mel",
             "restart": True, "unknown_old_key": 1}
    cfg = merge_config(UNetConfig, {"name": "ann", "epochs": 6}, saved)
    assert cfg.perceptual == "none" and cfg.width == "tiny" and cfg.epochs == 6 and cfg.asr == "mel"
    assert cfg.restart is False  # what to do this time comes from this command line only
    # the same frozen value typed again is fine; a different one is one clear error
    assert merge_config(UNetConfig, {"name": "ann", "mask": "5,5,315,310", "width": "tiny"}, saved).width == "tiny"
    with pytest.raises(SyncTalkError, match=r"width 'tiny', but --width 'full'"):
        merge_config(UNetConfig, {"name": "ann", "width": "full"}, saved, source="run/config.json")
    with pytest.raises(SyncTalkError, match="--asr"):
        merge_config(UNetConfig, {"name": "ann", "asr": "ave"}, saved)
    # "auto" typed again means "as the run was": the saved resolved offset stays
    assert merge_config(UNetConfig, {"name": "ann", "av_offset": "auto"}, {"av_offset": 3}).av_offset == 3


def test_load_run_config_reads_the_folder_the_file_or_a_checkpoint(tmp_path: Path) -> None:
    from synctalk.training import load_run_config
    from synctalk.training.checkpoint import save_checkpoint
    from synctalk.training.config import write_run_config

    run = tmp_path / "run"
    assert load_run_config(run) == {}
    cfg = {"kind": "unet", "options": {"perceptual": "none"}, "av_offset": {"frames": 2, "source": "x"}}
    write_run_config(run, cfg)
    assert load_run_config(run) == cfg == load_run_config(run / "config.json")
    save_checkpoint(run / "checkpoint_best.pth", {"kind": "unet", "model": {}, "run_config": cfg})
    assert load_run_config(run / "checkpoint_best.pth") == cfg
    (run / "config.json").write_text("{not json")
    with pytest.raises(SyncTalkError, match="config.json"):
        load_run_config(run)


def test_auto_speed_is_the_fast_path_on_a_gpu_and_the_plain_one_on_a_cpu() -> None:
    from synctalk.training.config import SyncNetConfig, UNetConfig
    from synctalk.training.loop import resolve_speed

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    s = resolve_speed(UNetConfig(), cpu, 1, gpu_batch=32, cpu_batch=8, base_batch=8)
    assert (s.amp, s.channels_last, s.compile, s.cuda_graphs, s.batch_size) == ("none", False, False, False, 8)
    if torch.cuda.is_available():
        s = resolve_speed(UNetConfig(), cuda, 1, gpu_batch=32, cpu_batch=8, base_batch=8)
        assert s.channels_last and s.compile and s.cuda_graphs and s.batch_size == 32
    s = resolve_speed(SyncNetConfig(batch_size=4, channels_last="yes", compile="yes"), cpu, 1, gpu_batch=128,
                      cpu_batch=16, base_batch=16)
    assert s.channels_last and s.compile and not s.cuda_graphs and s.batch_size == 4
    with pytest.raises(SyncTalkError, match="one GPU"):
        resolve_speed(UNetConfig(cuda_graphs="yes"), cpu, 2, gpu_batch=32, cpu_batch=8, base_batch=8)


def test_av_offset_pairs_frame_i_with_the_audio_of_frame_i_minus_n(tmp_path: Path) -> None:
    from synctalk.data import FrameData
    from synctalk.layout import dataset_layout
    from synctalk.state import PREPROCESSING, TrainingState
    from synctalk.training.loop import resolve_av_offset

    n = 40
    crops = torch.zeros(n, 320, 320, 3, dtype=torch.uint8)
    feats = np.repeat(np.arange(n, dtype=np.float32)[:, None, None], 4, axis=1).repeat(80, axis=2)  # row i = i
    plain = FrameData(crops, feats, "mel")
    # a video whose lips move 3 frames after the sound: frame i's mouth was made by the sound of frame i - 3
    shifted = FrameData(crops, feats, "mel", av_offset=3)
    idx = torch.tensor([10, 20, 30])
    torch.testing.assert_close(shifted.audio(idx), plain.audio(idx - 3))
    torch.testing.assert_close(FrameData(crops, feats, "mel", av_offset=-2).audio(idx), plain.audio(idx + 2))
    torch.testing.assert_close(shifted.audio(torch.tensor([0, 1])), plain.audio(torch.tensor([0, 0])))  # clamped

    layout = dataset_layout(tmp_path, "ann")
    layout.root.mkdir(parents=True)
    assert resolve_av_offset("auto", layout) == (0, "none measured")
    TrainingState(layout.state_file).update(PREPROCESSING, av_offset={"frames": 3, "source": "lipcheck"})
    assert resolve_av_offset("auto", layout)[0] == 3 and "lipcheck" in resolve_av_offset("auto", layout)[1]
    assert resolve_av_offset("-1", layout)[0] == -1
    with pytest.raises(SyncTalkError, match="--av_offset"):
        resolve_av_offset("soon", layout)


def test_config_json_is_written_atomically_as_json(tmp_path: Path) -> None:
    from synctalk.training.config import write_run_config

    path = write_run_config(tmp_path / "r", {"options": {"epochs": 2}})
    assert json.loads(path.read_text()) == {"options": {"epochs": 2}} and not list(path.parent.glob(".*tmp*"))


def test_quick_is_a_preset_under_what_was_typed() -> None:
    from synctalk.training.config import SyncNetConfig, UNetConfig, merge_config

    sn = merge_config(SyncNetConfig, {"name": "ann", "quick": True})
    assert (sn.width, sn.epochs, sn.pairs_per_epoch) == ("tiny", 1, 128)
    un = merge_config(UNetConfig, {"name": "ann", "quick": True, "epochs": 5})
    assert (un.width, un.epochs, un.perceptual) == ("tiny", 5, "none")
    assert merge_config(UNetConfig, {"name": "ann"}, {"quick": True}).width == "tiny"  # a resumed quick run stays one
    assert merge_config(UNetConfig, {"name": "ann"}).width is None


def test_epochs_follow_the_video_when_not_given(tmp_path: Path, capsys) -> None:
    """No --epochs: the UNet's follows the training frames (about 170,000 shown, 10..200), the SyncNet's is 50;
    a typed --epochs wins, and a resumed run keeps the number it started with."""
    from synctalk.layout import dataset_layout
    from synctalk.state import PREPROCESSING, TrainingState
    from synctalk.training.commands import resolve_config
    from synctalk.training.config import SyncNetConfig, UNetConfig, write_run_config

    layout = dataset_layout(tmp_path / "dataset", "ann")
    layout.root.mkdir(parents=True)
    TrainingState(layout.state_file).update(PREPROCESSING, frame_count=7451)  # five minutes: 6,706 to train on
    opts = {"name": "ann", "dataset_dir": str(tmp_path / "dataset"), "checkpoint_dir": str(tmp_path / "ck")}
    assert resolve_config(UNetConfig, opts).epochs == 26
    assert "26 (6,706 training frames × 26 = 174,356 frames shown)" in capsys.readouterr().out
    assert resolve_config(SyncNetConfig, opts).epochs == 50
    assert resolve_config(UNetConfig, {**opts, "epochs": 3}).epochs == 3
    TrainingState(layout.state_file).update(PREPROCESSING, frame_count=100)  # four seconds: bounded at 200
    assert resolve_config(UNetConfig, opts).epochs == 200
    cfg = resolve_config(UNetConfig, opts)
    write_run_config(cfg.run_dir(), {"options": {"epochs": 26}})  # the run started when the video was longer
    assert resolve_config(UNetConfig, opts).epochs == 26
    assert resolve_config(UNetConfig, {**opts, "restart": True}).epochs == 200
    assert resolve_config(UNetConfig, {**opts, "name": "nobody"}).epochs == 100  # not preprocessed yet


def test_perceptual_auto_says_why_it_trains_without_vgg19(tmp_path: Path, capsys) -> None:
    from synctalk.training.runtime import Distributed
    from synctalk.training.unet import choose_perceptual
    from synctalk.weights import find_model_file

    if find_model_file("vgg19", tmp_path) is not None:
        pytest.skip("VGG19 weights are installed on this machine")
    assert choose_perceptual("auto", str(tmp_path), Distributed()) == ("none", None)
    out = capsys.readouterr().out
    assert "perceptual loss: none" in out and "synctalk models download vgg19" in out
    with pytest.raises(SyncTalkError, match="vgg19"):
        choose_perceptual("vgg19", str(tmp_path), Distributed())
    assert choose_perceptual("none", None, Distributed()) == ("none", None)


def test_a_drifting_av_offset_gives_each_frame_its_own_audio_row(tmp_path: Path) -> None:
    from synctalk.data import FrameData
    from synctalk.layout import dataset_layout
    from synctalk.state import PREPROCESSING, TrainingState
    from synctalk.training.loop import resolve_av_offset

    n = 3000  # two minutes at 25 fps
    crops = torch.zeros(n, 320, 320, 3, dtype=torch.uint8)
    feats = np.repeat(np.arange(n, dtype=np.float32)[:, None, None], 4, axis=1).repeat(80, axis=2)
    plain = FrameData(crops[:10], feats[:10], "mel")
    layout = dataset_layout(tmp_path, "ann")
    layout.root.mkdir(parents=True)
    # 1 frame at the start, 2 frames a minute more: 5 at the end of the second minute
    TrainingState(layout.state_file).update(PREPROCESSING, frame_count=n, av_offset={
        "frames": 3, "source": "lips", "start_frames": 1.0, "drift_per_minute": 2.0})
    per_frame, where = resolve_av_offset("auto", layout)
    assert per_frame.shape == (n,) and per_frame[0] == 1 and per_frame[-1] == 5 and "drifting" in where
    data = FrameData(crops, feats, "mel", av_offset=per_frame)
    assert data.av_offset == 3  # the summary number recorded in config.json
    rows = data.audio(torch.tensor([100, n - 1]))[:, 0, 0, 32]  # the window's centre step holds its row number
    assert rows.tolist() == [100 - 1, n - 1 - 5]
    assert plain.audio(torch.tensor([5]))[0, 0, 0, 32] == 5
    # an explicit number still wins over the stored drift
    assert resolve_av_offset("2", layout)[0] == 2
